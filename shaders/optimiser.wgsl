// The optimiser step on the device (src/backend/gpu/optimiser.rs owns this file): Adam with
// the weight regulariser reg·mean(w⁴) and the clamp to the chip's range (`adam`, one thread
// per weight, the regulariser's loss summed per workgroup in a fixed tree), the weights mapped
// onto the substrate (quantised in emulated mode), each target's summed absolute mapped input
// (`bounds_dense`, `bounds_sparse`) and from those each population's fixed-point exponent
// (`exponents`), as src/train/optimiser.rs and src/compile.rs `WeightStage` compute them.
// weights.wgsl then writes the fixed-point weights into the partitions' programs.

// Mirrors `OptParams` in src/backend/gpu/optimiser.rs.
struct OptParams {
    // The projection's first weight in w, m, v, g and mapped, and its weight count.
    w_base: u32,
    numel: u32,
    lr: f32,
    limit: f32,
    // Regulariser strength over the weight count.
    reg_n: f32,
    inv_c1: f32,
    inv_c2: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    // 1: weights are quantised to ±map_max / map_scale.
    quantised: u32,
    map_scale: f32,
    map_max: f32,
    // First `scalars` word of this dispatch's workgroup partial sums (adam).
    partial_base: u32,
    // Bounds: source and target neurons, the target's bounds in `scalars`, 1 if this
    // projection is the first into its target (it writes instead of adding), the sparse
    // by-target list in `topo` (nt + 1 offsets, then weight indices).
    ns: u32,
    nt: u32,
    bound_base: u32,
    first_into: u32,
    by_target: u32,
    // Exponents: populations with inputs, their (neurons, bounds' start, population) triples
    // from `pop_table` in `topo`, and where the (scale, input scale) pair of population p goes
    // in `scalars` (exp_base + 2p).
    populations: u32,
    pop_table: u32,
    exp_base: u32,
    grid_x: u32,
    pad0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> O: OptParams;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> mapped: array<f32>;
// Regulariser partial sums | per-neuron bounds | per-population (scale, input scale).
@group(0) @binding(6) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(7) var<storage, read> topo: array<u32>;

var<workgroup> part: array<f32, WG>;

fn thread_index(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * O.grid_x + wg.x) * WG + lid;
}

// Round half away from zero, as Rust's f32::round.
fn round_away(x: f32) -> f32 {
    let t = trunc(x);
    return select(t, t + sign(x), abs(x - t) >= 0.5);
}

fn map_weight(x: f32) -> f32 {
    if (O.quantised == 0u) {
        return x;
    }
    return clamp(round_away(x * O.map_scale), -O.map_max, O.map_max) / O.map_scale;
}

@compute @workgroup_size(WG)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = thread_index(wg, lid);
    var loss = 0.0;
    if (i < O.numel) {
        let k = O.w_base + i;
        let x = w[k];
        let w3 = x * x * x;
        loss = O.reg_n * (w3 * x);
        let grad = g[k] + 4.0 * O.reg_n * w3;
        let mk = O.b1 * m[k] + (1.0 - O.b1) * grad;
        let vk = O.b2 * v[k] + (1.0 - O.b2) * grad * grad;
        let step = O.lr * (mk * O.inv_c1) / (sqrt(vk * O.inv_c2) + O.eps);
        let nw = clamp(x - step, -O.limit, O.limit);
        m[k] = mk;
        v[k] = vk;
        w[k] = nw;
        mapped[k] = map_weight(nw);
    }
    // The workgroup's regulariser loss, summed in a fixed tree.
    part[lid] = loss;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            part[lid] += part[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        scalars[O.partial_base + wg.y * O.grid_x + wg.x] = part[0];
    }
}

fn add_bound(post: u32, sum: f32) {
    let at = O.bound_base + post;
    if (O.first_into != 0u) {
        scalars[at] = sum;
    } else {
        scalars[at] = scalars[at] + sum;
    }
}

// One thread per target of a dense projection: its row's summed absolute mapped weight.
@compute @workgroup_size(WG)
fn bounds_dense(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let post = thread_index(wg, lid);
    if (post >= O.nt) {
        return;
    }
    let row = O.w_base + post * O.ns;
    var sum = 0.0;
    for (var pre = 0u; pre < O.ns; pre++) {
        sum += abs(mapped[row + pre]);
    }
    add_bound(post, sum);
}

// One thread per target of a sparse projection, over its weights (by-target list).
@compute @workgroup_size(WG)
fn bounds_sparse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let post = thread_index(wg, lid);
    if (post >= O.nt) {
        return;
    }
    let lo = topo[O.by_target + post];
    let hi = topo[O.by_target + post + 1u];
    let list = O.by_target + O.nt + 1u;
    var sum = 0.0;
    for (var e = lo; e < hi; e++) {
        sum += abs(mapped[O.w_base + topo[list + e]]);
    }
    add_bound(post, sum);
}

// The exponent e of src/compile.rs `fixed_point_exponent` for a bound: floor(log2(2^23 /
// bound)), read off the bound's bits (exact), within [−100, 60]; 24 for no input.
fn exponent(bound: f32) -> i32 {
    if (!(bound > 0.0)) {
        return 24;
    }
    let bits = bitcast<u32>(bound);
    let e = i32((bits >> 23u) & 255u) - 127;
    if (e == -127) {
        return 60;
    }
    if (e == 128) {
        return -100;
    }
    let mantissa = bits & 0x7fffffu;
    return clamp(select(22 - e, 23 - e, mantissa == 0u), -100, 60);
}

// 2^e exactly, for e in [−126, 127] (`exp2` need not be exact).
fn power_of_two(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

// One thread per population (with neurons that receive input): its largest bound, its
// exponent, then the scale 2^e and the input scale 2^−e.
@compute @workgroup_size(WG)
fn exponents(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = thread_index(wg, lid);
    if (p >= O.populations) {
        return;
    }
    let neurons = topo[O.pop_table + 3u * p];
    let base = topo[O.pop_table + 3u * p + 1u];
    let pop = topo[O.pop_table + 3u * p + 2u];
    var most = 0.0;
    for (var j = 0u; j < neurons; j++) {
        most = max(most, scalars[base + j]);
    }
    let e = exponent(most);
    scalars[O.exp_base + 2u * pop] = power_of_two(e);
    scalars[O.exp_base + 2u * pop + 1u] = power_of_two(-e);
}
