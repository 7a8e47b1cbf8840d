// Integrates a feed-forward partition (one stage, no synapses between its own neurons, one
// delay for all inputs) for a chunk of samples: one thread per (sample, neuron), the time loop
// inside, no barriers and no atomics on the input. Each thread walks its sample's input
// events (built by gather.wgsl) and gathers its own weights from a dense [channel][neuron]
// matrix. Same model as lif.wgsl and src/neuron.rs `lif_step`; bindings as declared in
// neuron.wgsl (src/backend/gpu/feedforward.rs owns this file; 4 and 5 are unused here).

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// Dense fixed-point weights [channel][neuron] (as u32) | source table | luts | CADC table.
@group(0) @binding(2) var<storage, read> program: array<u32>;
// [start, end] per sample | (step, channel) pairs, from gather.wgsl.
@group(0) @binding(3) var<storage, read> input: array<u32>;
// Spike bits [sample][step][word] | loop-count word.
@group(0) @binding(6) var<storage, read_write> bits: array<atomic<u32>>;
// [sample][step][neuron] (trace) or [sample][neuron] (maximum).
@group(0) @binding(7) var<storage, read_write> membrane: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = wg.y * P.grid_x + wg.x;
    let sample = block / P.blocks;
    let j = (block % P.blocks) * WG + lid;
    if (sample >= P.samples || j >= P.neurons) {
        return;
    }
    let n = P.neurons;
    let c = coeffs[j];
    var e = input[2u * sample];
    let end = input[2u * sample + 1u];
    var s = State(0.0, c.v_init, 0u);
    var peak = bitcast<f32>(0xff800000u);
    for (var t = 0u; t < P.steps; t++) {
        tick();
        var acc = 0i;
        while (e < end && input[e] + P.delay == t) {
            tick();
            acc += bitcast<i32>(program[input[e + 1u] * n + j]);
            e += 2u;
        }
        let r = lif_step(c, s, acc, membrane_noise(c, noise_base(P.noise_seed, P.noise_sample + sample, t)), P.zero);
        s = r.next;
        peak = max(peak, r.v);
        record(sample, t, j, r);
    }
    record_peak(sample, j, peak);
    report_iterations();
}
