// The neuron model and the output conventions shared by the simulation kernels (prepended,
// after params.wgsl, to feedforward.wgsl and lif.wgsl by src/backend/gpu/): per-neuron
// coefficients, state, one step of the dynamics (`lif_step` and `membrane_noise` of
// src/neuron.rs, the same IEEE operations), and recording spikes as bits and membranes as
// asked.
//
// Both kernels declare `P` (binding 0), `coeffs` (1), `program` (2), `bits` (6) and
// `membrane` (7) (`program` as words or as vectors of them), and `program_word` (word i of
// the program); lif.wgsl reads its input from `input` (3), feedforward.wgsl from a copy of it
// in a texture (9) and its packed weights from another (8). src/backend/gpu/mod.rs owns the
// layout.

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
    // 1: the membrane integrates the previous step's current (hxtorch's order).
    membrane_first: u32,
    // Constant current added every step (a bias).
    bias: f32,
    // Membrane at the start of a run.
    v_init: f32,
    // 1: the membrane leaks towards v_leak; 0: it only integrates (NIR's IF).
    leaky: u32,
}

struct State {
    i: f32,
    v: f32,
    refractory: u32,
}

// The software adapter (llvmpipe/lavapipe) silently stops the loops of an invocation after
// 65 535 iterations in total. Kernels count their iterations with `tick` and report a count
// near that limit (`report_iterations` below), so that a run cut short is an error on the host
// instead of wrong results.
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
    return rounded(rounded((sum - 2.0) * 1.7320508, P.zero) * c.noise_sd, P.zero);
}

// `x` as it is, but opaque to the shader compiler (`zero` comes from a buffer), so that a
// product is rounded on its own instead of being fused into a multiply-add: the CPU (Rust never
// fuses) and the GPU then round identically.
fn rounded(x: f32, zero: u32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | zero);
}

fn lif_step(c: Coeffs, s: State, input: i32, noise: f32, zero: u32) -> Step {
    let decayed = rounded(c.a_syn * s.i, zero);
    let i = decayed + (rounded(c.weight_gain * rounded(f32(input) * c.input_scale, zero), zero) + c.bias);
    let refractory = s.refractory > 0u;
    let drive = select(i, s.i, c.membrane_first != 0u);
    let leak = select(0.0, c.v_leak - s.v, c.leaky != 0u);
    let integrated = s.v + rounded(c.k_mem * (leak + drive), zero) + rounded(noise, zero);
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

// --- Recording --------------------------------------------------------------------------------

// The membrane the readout reports (the CADC table holds every code's value, computed on the
// host so that the division is the CPU's).
fn readout_value(v: f32) -> f32 {
    if (P.cadc == 0u) {
        return v;
    }
    let x = P.cadc_offset + rounded(v * P.cadc_gain, P.zero);
    // Round half away from zero, as Rust's f32::round.
    let t = trunc(x);
    let r = select(t, t + sign(x), abs(x - t) >= 0.5);
    let code = clamp(r, 0.0, P.cadc_top);
    return bitcast<f32>(program_word(P.cadc_base + u32(code)));
}

// Record neuron `j`'s step `t`: its spike as a bit, its membrane when a trace is asked for.
fn record(sample: u32, t: u32, j: u32, r: Step) {
    record_membrane(sample, t, j, r.v);
    if (r.spike) {
        atomicOr(&bits[(sample * P.steps + t) * P.words + j / 32u], 1u << (j % 32u));
    }
}

// Record neuron `j`'s membrane `v` at step `t` when a trace is asked for.
fn record_membrane(sample: u32, t: u32, j: u32, v: f32) {
    if (P.record == 2u) {
        membrane[P.mem_base + (sample * P.steps + t) * P.mem_stride + j] = readout_value(v);
    }
}

// Record neuron `j`'s maximum membrane over the run, when that is asked for.
fn record_peak(sample: u32, j: u32, peak: f32) {
    if (P.record == 1u) {
        membrane[sample * P.neurons + j] = readout_value(peak);
    }
}

// Report this invocation's loop count if it came near the software adapter's limit.
fn report_iterations() {
    if (iterations >= LOOP_BUDGET) {
        atomicMax(&bits[P.flag_word], iterations);
    }
}
