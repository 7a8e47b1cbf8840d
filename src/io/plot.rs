//! Figures a researcher keeps, drawn with `plotters`: training curves (one colour per series,
//! train solid and held-out dashed, accuracy and loss side by side, a legend), one sample
//! through the partitioned network (input raster, each partition's spikes, the readout
//! membranes, like the paper's Fig. 2C), the placement of each partition on the chip, and a
//! histogram. PNG or SVG by the file's extension; text through a font embedded in the binary
//! (no system fonts needed); files written atomically. Presentation only.

use crate::error::{Error, Result};
use crate::model::network::{Network, PopulationKind};
use crate::plan::partition::Plan;
use crate::train::EpochRecord;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Colours of series and populations (the "tab10" palette).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let l = |x: u8| (x as f64 + (255.0 - x as f64) * f) as u8;
    RGBColor(l(c.0), l(c.1), l(c.2))
}

static FONT: &[u8] = include_bytes!("../../assets/fonts/Roboto-Regular.ttf");

fn init_font() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the embedded font assets/fonts/Roboto-Regular.ttf is not a valid TTF");
        }
    });
}

/// Something that can be drawn on any plotters backend, at a fixed size.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static;
}

/// Whether a figure can be drawn to `path`: an error unless it ends in `.png` or `.svg`
/// (check it before the work whose figure it is).
pub fn check_figure_path(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("png" | "svg")) {
        return Err(Error::io(
            path,
            std::io::Error::other("a figure is written as .png or .svg (by the file's extension)"),
        ));
    }
    Ok(())
}

/// Draw `fig` to `path`: SVG for `.svg`, PNG otherwise; atomically.
fn save(fig: &impl Figure, path: &Path) -> Result<()> {
    init_font();
    check_figure_path(path)?;
    let fail =
        |e: Box<dyn std::error::Error>| Error::io(path, std::io::Error::other(e.to_string()));
    let (w, h) = fig.size();
    let svg = path
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("svg"));
    let bytes = if svg {
        let mut s = String::new();
        fig.draw(SVGBackend::with_string(&mut s, (w, h)).into_drawing_area())
            .map_err(fail)?;
        s.into_bytes()
    } else {
        let mut buf = vec![0u8; (w * h * 3) as usize];
        fig.draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area())
            .map_err(fail)?;
        let img = image::RgbImage::from_raw(w, h, buf).expect("buffer of the figure's size");
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
        png
    };
    crate::files::write_atomic(path, &bytes)
}

/// Accuracy (left) and loss (right) over epochs, training solid and held-out dashed, one
/// colour per named series (e.g. per emulation mode, like the paper's Fig. 4), with a legend.
pub fn curves(series: &[(&str, &[EpochRecord])], held_out: &str, path: &Path) -> Result<()> {
    save(&Curves { series, held_out }, path)
}

/// One series of [`bands`]: its name and per epoch (epoch, mean, min, max).
pub type Band = (String, Vec<(f64, f64, f64, f64)>);

/// Per series the mean as a line, min–max as a shaded band, one colour per series; `title`
/// says what is drawn.
pub fn bands(series: &[Band], title: &str, path: &Path) -> Result<()> {
    save(&Bands { series, title }, path)
}

struct Bands<'a> {
    series: &'a [Band],
    title: &'a str,
}

impl Figure for Bands<'_> {
    fn size(&self) -> (u32, u32) {
        (800, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let pts = self.series.iter().flat_map(|(_, b)| b.iter());
        let epochs = pts.clone().map(|p| p.0).fold(2.0, f64::max);
        let lo = pts
            .clone()
            .map(|p| p.2)
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        let hi = pts
            .map(|p| p.3)
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            let pad = (hi - lo) * 0.06;
            (lo - pad, hi + pad)
        } else {
            (0.0, 100.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..epochs, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .label_style(("sans-serif", 14))
            .draw()?;
        // Bands first, translucent, so that no band hides another's line.
        for (k, (_, band)) in self.series.iter().enumerate() {
            let mut outline: Vec<(f64, f64)> = band.iter().map(|p| (p.0, p.3)).collect();
            outline.extend(band.iter().rev().map(|p| (p.0, p.2)));
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                colour(k).mix(0.18).filled(),
            )))?;
        }
        for (k, (name, band)) in self.series.iter().enumerate() {
            let c = colour(k);
            chart
                .draw_series(LineSeries::new(
                    band.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

struct Curves<'a> {
    series: &'a [(&'a str, &'a [EpochRecord])],
    held_out: &'a str,
}

impl Figure for Curves<'_> {
    fn size(&self) -> (u32, u32) {
        (1200, 480)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        let epochs = self
            .series
            .iter()
            .map(|(_, h)| h.len())
            .max()
            .unwrap_or(1)
            .max(2);
        type Get = fn(&EpochRecord) -> (f64, f64);
        let metrics: [(&str, &str, Get); 2] = [
            ("accuracy", "accuracy (%)", |r| {
                (
                    100.0 * r.train_accuracy,
                    100.0 * r.test_accuracy.unwrap_or(f64::NAN),
                )
            }),
            ("loss", "cross-entropy loss", |r| {
                (r.train_loss, r.test_loss.unwrap_or(f64::NAN))
            }),
        ];
        for (area, (title, ylabel, get)) in panels.iter().zip(metrics) {
            let values: Vec<f64> = self
                .series
                .iter()
                .flat_map(|(_, h)| h.iter().flat_map(|r| <[f64; 2]>::from(get(r))))
                .filter(|v| v.is_finite())
                .collect();
            let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let (lo, hi) = if lo.is_finite() && hi > lo {
                let pad = (hi - lo) * 0.06;
                (lo - pad, hi + pad)
            } else if lo.is_finite() {
                (lo - 1.0, lo + 1.0)
            } else {
                (0.0, 1.0)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{title} (train solid, {} dashed)", self.held_out),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(1f64..epochs as f64, lo..hi)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ylabel)
                .x_labels(epochs.min(12))
                .label_style(("sans-serif", 14))
                .draw()?;
            for (k, (name, hist)) in self.series.iter().enumerate() {
                let c = colour(k);
                let pts = |held: bool| {
                    hist.iter()
                        .map(move |r| {
                            let (a, b) = get(r);
                            (r.epoch as f64, if held { b } else { a })
                        })
                        .filter(|p| p.1.is_finite())
                        .collect::<Vec<_>>()
                };
                let label = |what: &str| {
                    if name.is_empty() {
                        what.to_string()
                    } else {
                        format!("{name} {what}")
                    }
                };
                chart
                    .draw_series(LineSeries::new(pts(false), c.stroke_width(2)))?
                    .label(label("train"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart.draw_series(
                    pts(false)
                        .into_iter()
                        .map(|p| Circle::new(p, 3, c.filled())),
                )?;
                chart
                    .draw_series(DashedLineSeries::new(pts(true), 6, 4, c.stroke_width(2)))?
                    .label(label(self.held_out))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2))
                    });
                chart.draw_series(
                    pts(true)
                        .into_iter()
                        .map(|p| Circle::new(p, 3, c.stroke_width(1))),
                )?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// One sample through the partitioned network, one panel per partition run (like the paper's
/// Fig. 2C): the input raster, each partition's spikes, and the readout membranes.
pub struct SamplePanels {
    /// Figure title.
    pub title: String,
    /// Steps of the run.
    pub steps: usize,
    /// Panels: title, neurons, and either spikes `(step, neuron)` or membranes
    /// `[neuron][step]`, with a colour index.
    pub panels: Vec<(String, usize, PanelContent, usize)>,
}

/// What a panel of [`SamplePanels`] shows.
pub enum PanelContent {
    /// Spikes `(step, neuron)`.
    Spikes(Vec<(usize, usize)>),
    /// Membrane traces `[neuron][step]`.
    Membranes(Vec<Vec<f32>>),
}

/// Draw `panels` to `path`.
pub fn sample(panels: &SamplePanels, path: &Path) -> Result<()> {
    save(panels, path)
}

impl Figure for SamplePanels {
    fn size(&self) -> (u32, u32) {
        ((260 * self.panels.len() as u32).clamp(600, 2600), 420)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, ("sans-serif", 22))?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (area, (title, n, content, c)) in areas.iter().zip(&self.panels) {
            let c = colour(*c);
            match content {
                PanelContent::Spikes(ev) => {
                    let mut chart = ChartBuilder::on(area)
                        .caption(title, ("sans-serif", 14))
                        .margin(6)
                        .x_label_area_size(32)
                        .y_label_area_size(40)
                        .build_cartesian_2d(0f64..self.steps as f64, 0f64..*n as f64)?;
                    chart
                        .configure_mesh()
                        .disable_mesh()
                        .x_desc("step")
                        .y_desc("neuron")
                        .label_style(("sans-serif", 12))
                        .draw()?;
                    let h = (*n as f64 / 200.0).max(0.8);
                    chart.draw_series(ev.iter().map(|&(t, j)| {
                        Rectangle::new(
                            [(t as f64, j as f64), (t as f64 + 0.9, j as f64 + h)],
                            c.filled(),
                        )
                    }))?;
                }
                PanelContent::Membranes(traces) => {
                    let all = traces.iter().flatten().filter(|v| v.is_finite());
                    let lo = all.clone().cloned().fold(f32::INFINITY, f32::min) as f64;
                    let hi = all.cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let (lo, hi) = if hi > lo {
                        (lo, hi)
                    } else {
                        (lo - 1.0, lo + 1.0)
                    };
                    let mut chart = ChartBuilder::on(area)
                        .caption(title, ("sans-serif", 14))
                        .margin(6)
                        .x_label_area_size(32)
                        .y_label_area_size(40)
                        .build_cartesian_2d(0f64..self.steps as f64, lo..hi)?;
                    chart
                        .configure_mesh()
                        .x_desc("step")
                        .y_desc("membrane")
                        .label_style(("sans-serif", 12))
                        .draw()?;
                    for (k, tr) in traces.iter().enumerate() {
                        let ck = colour(k);
                        chart
                            .draw_series(LineSeries::new(
                                tr.iter().enumerate().map(|(t, &v)| (t as f64, v as f64)),
                                ck.stroke_width(2),
                            ))?
                            .label(format!("{k}"))
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 12, y)], ck.stroke_width(2))
                            });
                    }
                    chart
                        .configure_series_labels()
                        .position(SeriesLabelPosition::UpperLeft)
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK)
                        .label_font(("sans-serif", 11))
                        .draw()?;
                }
            }
        }
        root.present()?;
        Ok(())
    }
}

/// Most partitions drawn in one placement figure (a note says how many more there are).
pub const PLACEMENT_PANELS: usize = 24;

/// Draw each partition's placement on the chip: the synapse array of hemisphere 0 above its
/// row of neuron circuits and that of hemisphere 1 below, one colour per population,
/// alternating shades per logical neuron, the synapse rows in use shaded; axes in circuit
/// columns and synapse rows, a legend of the populations.
pub fn placement(network: &Network, plan: &Plan, path: &Path) -> Result<()> {
    save(&Placement { network, plan }, path)
}

struct Placement<'a> {
    network: &'a Network,
    plan: &'a Plan,
}

impl Figure for Placement<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.plan.partitions.len().min(PLACEMENT_PANELS) as u32;
        (1100, 60 + 260 * n)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let sub = &self.plan.substrate;
        let total = self.plan.partitions.len();
        let shown = total.min(PLACEMENT_PANELS);
        let title = if shown < total {
            format!(
                "placement on {} (first {shown} of {total} partitions)",
                sub.name
            )
        } else {
            format!("placement on {} ({total} partitions)", sub.name)
        };
        let root = root.titled(&title, ("sans-serif", 22))?;
        let cols = sub.circuits_per_hemisphere as f64;
        let rows = sub.synapse_rows_per_hemisphere as f64;
        // The neuron rows' band: a round number of row units, so that the tick labels of the
        // arrays (counted from the band) are round too.
        let band = ((rows / 5.0 / 10.0).round() * 10.0).max(10.0);
        let two = sub.hemispheres > 1;
        // y: array 0 above its neuron row (rows counted upwards from the row), neuron row 0 in
        // [0, band], neuron row 1 in [-band, 0], array 1 below it (counted downwards).
        let (y_lo, y_hi) = (if two { -band - rows } else { 0.0 }, band + rows);
        let areas = root.split_evenly((shown.max(1), 1));
        for (area, part) in areas.iter().zip(&self.plan.partitions) {
            let names: Vec<String> = part
                .parts
                .iter()
                .map(|r| {
                    format!(
                        "{}[{}..{}] × {} circuits",
                        self.network.populations[r.neurons.population].name,
                        r.neurons.offset,
                        r.neurons.offset + r.neurons.size,
                        r.circuits_per_neuron
                    )
                })
                .collect();
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "run {}{}: {}, reading {} input channels",
                        part.id,
                        match (part.system_run, part.chip) {
                            (Some(r), Some(c)) => format!(" (system run {r}, chip {c})"),
                            _ => String::new(),
                        },
                        names.join(", "),
                        part.channel_count()
                    ),
                    ("sans-serif", 15),
                )
                .margin(6)
                .x_label_area_size(34)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..cols, y_lo..y_hi)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("neuron circuit (column)")
                .y_desc("synapse row")
                .label_style(("sans-serif", 12))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| {
                    if *y >= band {
                        format!("{:.0}", y - band)
                    } else if *y <= -band {
                        format!("{:.0}", -y - band)
                    } else {
                        String::new()
                    }
                })
                .draw()?;
            let hem_row = |h: usize| -> (f64, f64) {
                if h == 0 {
                    (band * 0.1, band * 0.9)
                } else {
                    (-band * 0.9, -band * 0.1)
                }
            };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, band), (cols, band + rows)],
                BLACK.mix(0.5).stroke_width(1),
            )))?;
            if two {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(0.0, -band - rows), (cols, -band)],
                    BLACK.mix(0.5).stroke_width(1),
                )))?;
            }
            let mut owner: Vec<Option<(usize, usize)>> = vec![None; sub.circuits()];
            for (k, r) in part.parts.iter().enumerate() {
                for j in 0..r.neurons.size {
                    for c in part.circuit_of(sub, k, j) {
                        if let Some(o) = owner.get_mut(c) {
                            *o = Some((k, j));
                        }
                    }
                }
            }
            let mut rects = Vec::new();
            for (c, o) in owner.iter().enumerate() {
                let h = (c / sub.circuits_per_hemisphere).min(1);
                let x = (c % sub.circuits_per_hemisphere) as f64;
                let (y0, y1) = hem_row(h);
                let Some((k, j)) = o else {
                    rects.push(Rectangle::new(
                        [(x, y0), (x + 1.0, y1)],
                        RGBColor(230, 230, 230).filled(),
                    ));
                    continue;
                };
                let r = &part.parts[*k];
                let base = colour(r.neurons.population);
                let shade = if j % 2 == 0 { base } else { lighten(base, 0.4) };
                rects.push(Rectangle::new([(x, y0), (x + 1.0, y1)], shade.filled()));
                // The synapse rows this circuit's column uses, from its neuron row outwards.
                let used = (r.rows_per_neuron.div_ceil(r.circuits_per_neuron) as f64).min(rows);
                let (a, b) = if h == 0 {
                    (band, band + used)
                } else {
                    (-band - used, -band)
                };
                rects.push(Rectangle::new(
                    [(x, a), (x + 1.0, b)],
                    lighten(base, 0.6).filled(),
                ));
            }
            chart.draw_series(rects)?;
            let mut pops: Vec<usize> = part.parts.iter().map(|r| r.neurons.population).collect();
            pops.dedup();
            for p in pops {
                let c = colour(p);
                let kind = match self.network.populations[p].kind {
                    PopulationKind::Readout => "non-spiking readout",
                    _ => "LIF",
                };
                chart
                    .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                    .label(format!("{} ({kind})", self.network.populations[p].name))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// A histogram of `values` in `bins` equal bins, with the x axis labelled `xlabel`.
pub fn histogram(
    values: &[f64],
    bins: usize,
    title: &str,
    xlabel: &str,
    path: &Path,
) -> Result<()> {
    save(
        &Histo {
            values,
            bins: bins.max(1),
            title,
            xlabel,
        },
        path,
    )
}

struct Histo<'a> {
    values: &'a [f64],
    bins: usize,
    title: &'a str,
    xlabel: &'a str,
}

impl Figure for Histo<'_> {
    fn size(&self) -> (u32, u32) {
        (800, 500)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let finite: Vec<f64> = self
            .values
            .iter()
            .cloned()
            .filter(|v| v.is_finite())
            .collect();
        let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if finite.is_empty() {
            (0.0, 1.0)
        } else if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        };
        let width = (hi - lo) / self.bins as f64;
        let mut counts = vec![0u32; self.bins];
        for v in &finite {
            let b = (((v - lo) / width) as usize).min(self.bins - 1);
            counts[b] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0u32..top + 1)?;
        chart
            .configure_mesh()
            .x_desc(self.xlabel)
            .y_desc("count")
            .label_style(("sans-serif", 14))
            .draw()?;
        // A small gap keeps neighbouring bins of equal count apart.
        let gap = 0.04 * width;
        chart.draw_series(counts.iter().enumerate().map(|(b, &n)| {
            let x0 = lo + b as f64 * width;
            Rectangle::new(
                [(x0 + gap, 0), (x0 + width - gap, n)],
                colour(0).mix(0.8).filled(),
            )
        }))?;
        root.present()?;
        Ok(())
    }
}

/// Draw a plan's placement on its multi-chip system (PNG, or SVG by extension): the chips of
/// its first system run (filled by the circuits they use), the aggregators, and every link,
/// darker and wider the more source neurons' spikes cross it. An error without a system.
pub fn system(network: &Network, plan: &Plan, path: &Path) -> Result<()> {
    let (Some(sys), Some(sp)) = (&plan.substrate.system, &plan.system) else {
        return Err(Error::option(
            "--png",
            path.display(),
            "a system drawing needs a [system] in the substrate",
        ));
    };
    save(
        &SystemFigure {
            network,
            plan,
            sys,
            links: sys.links(),
            traffic: &sp.link_channels,
        },
        path,
    )
}

struct SystemFigure<'a> {
    network: &'a Network,
    plan: &'a Plan,
    sys: &'a crate::model::system::System,
    links: crate::model::system::Links,
    traffic: &'a [u64],
}

impl SystemFigure<'_> {
    /// Where a node is drawn, in [-1.2, 1.2]².
    fn at(&self, node: crate::model::system::Node) -> (f64, f64) {
        use crate::model::system::{LinkTopology as T, Node};
        let n = self.sys.chips.max(1) as f64;
        let ring = |k: f64, r: f64| {
            let a = std::f64::consts::TAU * k / n - std::f64::consts::FRAC_PI_2;
            (r * a.cos(), r * a.sin())
        };
        match (self.sys.topology, node) {
            (T::Mesh2d | T::Torus, Node::Chip(c)) => {
                let w = self.sys.grid_width();
                let h = self.sys.chips.div_ceil(w).max(1);
                let f = |i: usize, m: usize| {
                    if m == 1 {
                        0.0
                    } else {
                        -1.0 + 2.0 * i as f64 / (m - 1) as f64
                    }
                };
                (f(c % w, w), -f(c / w, h))
            }
            (_, Node::Chip(c)) => ring(c as f64, 1.0),
            (_, Node::Hub(0)) => (0.0, 0.0),
            (_, Node::Hub(p)) => {
                let per = self.sys.chips_per_backplane.max(1);
                let first = (p - 1) * per;
                let last = (first + per).min(self.sys.chips) - 1;
                ring((first + last) as f64 / 2.0, 0.55)
            }
        }
    }
}

impl Figure for SystemFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        use crate::model::system::Node;
        root.fill(&WHITE)?;
        let sp = self.plan.system.as_ref().expect("checked");
        let title = format!(
            "'{}' on {} chips ({}): {} system run{}, {} cross-chip synapses",
            self.network.name,
            self.sys.chips,
            self.sys.topology.name(),
            sp.runs.len(),
            if sp.runs.len() == 1 { "" } else { "s" },
            sp.cross_chip_synapses
        );
        let root = root.titled(&title, ("sans-serif", 17))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "chips of system run 0 (fill: circuits used); links: darker and wider = \
                 more neurons' spikes cross them",
                ("sans-serif", 14),
            )
            .margin(20)
            .build_cartesian_2d(-1.25f64..1.25, -1.25f64..1.25)?;
        let top = self.traffic.iter().copied().max().unwrap_or(0).max(1) as f64;
        for (l, &(a, b)) in self.links.ends.iter().enumerate() {
            let (pa, pb) = (self.at(a), self.at(b));
            let t = self.traffic.get(l).copied().unwrap_or(0) as f64 / top;
            let shade = (220.0 * (1.0 - t)) as u8;
            let color = if t > 0.0 {
                RGBColor(200, shade, shade)
            } else {
                RGBColor(225, 225, 225)
            };
            let width = if t > 0.0 { 1 + (5.0 * t) as u32 } else { 1 };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![pa, pb],
                color.stroke_width(width),
            )))?;
        }
        let run0 = sp.runs.first().cloned().unwrap_or_default();
        let circuits = self.plan.substrate.circuits() as f64;
        for c in 0..self.sys.chips {
            let (x, y) = self.at(Node::Chip(c));
            let used = run0.get(c).map_or(0.0, |&p| {
                self.plan.partitions[p].circuits_used as f64 / circuits
            });
            let g = (235.0 - 150.0 * used) as u8;
            chart.draw_series(std::iter::once(Circle::new(
                (x, y),
                9,
                RGBColor(g, g, 255).filled(),
            )))?;
            chart.draw_series(std::iter::once(Circle::new(
                (x, y),
                9,
                BLACK.stroke_width(1),
            )))?;
            if self.sys.chips <= 48 {
                chart.draw_series(std::iter::once(Text::new(
                    c.to_string(),
                    (x + 0.03, y + 0.03),
                    ("sans-serif", 12),
                )))?;
            }
        }
        let hubs = self
            .links
            .ends
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .filter(|n| matches!(n, Node::Hub(_)));
        let mut seen = Vec::new();
        for h in hubs {
            if seen.contains(&h) {
                continue;
            }
            seen.push(h);
            let (x, y) = self.at(h);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.04, y - 0.04), (x + 0.04, y + 0.04)],
                RGBColor(90, 90, 90).filled(),
            )))?;
        }
        Ok(())
    }
}
