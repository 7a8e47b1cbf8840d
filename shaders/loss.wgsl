// The loss of a training batch on the device (src/backend/gpu/loss.rs owns this file): per
// sample, the readout's score (maximum over time of its recorded membrane, × readout_scale),
// log-softmax cross-entropy, the readout regulariser, and the direct gradient on the readout
// membrane at each class's time of maximum. The same f32 operations as src/train/backward.rs
// `sample_backward` (its first part); one thread per sample.

// Mirrors `LossParams` in src/backend/gpu/loss.rs.
struct LossParams {
    samples: u32,
    steps: u32,
    classes: u32,
    // First word of the readout's [sample][step][class] region in `mem`.
    mem_base: u32,
    // Samples of the whole batch (gradients are of its mean), as f32.
    batch: f32,
    readout_scale: f32,
    reg_readout: f32,
    // Samples of the batch before this chunk (labels are indexed from the batch's start).
    first: u32,
    grid_x: u32,
    // Where the batch's per-sample (loss, correct) pairs start in `per_sample`.
    stats_base: u32,
    pad0: u32,
    pad1: u32,
}

override WG: u32 = 64u;
// Most classes a readout may have on the device (the scores stay in registers).
const MAX_CLASSES: u32 = 64u;

@group(0) @binding(0) var<uniform> L: LossParams;
@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
// Per sample of the chunk: `classes` pairs (step of the maximum, gradient as f32 bits); from
// `stats_base`, per sample of the batch: (loss, correct as f32).
@group(0) @binding(3) var<storage, read_write> per_sample: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = (wg.y * L.grid_x + wg.x) * WG + lid;
    if (s >= L.samples) {
        return;
    }
    let c = L.classes;
    var score: array<f32, MAX_CLASSES>;
    var at: array<u32, MAX_CLASSES>;
    for (var k = 0u; k < c; k++) {
        score[k] = bitcast<f32>(0xff800000u);
        at[k] = 0u;
    }
    let base = L.mem_base + s * L.steps * c;
    for (var t = 0u; t < L.steps; t++) {
        for (var k = 0u; k < c; k++) {
            let v = mem[base + t * c + k] * L.readout_scale;
            if (v > score[k]) {
                score[k] = v;
                at[k] = t;
            }
        }
    }
    // log-sum-exp as src/train/loss.rs: the largest, then the log of the shifted sum.
    var top = bitcast<f32>(0xff800000u);
    for (var k = 0u; k < c; k++) {
        top = max(top, score[k]);
    }
    var sum = 0.0;
    for (var k = 0u; k < c; k++) {
        sum += exp(score[k] - top);
    }
    let lse = top + log(sum);
    let label = labels[L.first + s];
    var best = 0u;
    for (var k = 1u; k < c; k++) {
        if (score[k] > score[best]) {
            best = k;
        }
    }
    var loss = lse - score[label];
    var reg = 0.0;
    let pairs = s * c;
    for (var k = 0u; k < c; k++) {
        let p = exp(score[k] - lse);
        var d = (p - select(0.0, 1.0, k == label)) / L.batch;
        let s3 = score[k] * score[k] * score[k];
        d += L.reg_readout * 4.0 * s3 / (L.batch * f32(c));
        reg += L.reg_readout * (s3 * score[k]) / f32(c);
        per_sample[2u * (pairs + k)] = at[k];
        per_sample[2u * (pairs + k) + 1u] = bitcast<u32>(L.readout_scale * d);
    }
    let stats = L.stats_base + 2u * (L.first + s);
    per_sample[stats] = bitcast<u32>(loss + reg);
    per_sample[stats + 1u] = bitcast<u32>(select(0.0, 1.0, best == label));
}
