// Integrates a feed-forward partition (one stage, no synapses between its own neurons, one
// delay for all inputs) for a chunk of samples: the time loop inside, no barriers and no
// atomics on the input, QN neurons of one sample per thread. Each thread walks its sample's
// input events (built by gather.wgsl) and reads its neurons' weights for each from a dense
// matrix, blocked so that a workgroup's weights lie together ([block][channel][thread of the
// block], src/backend/gpu/feedforward.rs `position`): 32-bit words in `program`, or, for
// programs too large for that (a fused wave), packed in 8 or 16 bits in a texture.
// Same model as lif.wgsl and src/neuron.rs `lif_step`; bindings as declared in neuron.wgsl
// (src/backend/gpu/feedforward.rs owns this file, its pipeline constants and the layout).
//
// The software adapter (llvmpipe) runs every branch of a kernel under lane masks, and each
// storage-buffer load as a loop over its lanes: the paths not taken cost as much as the one
// taken. So the weights' width is a pipeline constant (each width compiles only its own path),
// up to two events of a step are one texel fetch, and a thread's weights for one event are one
// vec4 load. The packed weights are a texture, because a texel fetch is one vector gather
// there (with no branch per lane): the large network's wide layer read its weights 5x faster
// than from a buffer.

override WG: u32 = 256u;
// The weights: 32 (words in `program`), 16 or 8 (packed in `weights`).
override WBITS: u32 = 32u;
// Texels (vec4s of packed words) per row of `weights`.
override TEXW: u32 = 4096u;
// Neurons per thread: 4 for 32-bit weights; for packed weights the neurons of one
// vec4 of words (8 at 16 bits, 16 at 8 bits).
override QN: u32 = 4u;
// The most neurons per thread (QN's largest value).
const QMAX: u32 = 16u;
// Threads side by side along the neurons: a workgroup is WG / LANES samples times LANES
// threads of QN neurons each, so that the samples' walks read the same stretch of weights
// (every channel's weights to LANES * QN neurons) one after another and find it in the cache.
override LANES: u32 = 8u;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// 32-bit weights: the dense fixed-point weights, blocked as the packed ones below; packed:
// the neurons' shifts | source table | luts | CADC table; read as vec4s (`program_word`).
@group(0) @binding(2) var<storage, read> program: array<vec4<u32>>;
// Spike bits [sample][step][word] | loop-count word.
@group(0) @binding(6) var<storage, read_write> bits: array<atomic<u32>>;
// [sample][step][neuron] (trace) or [sample][neuron] (maximum).
@group(0) @binding(7) var<storage, read_write> membrane: array<f32>;
// Packed weights, blocked as the 32-bit ones, a vec4 of words per texel, TEXW texels a row.
@group(0) @binding(8) var weights: texture_2d<u32>;
// The input, as gather.wgsl wrote it into binding 3 ([start, end] per sample, in words: twice
// the pair index | (step, channel) pairs), copied into a texture laid out as `weights`, two
// pairs a texel: read from there for the same reason as the weights.
@group(0) @binding(9) var input_texture: texture_2d<u32>;

// Vec4 `at` of the packed weights.
fn packed_vec(at: u32) -> vec4<u32> {
    return textureLoad(weights, vec2<u32>(at % TEXW, at / TEXW), 0);
}

// Texel `i` of the input: pairs 2i and 2i + 1.
fn input_texel(i: u32) -> vec4<u32> {
    return textureLoad(input_texture, vec2<u32>(i % TEXW, i / TEXW), 0);
}

// Word `i` of the program (neuron.wgsl reads the CADC table through this).
fn program_word(i: u32) -> u32 {
    return program[i >> 2u][i & 3u];
}

// A sample's input events as pair indices: [first, end).
fn events_of(sample: u32) -> vec2<u32> {
    let v = input_texel(sample >> 1u);
    return select(v.xy, v.zw, (sample & 1u) == 1u) / vec2<u32>(2u);
}

// A thread's synaptic sums for one step: a<b> holds the sums of the neurons in bits b of each
// word of a vec4 of weights (32 bits: neuron c in component c of a0; 16: neuron 2c + b in
// component c of a<b>; 8: neuron 4c + b), as separate vectors: the software adapter keeps an
// array updated under a loop's lane mask in memory and writes it lane by lane.
struct Sums {
    a0: vec4<i32>,
    a1: vec4<i32>,
    a2: vec4<i32>,
    a3: vec4<i32>,
}

// `s` with the weights of input channel `channel` to a thread's neurons added; `mine` is the
// index of the thread's vec4 of weights for channel 0.
fn add_channel(s: Sums, mine: u32, channel: u32) -> Sums {
    var r = s;
    if (WBITS == 32u) {
        r.a0 += bitcast<vec4<i32>>(program[mine + channel * LANES]);
    } else {
        // The weights' bits to the top, then an arithmetic shift back (sign extension).
        let w = bitcast<vec4<i32>>(packed_vec(mine + channel * LANES));
        let top = vec4<u32>(32u - WBITS);
        if (WBITS == 16u) {
            r.a0 += (w << vec4<u32>(16u)) >> top;
            r.a1 += w >> top;
        } else {
            r.a0 += (w << vec4<u32>(24u)) >> top;
            r.a1 += (w << vec4<u32>(16u)) >> top;
            r.a2 += (w << vec4<u32>(8u)) >> top;
            r.a3 += w >> top;
        }
    }
    return r;
}

// QN neurons of one sample per thread: each event's weights to the QN neurons are one vec4,
// which divides the per-event loop work by QN. A thread's neurons lie in one word of spike
// bits (QN divides 32), set once per step.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = wg.y * P.grid_x + wg.x;
    let sample = (block / P.blocks) * (WG / LANES) + lid / LANES;
    let g = (block % P.blocks) * LANES + lid % LANES;
    let j0 = g * QN;
    if (sample >= P.samples || j0 >= P.neurons) {
        return;
    }
    let n = P.neurons;
    let valid = min(QN, n - j0);
    // This thread's vec4 of weights for channel 0, and weights per word.
    let mine = (g / LANES) * P.channels * LANES + g % LANES;
    let per = 32u / WBITS;
    let range = events_of(sample);
    var e = range.x;
    // Loops over the QN neurons have a constant count (a pipeline constant), so that the
    // compiler can unroll them and keep the neurons' state in registers (with a count of
    // `valid` the software adapter kept four neurons' state in memory: MNIST 2.5x slower).
    // Coefficients are read once, not every step.
    var cs: array<Coeffs, QMAX>;
    var s: array<State, QMAX>;
    var peak: array<f32, QMAX>;
    // Packed weights: each neuron's sums are shifted left by its shift (at the start of
    // `program`), exact in integers as the sums of the shifted weights are.
    var shift: array<u32, QMAX>;
    for (var i = 0u; i < QN; i++) {
        tick();
        if (i < valid) {
            cs[i] = coeffs[j0 + i];
            s[i] = State(0.0, cs[i].v_init, 0u);
            if (WBITS != 32u) {
                shift[i] = program_word(j0 + i);
            }
        }
        peak[i] = bitcast<f32>(0xff800000u);
    }
    for (var t = 0u; t < P.steps; t++) {
        tick();
        var sums = Sums(vec4<i32>(0), vec4<i32>(0), vec4<i32>(0), vec4<i32>(0));
        while (e < range.y) {
            tick();
            // Two (step, channel) pairs a texel: the pair at e and, when e is even, the one
            // after it if it is of this step too: one fetch of the input for two events (the
            // large network's wide layer on the software adapter 1.25x faster than a fetch
            // per event).
            let v = input_texel(e >> 1u);
            let odd = (e & 1u) == 1u;
            let ev = select(v.xy, v.zw, odd);
            if (ev.x + P.delay != t) {
                break;
            }
            sums = add_channel(sums, mine, ev.y);
            e += 1u;
            if (!odd && e < range.y && v.z + P.delay == t) {
                sums = add_channel(sums, mine, v.w);
                e += 1u;
            }
        }
        let acc = array<vec4<i32>, 4>(sums.a0, sums.a1, sums.a2, sums.a3);
        let base = noise_base(P.noise_seed, P.noise_sample + sample, t);
        var word = 0u;
        for (var i = 0u; i < QN; i++) {
            tick();
            if (i < valid) {
                let j = j0 + i;
                var x = acc[i % per][i / per];
                if (WBITS != 32u) {
                    x = x << shift[i];
                }
                let r = lif_step(cs[i], s[i], x, membrane_noise(cs[i], base), P.zero);
                s[i] = r.next;
                peak[i] = max(peak[i], r.v);
                record_membrane(sample, t, j, r.v);
                word |= select(0u, 1u << (j % 32u), r.spike);
            }
        }
        if (word != 0u) {
            atomicOr(&bits[(sample * P.steps + t) * P.words + j0 / 32u], word);
        }
    }
    for (var i = 0u; i < QN; i++) {
        tick();
        if (i < valid) {
            record_peak(sample, j0 + i, peak[i]);
        }
    }
    report_iterations();
}
