// The backward pass through time on the device (src/backend/gpu/backward.rs owns this file),
// one population (or recurrent loop) at a time, targets before sources, exactly the model of
// src/train/backward.rs: the gradient on each neuron's spikes (the spike-count regulariser
// plus what its outgoing projections carry back from their targets' current gradients), then
// the reverse-time recursion through membrane and synaptic current with the SuperSpike
// surrogate (the reset is not differentiated), writing the current gradient `gi`
// [sample][step][neuron] that the weight gradients (grad.wgsl) and the populations upstream
// read. `raster` first turns a population's recorded spikes into bits.

// Mirrors `BackParams` in src/backend/gpu/backward.rs.
struct BackParams {
    samples: u32,
    steps: u32,
    neurons: u32,
    // This population's [sample][step][neuron] region in `mem` and `gi` (`stride` words from
    // one step's row to the next: its neurons, or those of the partition it shares).
    mem_base: u32,
    // Its [sample][step][word] region in `raster` (words = ceil(neurons / 32)).
    raster_base: u32,
    words: u32,
    // Its spikes by neuron in `events`: neurons + 1 offsets (relative to the list), then
    // sample·steps + step per spike.
    csr_base: u32,
    // 1 for a spiking population, 0 for the readout (direct gradients from loss.wgsl).
    spiking: u32,
    k_mem: f32,
    a_syn: f32,
    v_th: f32,
    alpha: f32,
    // Spike-count regulariser: lam·4·count³ / (batch · neurons) per step.
    lam: f32,
    batch: f32,
    // Its outgoing projections: `out_count` records of 8 words from `out_first` in `topo`.
    out_first: u32,
    out_count: u32,
    grid_x: u32,
    // 1: the membrane integrates the previous step's current (hxtorch's order).
    membrane_first: u32,
    // backward_loop: the loop's populations, and where their records (MEMBER words each, in
    // the order they step back) start in `events`.
    members: u32,
    member_table: u32,
    stride: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> B: BackParams;
@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read_write> gi: array<f32>;
@group(0) @binding(3) var<storage, read_write> raster: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> events: array<u32>;
// Outgoing-projection records: (weights' first index, target neurons, delay, dense, target's
// region in gi, sparse by-source list, source neurons, target's stride in gi); sparse lists:
// neurons + 1 offsets, then (target, weight index) pairs.
@group(0) @binding(5) var<storage, read> topo: array<u32>;
@group(0) @binding(6) var<storage, read> w: array<f32>;
// loss.wgsl's direct gradients on the readout: per (sample, class) (step, value bits), the
// step with FROM set where the value is for every step from it on (a score over a span).
@group(0) @binding(7) var<storage, read> per_sample: array<u32>;

// As in loss.wgsl: a direct gradient's step word with this bit set applies from the step in
// its other bits on.
const FROM: u32 = 0x80000000u;

// What the backward pass of one population reads: `pop_of_params` (the dispatch's
// population) or `member` (one of a loop's, from its record in `events`).
struct Pop {
    neurons: u32,
    mem_base: u32,
    stride: u32,
    raster_base: u32,
    words: u32,
    csr_base: u32,
    spiking: u32,
    out_first: u32,
    out_count: u32,
    membrane_first: u32,
    k_mem: f32,
    a_syn: f32,
    v_th: f32,
}

// Words of a loop member's record: the fields of `Pop` in order (f32 as bits).
const MEMBER: u32 = 13u;

fn pop_of_params() -> Pop {
    return Pop(B.neurons, B.mem_base, B.stride, B.raster_base, B.words, B.csr_base, B.spiking,
        B.out_first, B.out_count, B.membrane_first, B.k_mem, B.a_syn, B.v_th);
}

fn member(m: u32) -> Pop {
    let r = B.member_table + MEMBER * m;
    return Pop(events[r], events[r + 1u], events[r + 2u], events[r + 3u], events[r + 4u],
        events[r + 5u], events[r + 6u], events[r + 7u], events[r + 8u], events[r + 9u],
        bitcast<f32>(events[r + 10u]), bitcast<f32>(events[r + 11u]),
        bitcast<f32>(events[r + 12u]));
}

fn thread_index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * B.grid_x + wg.x) * WG + lid;
}

// One thread per neuron: its spikes of the chunk into the raster.
@compute @workgroup_size(WG)
fn raster_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = thread_index(wg, lid);
    if (n >= B.neurons) {
        return;
    }
    let lo = events[B.csr_base + n];
    let hi = events[B.csr_base + n + 1u];
    let list = B.csr_base + B.neurons + 1u;
    for (var e = lo; e < hi; e++) {
        let st = events[list + e];
        atomicOr(&raster[B.raster_base + st * B.words + n / 32u], 1u << (n % 32u));
    }
}

fn spiked(P: Pop, s: u32, t: u32, n: u32) -> bool {
    let word = atomicLoad(&raster[P.raster_base + (s * B.steps + t) * P.words + n / 32u]);
    return ((word >> (n % 32u)) & 1u) != 0u;
}

// The spike-count regulariser's gradient on each spike of neuron n of sample s.
fn regulariser(P: Pop, s: u32, n: u32) -> f32 {
    if (P.spiking == 0u) {
        return 0.0;
    }
    var count = 0u;
    for (var t = 0u; t < B.steps; t++) {
        count += select(0u, 1u, spiked(P, s, t, n));
    }
    let k = f32(count);
    return B.lam * 4.0 * (k * k * k) / (B.batch * f32(P.neurons));
}

// The gradient on neuron n's spike at step t of sample s: `reg` plus what its outgoing
// projections carry back (the targets' current gradients d steps later), added in a fixed
// order: the CPU's, but for a loop's own targets, which the CPU adds step by step as it walks
// back (the sums then differ in rounding).
fn spike_gradient(P: Pop, s: u32, t: u32, n: u32, reg: f32) -> f32 {
    var g = reg;
    for (var q = 0u; q < P.out_count; q++) {
        let r = P.out_first + 8u * q;
        let w0 = topo[r];
        let nt = topo[r + 1u];
        let d = topo[r + 2u];
        let dense = topo[r + 3u];
        let tgt = topo[r + 4u];
        let list = topo[r + 5u];
        let ns = topo[r + 6u];
        let stride = topo[r + 7u];
        if (t + d >= B.steps) {
            continue;
        }
        let row = tgt + (s * B.steps + t + d) * stride;
        if (dense != 0u) {
            for (var post = 0u; post < nt; post++) {
                g += w[w0 + post * ns + n] * gi[row + post];
            }
        } else {
            let lo = topo[list + n];
            let hi = topo[list + n + 1u];
            let pairs = list + ns + 1u;
            for (var e = lo; e < hi; e++) {
                g += w[w0 + topo[pairs + 2u * e + 1u]] * gi[row + topo[pairs + 2u * e]];
            }
        }
    }
    return g;
}

// One thread per (sample, neuron): the recursion from the last step back to the first.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let P = pop_of_params();
    let i = thread_index(wg, lid);
    let s = i / P.neurons;
    let n = i % P.neurons;
    if (s >= B.samples) {
        return;
    }
    let reg = regulariser(P, s, n);
    var gv = 0.0;
    var carry = 0.0;
    for (var r = 0u; r < B.steps; r++) {
        let t = B.steps - 1u - r;
        let at = P.mem_base + (s * B.steps + t) * P.stride + n;
        var gpre: f32;
        if (P.spiking != 0u) {
            let gs = spike_gradient(P, s, t, n, reg);
            let x = B.alpha * abs(mem[at] - P.v_th) + 1.0;
            gpre = select(gv, 0.0, spiked(P, s, t, n)) + gs / (x * x);
        } else {
            gpre = gv;
            let d = 2u * (s * P.neurons + n);
            let when = per_sample[d];
            if (when == t || (when >= FROM && t >= when - FROM)) {
                gpre += bitcast<f32>(per_sample[d + 1u]);
            }
        }
        // hxtorch's order: this step's current reaches the loss through the next step's
        // membrane, which `carry` already holds.
        var gcur = carry + P.k_mem * gpre;
        if (P.membrane_first != 0u) {
            gcur = carry;
        }
        gi[at] = gcur;
        gv = (1.0 - P.k_mem) * gpre;
        carry = P.a_syn * gcur;
        if (P.membrane_first != 0u) {
            carry += P.k_mem * gpre;
        }
    }
}

// A recurrent loop (a population that projects onto itself, or several that project onto
// each other): the gradient on a spike at step t needs its targets' current gradients d steps
// later, some of them the loop's own, so all the loop's neurons of a sample step back
// together. One workgroup per sample; its invocations share each member's neurons, keep their
// state in workgroup memory (the members one after another) and meet at a barrier after every
// step, the members in the order the CPU walks them (src/train/backward.rs).
const MAX_LOOP: u32 = 1024u;
var<workgroup> loop_gv: array<f32, MAX_LOOP>;
var<workgroup> loop_carry: array<f32, MAX_LOOP>;
var<workgroup> loop_reg: array<f32, MAX_LOOP>;

@compute @workgroup_size(WG)
fn backward_loop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.y * B.grid_x + wg.x;
    if (s >= B.samples) {
        return;
    }
    var off = 0u;
    for (var m = 0u; m < B.members; m++) {
        let P = member(m);
        for (var n = lid; n < P.neurons; n += WG) {
            loop_reg[off + n] = regulariser(P, s, n);
            loop_gv[off + n] = 0.0;
            loop_carry[off + n] = 0.0;
        }
        off += P.neurons;
    }
    for (var r = 0u; r < B.steps; r++) {
        let t = B.steps - 1u - r;
        off = 0u;
        for (var m = 0u; m < B.members; m++) {
            let P = member(m);
            for (var n = lid; n < P.neurons; n += WG) {
                let k = off + n;
                let at = P.mem_base + (s * B.steps + t) * P.stride + n;
                let gs = spike_gradient(P, s, t, n, loop_reg[k]);
                let x = B.alpha * abs(mem[at] - P.v_th) + 1.0;
                let gpre = select(loop_gv[k], 0.0, spiked(P, s, t, n)) + gs / (x * x);
                var gcur = loop_carry[k] + P.k_mem * gpre;
                if (P.membrane_first != 0u) {
                    gcur = loop_carry[k];
                }
                gi[at] = gcur;
                loop_gv[k] = (1.0 - P.k_mem) * gpre;
                var carry = P.a_syn * gcur;
                if (P.membrane_first != 0u) {
                    carry += P.k_mem * gpre;
                }
                loop_carry[k] = carry;
            }
            off += P.neurons;
        }
        // This step's current gradients are read by every member at step t − d (a loop's
        // projections have d >= 1: `effective_delays` adds a step inside a component).
        storageBarrier();
    }
}
