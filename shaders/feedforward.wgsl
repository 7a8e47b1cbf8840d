// Integrates a feed-forward partition (one stage, no synapses between its own neurons, one
// delay for all inputs) for a chunk of samples: one thread per (sample, neuron), the time loop
// inside, no barriers and no atomics on the input. Each thread walks its sample's input events
// and gathers its own weights from a dense [channel][neuron] matrix. Same dynamics as
// shaders/lif.wgsl and src/neuron.rs `lif_step`; same bindings as lif.wgsl (src/gpu/lif.rs owns
// both layouts; bindings 4 and 5 are unused here).

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// Dense fixed-point weights [channel][neuron].
@group(0) @binding(2) var<storage, read> weights: array<i32>;
// sample offsets (samples + 1) | events (step, channel)
@group(0) @binding(3) var<storage, read> input: array<u32>;
@group(0) @binding(6) var<storage, read_write> output: array<atomic<u32>>;
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
    var s = State(0.0, c.v_leak, 0u);
    var e = input[sample];
    let end = input[sample + 1u];
    // Spike counts start at zero: the host creates the output buffer zeroed.
    for (var t = 0u; t < P.steps; t++) {
        tick();
        var acc = 0i;
        while (e < end && input[P.events_base + 2u * e] + P.delay == t) {
            tick();
            acc += weights[input[P.events_base + 2u * e + 1u] * n + j];
            e++;
        }
        let r = lif_step(c, s, acc, membrane_noise(c, noise_base(P.noise_seed, P.sample_base + sample, t)), P.zero);
        s = r.next;
        record(sample, t, j, n, r);
    }
    report_iterations();
}
