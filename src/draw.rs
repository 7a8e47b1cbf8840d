//! A small raster canvas for the PNGs a researcher would rather look at than read: the
//! placement of partitions on the chip and training curves. Text uses an 8×8 bitmap font so
//! that no system font is needed. Drawing only; what to draw lives with the data it shows.

use crate::error::Result;
use image::{Rgb, RgbImage};
use std::path::Path;

/// An RGB canvas with simple primitives.
pub struct Canvas {
    /// The pixels.
    pub img: RgbImage,
}

/// A colour.
pub type Color = [u8; 3];

/// Distinct colours for series and populations.
pub const PALETTE: [Color; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(width.max(1), height.max(1), Rgb([255, 255, 255])),
        }
    }

    /// Set one pixel (ignored outside).
    pub fn put(&mut self, x: i64, y: i64, c: Color) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }

    /// Fill a rectangle.
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Color) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// Outline of a rectangle.
    pub fn frame(&mut self, x: i64, y: i64, w: i64, h: i64, c: Color) {
        self.rect(x, y, w, 1, c);
        self.rect(x, y + h - 1, w, 1, c);
        self.rect(x, y, 1, h, c);
        self.rect(x + w - 1, y, 1, h, c);
    }

    /// A line (Bresenham); `dotted` leaves gaps.
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Color, dotted: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut k) = (x0, y0, dx + dy, 0u32);
        loop {
            if !dotted || (k / 3) % 2 == 0 {
                self.put(x, y, c);
                self.put(x, y + 1, c);
            }
            k += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 8×8 font, scaled by `scale`; returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Color) -> i64 {
        for (k, ch) in s.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY[(ch as usize).min(127)];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        let px = x + (k as i64 * 8 + col) * scale;
                        self.rect(px, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
        }
        s.chars().count() as i64 * 8 * scale
    }

    /// Save as PNG, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        self.img
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| crate::Error::io(path, std::io::Error::other(e)))?;
        crate::io::write_atomic(path, &bytes)
    }
}

/// Lighten a colour towards white by `f` in [0, 1].
pub fn lighten(c: Color, f: f32) -> Color {
    c.map(|v| (v as f32 + (255.0 - v as f32) * f).round() as u8)
}
