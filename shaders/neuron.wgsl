// The neuron model shared by every kernel (prepended to lif.wgsl and feedforward.wgsl by
// src/gpu/lif.rs): per-neuron coefficients, state, the kernels' parameters, and one step of
// the dynamics, mirroring `lif_step` and `membrane_noise` in src/neuron.rs line by line.

struct Coeffs {
    a_syn: f32,
    k_mem: f32,
    v_leak: f32,
    v_reset: f32,
    v_th: f32,
    refractory_steps: u32,
    spiking: u32,
    weight_gain: f32,
    input_scale: f32,
    noise_sd: f32,
    noise_key: u32,
    pad: u32,
}

struct State {
    i: f32,
    v: f32,
    refractory: u32,
}

// Mirrors `Params` in src/gpu/lif.rs.
struct Params {
    neurons: u32,
    channels: u32,
    steps: u32,
    slots: u32,
    stages: u32,
    samples: u32,
    grid_x: u32,
    out_capacity: u32,
    record_membrane: u32,
    syn_off_base: u32,
    syn_base: u32,
    events_base: u32,
    blocks: u32,
    delay: u32,
    noise_seed: u32,
    sample_base: u32,
    // Always 0; see `rounded`.
    zero: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// The software adapter (llvmpipe/lavapipe) silently stops the loops of an invocation after
// 65 535 iterations in total. Kernels count their iterations with `tick` and report a count
// near that limit (`report_iterations` below), so that a run cut
// short is an error on the host instead of wrong results.
var<private> iterations: u32 = 0u;
const LOOP_BUDGET: u32 = 60000u;

fn tick() {
    iterations += 1u;
}

struct Step {
    next: State,
    spike: bool,
    // Membrane before reset.
    v: f32,
}

fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn noise_base(seed: u32, sample: u32, step: u32) -> u32 {
    return pcg_hash(seed ^ pcg_hash(sample ^ pcg_hash(step)));
}

fn membrane_noise(c: Coeffs, base: u32) -> f32 {
    if (c.noise_sd == 0.0) {
        return 0.0;
    }
    let h = pcg_hash(c.noise_key ^ base);
    let bytes = (h & 255u) + ((h >> 8u) & 255u) + ((h >> 16u) & 255u) + (h >> 24u);
    let sum = (f32(bytes) + 2.0) * (1.0 / 256.0);
    return (sum - 2.0) * 1.7320508 * c.noise_sd;
}

// `x` as it is, but opaque to the shader compiler (`zero` comes from a buffer), so that a
// product is rounded on its own instead of being fused into a multiply-add: the CPU (Rust never
// fuses) and the GPU then round identically.
fn rounded(x: f32, zero: u32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | zero);
}

fn lif_step(c: Coeffs, s: State, input: i32, noise: f32, zero: u32) -> Step {
    let decayed = rounded(c.a_syn * s.i, zero);
    let i = decayed + rounded(c.weight_gain * (f32(input) * c.input_scale), zero);
    let refractory = s.refractory > 0u;
    let integrated = s.v + rounded(c.k_mem * (c.v_leak - s.v + i), zero) + rounded(noise, zero);
    let v = select(integrated, c.v_reset, refractory);
    let spike = !refractory && c.spiking != 0u && v >= c.v_th;
    var out: Step;
    out.next.i = i;
    out.next.v = select(v, c.v_reset, spike);
    out.next.refractory = 0u;
    if (refractory) {
        out.next.refractory = s.refractory - 1u;
    }
    if (spike) {
        out.next.refractory = c.refractory_steps;
    }
    out.spike = spike;
    out.v = v;
    return out;
}

// Both kernels declare `P`, `output` and `membrane` with the same layout (src/gpu/lif.rs):
// output = spike counts (samples) | events (samples x out_capacity x (step, neuron)) | one word
// for the loop count.

// Record neuron `j`'s step `t`: its membrane (when asked for) and, if it spiked, the event.
fn record(sample: u32, t: u32, j: u32, n: u32, r: Step) {
    if (P.record_membrane != 0u) {
        membrane[(sample * P.steps + t) * n + j] = r.v;
    }
    if (r.spike) {
        let idx = atomicAdd(&output[sample], 1u);
        if (idx < P.out_capacity) {
            let at = P.samples + 2u * (sample * P.out_capacity + idx);
            atomicStore(&output[at], t);
            atomicStore(&output[at + 1u], j);
        }
    }
}

// Report this invocation's loop count if it came near the software adapter's limit.
fn report_iterations() {
    if (iterations >= LOOP_BUDGET) {
        atomicMax(&output[P.samples * (1u + 2u * P.out_capacity)], iterations);
    }
}
