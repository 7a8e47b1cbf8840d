// The backward pass through time on the device (src/backend/gpu/backward.rs owns this file),
// one population at a time, targets before sources, exactly the model of
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
    // This population's [sample][step][neuron] region in `mem` and `gi`.
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
    pad0: u32,
    pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> B: BackParams;
@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read_write> gi: array<f32>;
@group(0) @binding(3) var<storage, read_write> raster: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> events: array<u32>;
// Outgoing-projection records: (weights' first index, target neurons, delay, dense, target's
// region in gi, sparse by-source list, source neurons, 0); sparse lists: neurons + 1 offsets,
// then (target, weight index) pairs.
@group(0) @binding(5) var<storage, read> topo: array<u32>;
@group(0) @binding(6) var<storage, read> w: array<f32>;
// loss.wgsl's direct gradients on the readout: per (sample, class) (step, value bits), the
// step with FROM set where the value is for every step from it on (a score over a span).
@group(0) @binding(7) var<storage, read> per_sample: array<u32>;

// As in loss.wgsl: a direct gradient's step word with this bit set applies from the step in
// its other bits on.
const FROM: u32 = 0x80000000u;

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

fn spiked(s: u32, t: u32, n: u32) -> bool {
    let word = atomicLoad(&raster[B.raster_base + (s * B.steps + t) * B.words + n / 32u]);
    return ((word >> (n % 32u)) & 1u) != 0u;
}

// The gradient on neuron n's spike at step t of sample s: `reg` plus what its outgoing
// projections carry back (the targets' current gradients d steps later), added in the CPU's
// order.
fn spike_gradient(s: u32, t: u32, n: u32, reg: f32) -> f32 {
    var g = reg;
    for (var q = 0u; q < B.out_count; q++) {
        let r = B.out_first + 8u * q;
        let w0 = topo[r];
        let nt = topo[r + 1u];
        let d = topo[r + 2u];
        let dense = topo[r + 3u];
        let tgt = topo[r + 4u];
        let list = topo[r + 5u];
        let ns = topo[r + 6u];
        if (t + d >= B.steps) {
            continue;
        }
        let row = tgt + (s * B.steps + t + d) * nt;
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
    let i = thread_index(wg, lid);
    let s = i / B.neurons;
    let n = i % B.neurons;
    if (s >= B.samples) {
        return;
    }
    var reg = 0.0;
    if (B.spiking != 0u) {
        var count = 0u;
        for (var t = 0u; t < B.steps; t++) {
            count += select(0u, 1u, spiked(s, t, n));
        }
        let k = f32(count);
        reg = B.lam * 4.0 * (k * k * k) / (B.batch * f32(B.neurons));
    }
    var gv = 0.0;
    var carry = 0.0;
    for (var r = 0u; r < B.steps; r++) {
        let t = B.steps - 1u - r;
        let at = B.mem_base + (s * B.steps + t) * B.neurons + n;
        var gpre: f32;
        if (B.spiking != 0u) {
            let gs = spike_gradient(s, t, n, reg);
            let x = B.alpha * abs(mem[at] - B.v_th) + 1.0;
            gpre = select(gv, 0.0, spiked(s, t, n)) + gs / (x * x);
        } else {
            gpre = gv;
            let d = 2u * (s * B.neurons + n);
            let when = per_sample[d];
            if (when == t || (when >= FROM && t >= when - FROM)) {
                gpre += bitcast<f32>(per_sample[d + 1u]);
            }
        }
        // hxtorch's order: this step's current reaches the loss through the next step's
        // membrane, which `carry` already holds.
        var gcur = carry + B.k_mem * gpre;
        if (B.membrane_first != 0u) {
            gcur = carry;
        }
        gi[at] = gcur;
        gv = (1.0 - B.k_mem) * gpre;
        carry = B.a_syn * gcur;
        if (B.membrane_first != 0u) {
            carry += B.k_mem * gpre;
        }
    }
}

// A population that projects onto itself (a recurrent loop of one population): the gradient on
// a spike at step t needs the population's own current gradients d ≥ 1 steps later, so all its
// neurons of a sample step back together. One workgroup per sample; its invocations share the
// neurons, keep their state in workgroup memory and meet at a barrier after every step (the
// CPU walks a loop's members the same way, src/train/backward.rs).
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
    for (var n = lid; n < B.neurons; n += WG) {
        var reg = 0.0;
        if (B.spiking != 0u) {
            var count = 0u;
            for (var t = 0u; t < B.steps; t++) {
                count += select(0u, 1u, spiked(s, t, n));
            }
            let k = f32(count);
            reg = B.lam * 4.0 * (k * k * k) / (B.batch * f32(B.neurons));
        }
        loop_reg[n] = reg;
        loop_gv[n] = 0.0;
        loop_carry[n] = 0.0;
    }
    for (var r = 0u; r < B.steps; r++) {
        let t = B.steps - 1u - r;
        for (var n = lid; n < B.neurons; n += WG) {
            let at = B.mem_base + (s * B.steps + t) * B.neurons + n;
            let gs = spike_gradient(s, t, n, loop_reg[n]);
            let x = B.alpha * abs(mem[at] - B.v_th) + 1.0;
            let gpre = select(loop_gv[n], 0.0, spiked(s, t, n)) + gs / (x * x);
            var gcur = loop_carry[n] + B.k_mem * gpre;
            if (B.membrane_first != 0u) {
                gcur = loop_carry[n];
            }
            gi[at] = gcur;
            loop_gv[n] = (1.0 - B.k_mem) * gpre;
            var carry = B.a_syn * gcur;
            if (B.membrane_first != 0u) {
                carry += B.k_mem * gpre;
            }
            loop_carry[n] = carry;
        }
        // This step's current gradients are read by every neuron at step t − d.
        storageBarrier();
    }
}
