// The parameters of one dispatch of the simulation kernels and of gather.wgsl (prepended to
// each of them by src/backend/gpu/).

// Mirrors `SimParams` in src/backend/gpu/mod.rs.
struct Params {
    neurons: u32,
    channels: u32,
    steps: u32,
    slots: u32,
    stages: u32,
    // Samples in this chunk, and the first one's index in the store and for the noise.
    samples: u32,
    store_sample: u32,
    noise_sample: u32,
    grid_x: u32,
    // Feed-forward kernel: workgroups along the neurons (for each group of samples).
    blocks: u32,
    // Spike-bit words per step: ceil(neurons / 32).
    words: u32,
    // 0: no membranes, 1: maximum over time, 2: every step.
    record: u32,
    // In `program`: synapse offsets, synapses, source table (4 words per source), CADC table.
    syn_off_base: u32,
    syn_base: u32,
    source_base: u32,
    cadc_base: u32,
    sources: u32,
    // Feed-forward kernel: the one delay of every input.
    delay: u32,
    noise_seed: u32,
    // 1: recorded membranes are quantised like the CADC (through the table at cadc_base).
    cadc: u32,
    cadc_offset: f32,
    cadc_gain: f32,
    cadc_top: f32,
    // Samples of the whole batch in the store (its regions hold that many offsets + 1).
    store_samples: u32,
    // Word of `bits` that reports the loop count (after the chunk's spike bits).
    flag_word: u32,
    // Always 0; see `rounded` in neuron.wgsl.
    zero: u32,
    // Workgroups along x of gather.wgsl (one thread per sample).
    gather_grid_x: u32,
    // Traces: where sample 0, step 0, local neuron 0 goes in `membrane`, and the words from
    // one step's row to the next (the local neurons, or a whole population kept on the
    // device for training).
    mem_base: u32,
    mem_stride: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

