//! Host spike buffers: the events (sample, time step, neuron) a partition emits, recorded and
//! then replayed as the input of the partitions that depend on it. Layout is compressed sparse
//! rows over samples: `offsets[s]..offsets[s+1]` index the events of sample `s`, each sorted by
//! (step, neuron). Memory grows with the number of spikes, not with neurons × steps, and both
//! arrays are `Pod`, ready to upload to GPU buffers as they are.

use crate::error::{Error, Result};
use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One spike of one sample.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, bytemuck::Pod, bytemuck::Zeroable,
)]
pub struct SpikeEvent {
    /// Time step (0-based).
    pub step: u32,
    /// Neuron (or input channel) index.
    pub neuron: u32,
}

/// Spikes of a batch over `neurons` neurons and `steps` steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpikeTrains {
    /// Neurons (or channels) the indices refer to.
    pub neurons: usize,
    /// Time steps of the run.
    pub steps: u32,
    /// `samples + 1` offsets into `events`.
    pub offsets: Vec<u32>,
    /// All events, sample by sample, each sample sorted by (step, neuron).
    pub events: Vec<SpikeEvent>,
}

impl SpikeTrains {
    /// No spikes for `samples` samples.
    pub fn empty(samples: usize, neurons: usize, steps: u32) -> Self {
        SpikeTrains {
            neurons,
            steps,
            offsets: vec![0; samples + 1],
            events: Vec::new(),
        }
    }

    /// Build from one event list per sample (sorted here).
    pub fn from_samples(neurons: usize, steps: u32, mut samples: Vec<Vec<SpikeEvent>>) -> Self {
        for s in &mut samples {
            s.sort_unstable();
        }
        Self::from_sorted_samples(neurons, steps, samples)
    }

    /// The spikes as a dense `[sample, step, neuron]` array, `true` where a neuron spiked
    /// (one byte per entry: check the size first for long runs).
    pub fn to_dense(&self) -> Array3<bool> {
        let mut a = Array3::from_elem((self.samples(), self.steps as usize, self.neurons), false);
        for s in 0..self.samples() {
            for e in self.sample(s) {
                a[[s, e.step as usize, e.neuron as usize]] = true;
            }
        }
        a
    }

    /// Spikes from a dense `[sample, step, neuron]` array (any memory layout, e.g. a view of
    /// another program's array): a spike wherever it is `true`.
    pub fn from_dense(a: ArrayView3<'_, bool>) -> Self {
        let (samples, steps, neurons) = a.dim();
        let lists = (0..samples)
            .map(|s| {
                a.index_axis(Axis(0), s)
                    .indexed_iter()
                    .filter(|&(_, &on)| on)
                    .map(|((t, n), _)| SpikeEvent {
                        step: t as u32,
                        neuron: n as u32,
                    })
                    .collect()
            })
            .collect();
        Self::from_sorted_samples(neurons, steps as u32, lists)
    }

    /// Build from one event list per sample, each already sorted by (step, neuron).
    pub fn from_sorted_samples(neurons: usize, steps: u32, samples: Vec<Vec<SpikeEvent>>) -> Self {
        debug_assert!(samples.iter().all(|s| s.windows(2).all(|w| w[0] <= w[1])));
        let total: usize = samples.iter().map(Vec::len).sum();
        let mut events = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(samples.len() + 1);
        offsets.push(0);
        for s in samples {
            events.extend_from_slice(&s);
            offsets.push(events.len() as u32);
        }
        SpikeTrains {
            neurons,
            steps,
            offsets,
            events,
        }
    }

    /// From flat parts: `offsets` (one per sample plus one, from 0) into `events`, each
    /// sample's events sorted by (step, neuron).
    pub(crate) fn from_flat(
        neurons: usize,
        steps: u32,
        offsets: Vec<u32>,
        events: Vec<SpikeEvent>,
    ) -> Self {
        debug_assert!(
            offsets.first() == Some(&0) && *offsets.last().unwrap() as usize == events.len()
        );
        SpikeTrains {
            neurons,
            steps,
            offsets,
            events,
        }
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Events of sample `s`.
    pub fn sample(&self, s: usize) -> &[SpikeEvent] {
        &self.events[self.offsets[s] as usize..self.offsets[s + 1] as usize]
    }

    /// Total spikes.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True without spikes.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Spike counts per (sample, neuron), row-major.
    pub fn counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.samples() * self.neurons];
        for s in 0..self.samples() {
            for e in self.sample(s) {
                c[s * self.neurons + e.neuron as usize] += 1;
            }
        }
        c
    }

    /// Check indices against `neurons` and `steps`, the ordering, and that no neuron spikes
    /// twice in one step (a neuron or input channel carries at most one spike per step;
    /// duplicate events are refused, not summed).
    pub fn validate(&self) -> Result<()> {
        if self.offsets.first() != Some(&0)
            || *self.offsets.last().unwrap_or(&0) as usize != self.events.len()
            || self.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::input(
                "spike trains",
                format!(
                    "offsets are not monotone from 0 to the {} events",
                    self.events.len()
                ),
            ));
        }
        // A check without branches first (every batch's input comes through here); where it
        // fails, the pass below finds and names the first fault.
        if self.events_valid() {
            return Ok(());
        }
        for s in 0..self.samples() {
            let ev = self.sample(s);
            for e in ev {
                if e.neuron as usize >= self.neurons || e.step >= self.steps {
                    return Err(Error::input(
                        format!("sample {s}"),
                        format!(
                            "spike at step {} of neuron {} is outside {} steps x {} neurons",
                            e.step, e.neuron, self.steps, self.neurons
                        ),
                    ));
                }
            }
            for w in ev.windows(2) {
                if w[0] > w[1] {
                    return Err(Error::input(
                        format!("sample {s}"),
                        format!(
                            "events not sorted: ({}, {}) before ({}, {})",
                            w[0].step, w[0].neuron, w[1].step, w[1].neuron
                        ),
                    ));
                }
                if w[0] == w[1] {
                    return Err(Error::input(
                        format!("sample {s}"),
                        format!(
                            "neuron {} spikes twice at step {}; at most one spike per neuron \
                             and step",
                            w[0].neuron, w[0].step
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether every sample's events lie inside `neurons` × `steps` and strictly increase
    /// in (step, neuron) order (sorted, none twice): what [`SpikeTrains::validate`] checks of
    /// them, given monotone offsets, without saying where it fails.
    fn events_valid(&self) -> bool {
        let (neurons, steps) = (u32::try_from(self.neurons).unwrap_or(u32::MAX), self.steps);
        let key = |e: &SpikeEvent| ((e.step as u64) << 32) | e.neuron as u64;
        (0..self.samples()).all(|s| {
            let ev = self.sample(s);
            let inside = ev
                .iter()
                .fold(true, |ok, e| ok & (e.neuron < neurons) & (e.step < steps));
            let increasing = ev
                .windows(2)
                .fold(true, |ok, w| ok & (key(&w[0]) < key(&w[1])));
            inside & increasing
        })
    }

    /// Concatenate batches of the same shape (samples of `other` after those of `self`).
    pub fn append(&mut self, other: &SpikeTrains) {
        let base = self.events.len() as u32;
        self.events.extend_from_slice(&other.events);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
    }

    /// Samples `range` as a new batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> SpikeTrains {
        let (a, b) = (
            self.offsets[range.start] as usize,
            self.offsets[range.end] as usize,
        );
        SpikeTrains {
            neurons: self.neurons,
            steps: self.steps,
            offsets: self.offsets[range.start..=range.end]
                .iter()
                .map(|o| o - a as u32)
                .collect(),
            events: self.events[a..b].to_vec(),
        }
    }
}

/// Work below which a parallel loop costs more than it saves (waking the thread pool after
/// a long device wait takes tens of microseconds).
pub const PARALLEL_MIN: usize = 1 << 16;

/// `events` (sized by `offsets`, one entry per sample plus one) as one mutable slice per
/// sample, in sample order.
pub fn sample_parts<'a>(
    offsets: &'a [u32],
    events: &'a mut [SpikeEvent],
) -> impl Iterator<Item = &'a mut [SpikeEvent]> + 'a {
    let mut rest = events;
    offsets.windows(2).map(move |w| {
        let (a, b) = std::mem::take(&mut rest).split_at_mut((w[1] - w[0]) as usize);
        rest = b;
        a
    })
}

/// Split `events` (sized by `offsets`, one entry per sample plus one) into one mutable slice
/// per sample ([`sample_parts`]) and fill them with `fill(sample, slice)`, in parallel when
/// there is enough work.
pub fn fill_per_sample(
    offsets: &[u32],
    events: &mut [SpikeEvent],
    fill: impl Fn(usize, &mut [SpikeEvent]) + Sync,
) {
    let parts: Vec<&mut [SpikeEvent]> = sample_parts(offsets, events).collect();
    if parts.len() + *offsets.last().unwrap_or(&0) as usize >= PARALLEL_MIN {
        parts
            .into_par_iter()
            .enumerate()
            .for_each(|(s, part)| fill(s, part));
    } else {
        for (s, part) in parts.into_iter().enumerate() {
            fill(s, part);
        }
    }
}

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// One population's spikes in a [`SpikeStore`], with a version that is new whenever the
/// spikes are (a backend that keeps a copy on its device recognises it by the version).
#[derive(Clone, Debug)]
pub struct StoredTrains {
    /// The spikes, over the population's neurons.
    pub trains: Arc<SpikeTrains>,
    /// Unique for these spikes in this process.
    pub version: u64,
}

/// The host spike store of one batch: every population's spikes over its own neuron indices,
/// recorded from the partitions that emit them and replayed into the partitions that read
/// them. A population split over several partitions arrives in pieces (one per partition) and
/// is merged once, when it is first read or at the end; memory grows with spikes only.
#[derive(Clone, Debug, Default)]
pub struct SpikeStore {
    id: u64,
    samples: usize,
    steps: u32,
    sizes: Vec<usize>,
    done: Vec<Option<StoredTrains>>,
    /// Pieces not yet merged: (first neuron, spikes over the population's indices).
    pieces: Vec<Vec<(u32, SpikeTrains)>>,
}

impl SpikeStore {
    /// An empty store for populations of `sizes` neurons, `samples` samples of `steps` steps.
    pub fn new(sizes: Vec<usize>, samples: usize, steps: u32) -> Self {
        let n = sizes.len();
        SpikeStore {
            id: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            samples,
            steps,
            sizes,
            done: vec![None; n],
            pieces: vec![Vec::new(); n],
        }
    }

    /// Unique for this store in this process (a device copy of it is recognised by it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Samples of the batch.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Steps of the batch.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Set the spikes of population `pop` (e.g. an input).
    pub fn set(&mut self, pop: usize, trains: SpikeTrains) {
        self.done[pop] = Some(StoredTrains {
            trains: Arc::new(trains),
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
        });
    }

    /// Record a piece of population `pop`: the spikes of its neurons `first..` that one
    /// partition emitted, already over the population's indices.
    pub fn add_piece(&mut self, pop: usize, first: u32, trains: SpikeTrains) {
        self.pieces[pop].push((first, trains));
    }

    /// Merge the recorded pieces of `pop` (if any) into its spikes: per sample and step, the
    /// pieces in neuron order, so the result is sorted by (step, neuron) without sorting.
    pub fn finalise(&mut self, pop: usize) {
        let mut pieces = std::mem::take(&mut self.pieces[pop]);
        if pieces.is_empty() {
            return;
        }
        pieces.sort_by_key(|p| p.0);
        let trains = match self.done[pop].take() {
            None if pieces.len() == 1 => pieces.pop().expect("one piece").1,
            None => merge_pieces(&pieces, self.sizes[pop], self.samples, self.steps),
            Some(old) => {
                // Spikes recorded after the population was first read (a consumer that reads
                // only some of its ranges ran in between): merge, then restore the order.
                pieces.push((0, Arc::unwrap_or_clone(old.trains)));
                let mut t = merge_pieces(&pieces, self.sizes[pop], self.samples, self.steps);
                let offsets = t.offsets.clone();
                fill_per_sample(&offsets, &mut t.events, |_, ev| ev.sort_unstable());
                t
            }
        };
        self.set(pop, trains);
    }

    /// Merge every population's pieces.
    pub fn finalise_all(&mut self) {
        for p in 0..self.sizes.len() {
            self.finalise(p);
        }
    }

    /// Spikes of population `p` (merged; `None` if never given or recorded).
    pub fn get(&self, p: usize) -> Option<&SpikeTrains> {
        self.done
            .get(p)
            .and_then(|s| s.as_ref())
            .map(|s| &*s.trains)
    }

    /// Spikes of population `p` with their version.
    pub fn stored(&self, p: usize) -> Option<&StoredTrains> {
        self.done.get(p).and_then(|s| s.as_ref())
    }

    /// Number of populations.
    pub fn populations(&self) -> usize {
        self.sizes.len()
    }
}

/// Merge pieces (sorted by first neuron, over disjoint neuron ranges, each sorted per sample)
/// into one train per sample sorted by (step, neuron).
fn merge_pieces(
    pieces: &[(u32, SpikeTrains)],
    neurons: usize,
    samples: usize,
    steps: u32,
) -> SpikeTrains {
    let mut offsets = Vec::with_capacity(samples + 1);
    offsets.push(0u32);
    for s in 0..samples {
        let n: usize = pieces.iter().map(|(_, t)| t.sample(s).len()).sum();
        offsets.push(offsets[s] + n as u32);
    }
    let mut events = vec![SpikeEvent { step: 0, neuron: 0 }; *offsets.last().unwrap() as usize];
    fill_per_sample(&offsets, &mut events, |s, out| {
        let mut lists: Vec<&[SpikeEvent]> = pieces
            .iter()
            .map(|(_, t)| t.sample(s))
            .filter(|l| !l.is_empty())
            .collect();
        match lists.len() {
            0 => {}
            1 => out.copy_from_slice(lists[0]),
            _ => {
                // Per step, the pieces in neuron order: (step, neuron) order without sorting.
                let mut k = 0;
                for t in 0..steps {
                    for l in lists.iter_mut() {
                        let n = l.iter().take_while(|e| e.step == t).count();
                        out[k..k + n].copy_from_slice(&l[..n]);
                        k += n;
                        *l = &l[n..];
                    }
                }
                debug_assert_eq!(k, out.len());
            }
        }
    });
    SpikeTrains {
        neurons,
        steps,
        offsets,
        events,
    }
}

/// Spike file format (JSON): per population name, per sample, a list of `[step, neuron]`;
/// what `neuropart run` writes adds, per readout population, the scores (maximum over time of
/// the membrane) and the predicted class per sample, and with `--membranes` every
/// population's membrane `[sample][step][neuron]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeFile {
    /// Time steps (must match the network's).
    pub steps: u32,
    /// Per population: per sample, the `[step, neuron]` pairs.
    pub populations: BTreeMap<String, Vec<Vec<[u32; 2]>>>,
    /// Per readout population: per sample, each neuron's score: its maximum membrane over the
    /// run, or the population's other score (the mean of the last steps, the sum).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, Vec<Vec<f32>>>,
    /// Per readout population: per sample, the neuron with the highest score.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub predicted: BTreeMap<String, Vec<usize>>,
    /// Per population: per sample, per step, each neuron's membrane (before reset).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub membranes: BTreeMap<String, Vec<Vec<Vec<f32>>>>,
}

/// Exact binary form of a [`SpikeFile`]'s contents for sending between processes: lengths and
/// values as little-endian words, floats by their bits (non-finite ones survive, unlike JSON).
trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(input: &mut &[u8]) -> Option<Self>;
}

fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

impl Wire for u32 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        take::<4>(input).map(u32::from_le_bytes)
    }
}

impl Wire for f32 {
    fn put(&self, out: &mut Vec<u8>) {
        self.to_bits().put(out);
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        u32::get(input).map(f32::from_bits)
    }
}

impl Wire for usize {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(*self as u64).to_le_bytes());
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        take::<8>(input).and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    }
}

impl Wire for [u32; 2] {
    fn put(&self, out: &mut Vec<u8>) {
        self[0].put(out);
        self[1].put(out);
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        Some([u32::get(input)?, u32::get(input)?])
    }
}

impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        let n = usize::get(input)?;
        let (name, rest) = (input.get(..n)?, input.get(n..)?);
        *input = rest;
        String::from_utf8(name.to_vec()).ok()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        for x in self {
            x.put(out);
        }
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        let n = usize::get(input)?;
        // Each value takes at least 4 bytes: a length beyond the input is damage, not a size.
        if n > input.len() / 4 + 1 {
            return None;
        }
        (0..n).map(|_| T::get(input)).collect()
    }
}

impl<V: Wire> Wire for BTreeMap<String, V> {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        for (k, v) in self {
            k.put(out);
            v.put(out);
        }
    }
    fn get(input: &mut &[u8]) -> Option<Self> {
        let n = usize::get(input)?;
        (0..n)
            .map(|_| Some((String::get(input)?, V::get(input)?)))
            .collect()
    }
}

impl SpikeFile {
    /// These contents in an exact binary form (for sending to another process;
    /// [`SpikeFile::from_bytes`] reads it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.steps.put(&mut out);
        self.populations.put(&mut out);
        self.scores.put(&mut out);
        self.predicted.put(&mut out);
        self.membranes.put(&mut out);
        out
    }

    /// A file from [`SpikeFile::to_bytes`]; `None` if `bytes` are not such a form.
    pub fn from_bytes(mut bytes: &[u8]) -> Option<Self> {
        let input = &mut bytes;
        let file = SpikeFile {
            steps: u32::get(input)?,
            populations: Wire::get(input)?,
            scores: Wire::get(input)?,
            predicted: Wire::get(input)?,
            membranes: Wire::get(input)?,
        };
        input.is_empty().then_some(file)
    }

    /// Append `other`'s samples after these (every population's lists, scores, predictions
    /// and membranes; both of the same steps).
    pub fn append(&mut self, other: SpikeFile) {
        fn join<V>(a: &mut BTreeMap<String, Vec<V>>, b: BTreeMap<String, Vec<V>>) {
            for (k, v) in b {
                a.entry(k).or_default().extend(v);
            }
        }
        join(&mut self.populations, other.populations);
        join(&mut self.scores, other.scores);
        join(&mut self.predicted, other.predicted);
        join(&mut self.membranes, other.membranes);
    }

    /// Read a spike file (JSON; a key given twice is an error).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        crate::model::network::Format::Json.parse(&text, path)
    }

    /// Convert one population's trains to the file form.
    pub fn trains_to_lists(t: &SpikeTrains) -> Vec<Vec<[u32; 2]>> {
        (0..t.samples())
            .map(|s| t.sample(s).iter().map(|e| [e.step, e.neuron]).collect())
            .collect()
    }

    /// Convert a file entry back to trains over `neurons` neurons.
    pub fn lists_to_trains(
        lists: &[Vec<[u32; 2]>],
        neurons: usize,
        steps: u32,
    ) -> Result<SpikeTrains> {
        let t = SpikeTrains::from_samples(
            neurons,
            steps,
            lists
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|&[step, neuron]| SpikeEvent { step, neuron })
                        .collect()
                })
                .collect(),
        );
        t.validate()?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(step: u32, neuron: u32) -> SpikeEvent {
        SpikeEvent { step, neuron }
    }

    #[test]
    fn layout_sorts_and_slices() {
        let t = SpikeTrains::from_samples(
            4,
            10,
            vec![vec![ev(3, 1), ev(1, 2)], vec![], vec![ev(0, 3)]],
        );
        assert_eq!(t.offsets, vec![0, 2, 2, 3]);
        assert_eq!(t.sample(0), &[ev(1, 2), ev(3, 1)]);
        let s = t.slice(1..3);
        assert_eq!(s.offsets, vec![0, 0, 1]);
        assert_eq!(s.sample(1), &[ev(0, 3)]);
        let mut a = t.slice(0..1);
        a.append(&s);
        assert_eq!(a, t);
        assert_eq!(t.counts()[..4], [0, 1, 1, 0]);
        let bad = SpikeTrains::from_samples(4, 10, vec![vec![ev(10, 0)]]);
        assert!(bad.validate().unwrap_err().to_string().contains("step 10"));
        let twice = SpikeTrains::from_samples(4, 10, vec![vec![], vec![ev(3, 2), ev(3, 2)]]);
        let e = twice.validate().unwrap_err().to_string();
        assert!(
            e.contains("sample 1") && e.contains("neuron 2 spikes twice at step 3"),
            "{e}"
        );
        // 8 bytes per event, no per-neuron storage.
        assert_eq!(std::mem::size_of::<SpikeEvent>(), 8);
    }

    /// The quick check accepts exactly the trains a plain reference accepts: random
    /// trains, valid or with one fault each (out of range, unsorted, twice, at the edges).
    #[test]
    fn the_quick_check_accepts_what_a_plain_scan_accepts() {
        fn reference(t: &SpikeTrains) -> bool {
            (0..t.samples()).all(|s| {
                let ev = t.sample(s);
                ev.iter()
                    .all(|e| (e.neuron as usize) < t.neurons && e.step < t.steps)
                    && ev
                        .windows(2)
                        .all(|w| (w[0].step, w[0].neuron) < (w[1].step, w[1].neuron))
            })
        }
        let mut rng = crate::rng::Rng::new(7);
        let (mut good, mut bad) = (0, 0);
        for case in 0..400 {
            let (neurons, steps) = (1 + rng.below(6), 1 + rng.below(6) as u32);
            let samples: Vec<Vec<SpikeEvent>> = (0..1 + rng.below(3))
                .map(|_| {
                    let mut e: Vec<SpikeEvent> = (0..rng.below(8))
                        .map(|_| ev(rng.below(steps as usize) as u32, rng.below(neurons) as u32))
                        .collect();
                    e.sort_unstable();
                    e.dedup();
                    e
                })
                .collect();
            let mut t = SpikeTrains::from_sorted_samples(neurons, steps, samples);
            if !t.events.is_empty() && case % 2 == 1 {
                let k = rng.below(t.events.len());
                match case % 8 {
                    1 => t.events[k].neuron = neurons as u32 + rng.below(2) as u32,
                    3 => t.events[k].step = steps + rng.below(2) as u32,
                    5 => t.events[k] = t.events[rng.below(t.events.len())],
                    _ => t.events[k].neuron = rng.below(neurons + 1) as u32,
                }
            }
            let expected = reference(&t);
            assert_eq!(t.events_valid(), expected, "case {case}: {t:?}");
            assert_eq!(t.validate().is_ok(), expected, "case {case}");
            if expected {
                good += 1;
            } else {
                bad += 1;
            }
        }
        assert!(
            good > 100 && bad > 50,
            "{good} valid and {bad} faulty cases"
        );
    }

    #[test]
    fn spike_files_survive_their_binary_form_exactly() {
        let mut f = SpikeFile {
            steps: 7,
            ..Default::default()
        };
        f.populations
            .insert("in".into(), vec![vec![[0, 3], [6, 1]], vec![]]);
        f.scores.insert(
            "out".into(),
            vec![vec![f32::NAN, -0.0], vec![f32::INFINITY, 1e-40]],
        );
        f.predicted.insert("out".into(), vec![1, 0]);
        f.membranes
            .insert("out".into(), vec![vec![vec![0.5, -2.0]; 7]; 2]);
        let bytes = f.to_bytes();
        let back = SpikeFile::from_bytes(&bytes).unwrap();
        // NaN != NaN: compare the bits of every score, the rest directly.
        assert_eq!(back.populations, f.populations);
        assert_eq!(back.predicted, f.predicted);
        assert_eq!(back.membranes, f.membranes);
        assert_eq!(back.steps, 7);
        let bits = |g: &SpikeFile| -> Vec<u32> {
            g.scores["out"]
                .iter()
                .flatten()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(&back), bits(&f));
        // Cut short or with bytes to spare: not a file.
        assert!(SpikeFile::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SpikeFile::from_bytes(&longer).is_none());
        // A length beyond the input is refused, not allocated.
        let mut huge = 7u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(SpikeFile::from_bytes(&huge).is_none());
    }
}
