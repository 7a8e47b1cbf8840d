// Weight gradients on the device (src/backend/gpu/grad.rs owns this file): for every weight,
// the sum over its source neuron's spikes (sample s, step t; in sample order) of the target's
// current gradient at step t + delay. No atomics: every output has one thread, which sums in a
// fixed order, so the result is the same run after run. A batch trained in chunks adds each
// chunk's sums to the previous chunks' (`first` = 0), in chunk order.

// Mirrors `GradParams` in src/backend/gpu/grad.rs.
struct GradParams {
    steps: u32,
    // Source and target neurons.
    ns: u32,
    nt: u32,
    delay: u32,
    // The projection's first weight in `g`.
    w_base: u32,
    // The target's [sample][step][neuron] region in `gi` (`tgt_stride` words from one step's
    // row to the next).
    tgt_base: u32,
    // The source's spikes by neuron in `events`: ns + 1 offsets, then sample·steps + step.
    csr_base: u32,
    // 1: the gradients replace what `g` holds (the batch's first chunk); 0: they add to it.
    first: u32,
    // Sparse projections: their by-source list in `topo` (ns + 1 offsets, then (target,
    // weight index) pairs), their weights' synapse lists (numel + 1 offsets, then synapse
    // indices), the synapse count and the weight count.
    list: u32,
    by_weight: u32,
    synapses: u32,
    numel: u32,
    grid_x: u32,
    tgt_stride: u32,
    pad0: u32,
    pad1: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> G: GradParams;
@group(0) @binding(1) var<storage, read> gi: array<f32>;
@group(0) @binding(2) var<storage, read> events: array<u32>;
@group(0) @binding(3) var<storage, read> topo: array<u32>;
@group(0) @binding(4) var<storage, read_write> g: array<f32>;
// Per synapse of a sparse projection, this chunk's gradient.
@group(0) @binding(5) var<storage, read_write> syn_grad: array<f32>;

fn thread_index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * G.grid_x + wg.x) * WG + lid;
}

// Sum over source `pre`'s spikes of target `post`'s current gradient `delay` steps later.
fn summed(pre: u32, post: u32) -> f32 {
    let lo = events[G.csr_base + pre];
    let hi = events[G.csr_base + pre + 1u];
    let list = G.csr_base + G.ns + 1u;
    var acc = 0.0;
    for (var e = lo; e < hi; e++) {
        let st = events[list + e];
        let t = st % G.steps + G.delay;
        if (t < G.steps) {
            acc += gi[G.tgt_base + (st - st % G.steps + t) * G.tgt_stride + post];
        }
    }
    return acc;
}

fn accumulate(at: u32, x: f32) {
    if (G.first != 0u) {
        g[at] = x;
    } else {
        g[at] = g[at] + x;
    }
}

// A dense projection (weights [target][source]): one thread per weight, the targets of one
// source side by side (their reads of `gi` are adjacent).
@compute @workgroup_size(WG)
fn dense(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wg, lid);
    if (i >= G.ns * G.nt) {
        return;
    }
    let pre = i / G.nt;
    let post = i % G.nt;
    accumulate(G.w_base + post * G.ns + pre, summed(pre, post));
}

// A sparse projection, first per synapse (in by-source order)...
@compute @workgroup_size(WG)
fn synapses(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = thread_index(wg, lid);
    if (j >= G.synapses) {
        return;
    }
    // The source of synapse j: the last offset at or below j.
    var lo = 0u;
    var hi = G.ns;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (topo[G.list + mid] <= j) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let post = topo[G.list + G.ns + 1u + 2u * j];
    syn_grad[j] = summed(lo, post);
}

// ...then per weight, over the synapses that share it in by-source order.
@compute @workgroup_size(WG)
fn weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = thread_index(wg, lid);
    if (k >= G.numel) {
        return;
    }
    let lo = topo[G.by_weight + k];
    let hi = topo[G.by_weight + k + 1u];
    let list = G.by_weight + G.numel + 1u;
    var acc = 0.0;
    for (var e = lo; e < hi; e++) {
        acc += syn_grad[topo[list + e]];
    }
    accumulate(G.w_base + k, acc);
}
