// Integrates a feed-forward partition (one stage, no synapses between its own neurons, one
// delay for all inputs) for a chunk of samples: the time
// loop inside, no barriers and no atomics on the input (`main`: one neuron per thread; `quad`:
// Q). Each thread walks its sample's input events (built by gather.wgsl) and gathers its
// neurons' weights from a dense
// [channel][neuron] matrix: 32-bit words in `program`, or, for programs too large for that (a
// fused wave), packed in 8 or 16 bits over bindings 4 and 5. Same model as lif.wgsl and
// src/neuron.rs `lif_step`; bindings as declared in neuron.wgsl (src/backend/gpu/feedforward.rs
// owns this file and mirrors Q).

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// Dense fixed-point weights [channel][neuron] (as u32) | source table | luts | CADC table.
@group(0) @binding(2) var<storage, read> program: array<u32>;
// [start, end] per sample | (step, channel) pairs, from gather.wgsl.
@group(0) @binding(3) var<storage, read> input: array<u32>;
// Dense weights too large for `program` as 32-bit words, packed in 8 or 16 bits
// (`P.wbits`), the first `P.wsplit` words here...
@group(0) @binding(4) var<storage, read_write> packed_a: array<u32>;
// ...and the rest here.
@group(0) @binding(5) var<storage, read_write> packed_b: array<u32>;
// Spike bits [sample][step][word] | loop-count word.
@group(0) @binding(6) var<storage, read_write> bits: array<atomic<u32>>;
// [sample][step][neuron] (trace) or [sample][neuron] (maximum).
@group(0) @binding(7) var<storage, read_write> membrane: array<f32>;

// Neurons per thread of `quad`.
const Q: u32 = 4u;

// Word `at` of the packed weights.
fn packed_word(at: u32) -> u32 {
    if (at < P.wsplit) {
        return packed_a[at];
    }
    return packed_b[at - P.wsplit];
}

// The fixed-point weight at `k` = channel · neurons + neuron of the dense matrix.
fn weight(k: u32) -> i32 {
    if (P.wbits == 32u) {
        return bitcast<i32>(program[k]);
    }
    // 8 bits: 4 per word; 16 bits: 2 per word.
    let ps = select(1u, 2u, P.wbits == 8u);
    let w = packed_word(k >> ps);
    // The weight's bits to the top, then an arithmetic shift back (sign extension).
    let shift = 32u - P.wbits;
    return bitcast<i32>(w << (shift - (k & ((1u << ps) - 1u)) * P.wbits)) >> shift;
}

// The weights at k, k + 1, ... for the `valid` (1 to Q) neurons of a thread; 0 beyond. Packed
// weights come without their neurons' shifts (`shifts`).
fn weights(k: u32, valid: u32) -> vec4<i32> {
    if (valid == Q) {
        if (P.wbits == 8u && (k & 3u) == 0u) {
            let w = packed_word(k >> 2u);
            return vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u),
                             bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
        }
        if (P.wbits == 16u && (k & 1u) == 0u) {
            let w0 = packed_word(k >> 1u);
            let w1 = packed_word((k >> 1u) + 1u);
            return vec4<i32>(bitcast<i32>(w0 << 16u), bitcast<i32>(w0),
                             bitcast<i32>(w1 << 16u), bitcast<i32>(w1)) >> vec4<u32>(16u);
        }
        if (P.wbits == 32u) {
            return vec4<i32>(bitcast<i32>(program[k]), bitcast<i32>(program[k + 1u]),
                             bitcast<i32>(program[k + 2u]), bitcast<i32>(program[k + 3u]));
        }
    }
    var w = vec4<i32>(weight(k), 0, 0, 0);
    if (valid > 1u) {
        w.y = weight(k + 1u);
    }
    if (valid > 2u) {
        w.z = weight(k + 2u);
    }
    if (valid > 3u) {
        w.w = weight(k + 3u);
    }
    return w;
}

// One neuron per thread, 32-bit weights only: where a sample's input events are few for its
// steps (MNIST), the neuron updates dominate and this straight code runs them fastest (with
// the packed weights' path beside it, even untaken, the software adapter ran MNIST 7 %
// slower).
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

// Q neurons per thread, weights of any width: where a sample's input events are many (a wide
// layer's thousands of input spikes per sample), each event's weights to the Q neurons are
// read together (one word where they are packed in 8 bits), which divides the per-event loop
// work by Q; and every program whose weights are packed.
@compute @workgroup_size(WG)
fn quad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = wg.y * P.grid_x + wg.x;
    let sample = block / P.blocks;
    let j0 = ((block % P.blocks) * WG + lid) * Q;
    if (sample >= P.samples || j0 >= P.neurons) {
        return;
    }
    let n = P.neurons;
    let valid = min(Q, n - j0);
    var e = input[2u * sample];
    let end = input[2u * sample + 1u];
    // Packed weights: each neuron's sums are shifted left by its shift (at the start of
    // `program`), exact in integers as the sums of the shifted weights are.
    var shifts = vec4<u32>(0u);
    if (P.wbits != 32u) {
        shifts.x = program[j0];
        if (valid > 1u) {
            shifts.y = program[j0 + 1u];
        }
        if (valid > 2u) {
            shifts.z = program[j0 + 2u];
        }
        if (valid > 3u) {
            shifts.w = program[j0 + 3u];
        }
    }
    var s: array<State, Q>;
    var peak: array<f32, Q>;
    // Loops over the Q neurons have a constant count, so that the compiler unrolls them and
    // keeps `s` and `peak` in registers (with a count of `valid` the software adapter kept
    // them in memory: MNIST 2.5x slower).
    for (var i = 0u; i < Q; i++) {
        tick();
        if (i < valid) {
            s[i] = State(0.0, coeffs[j0 + i].v_init, 0u);
        }
        peak[i] = bitcast<f32>(0xff800000u);
    }
    for (var t = 0u; t < P.steps; t++) {
        tick();
        var acc = vec4<i32>(0);
        while (e < end && input[e] + P.delay == t) {
            tick();
            acc += weights(input[e + 1u] * n + j0, valid);
            e += 2u;
        }
        acc = acc << shifts;
        let base = noise_base(P.noise_seed, P.noise_sample + sample, t);
        for (var i = 0u; i < Q; i++) {
            tick();
            if (i < valid) {
                let j = j0 + i;
                let c = coeffs[j];
                let r = lif_step(c, s[i], acc[i], membrane_noise(c, base), P.zero);
                s[i] = r.next;
                peak[i] = max(peak[i], r.v);
                record(sample, t, j, r);
            }
        }
    }
    for (var i = 0u; i < Q; i++) {
        tick();
        if (i < valid) {
            record_peak(sample, j0 + i, peak[i]);
        }
    }
    report_iterations();
}
