//! Host spike buffers: the events (sample, time step, neuron) a partition emits, recorded and
//! then replayed as the input of the partitions that depend on it. Layout is compressed sparse
//! rows over samples: `offsets[s]..offsets[s+1]` index the events of sample `s`, each sorted by
//! (step, neuron). Memory grows with the number of spikes, not with neurons × steps, and both
//! arrays are `Pod`, ready to upload to GPU buffers as they are.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

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

    /// Check indices against `neurons` and `steps`, and the ordering.
    pub fn validate(&self) -> Result<()> {
        if self.offsets.first() != Some(&0)
            || *self.offsets.last().unwrap() as usize != self.events.len()
            || self.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::InvalidInput("offsets are not monotone".into()));
        }
        for s in 0..self.samples() {
            let ev = self.sample(s);
            for e in ev {
                if e.neuron as usize >= self.neurons || e.step >= self.steps {
                    return Err(Error::InvalidInput(format!(
                        "sample {s}: spike at step {} of neuron {} is outside {} steps x {} neurons",
                        e.step, e.neuron, self.steps, self.neurons
                    )));
                }
            }
            if ev.windows(2).any(|w| w[0] > w[1]) {
                return Err(Error::InvalidInput(format!(
                    "sample {s}: events not sorted"
                )));
            }
        }
        Ok(())
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

/// Spike file format (JSON): per population name, per sample, a list of `[step, neuron]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeFile {
    /// Time steps (must match the network's).
    pub steps: u32,
    /// Per population: per sample, the `[step, neuron]` pairs.
    pub populations: std::collections::BTreeMap<String, Vec<Vec<[u32; 2]>>>,
}

impl SpikeFile {
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
        // 8 bytes per event, no per-neuron storage.
        assert_eq!(std::mem::size_of::<SpikeEvent>(), 8);
    }
}
