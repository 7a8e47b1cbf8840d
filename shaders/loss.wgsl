// The loss of a training batch on the device (src/backend/gpu/loss.rs owns this file): per
// sample, the readout's score (of its recorded membrane, × readout_scale: the maximum over
// time, the mean over the last steps or the sum over all), log-softmax cross-entropy, the
// readout regulariser, and the direct gradient on the readout membrane: at each class's time
// of maximum, or one value for every step from the first the score reads. The same f32
// operations as src/train/backward.rs `sample_scores` and `sample_loss` (its first part); one
// thread per sample.

// Mirrors `LossParams` in src/backend/gpu/loss.rs.
struct LossParams {
    samples: u32,
    steps: u32,
    classes: u32,
    // First word of the readout's [sample][step][class] region in `mem` (rows of `stride`
    // words: its classes, or the neurons of the program it shares).
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
    // SCORE_MAX, SCORE_LAST or SCORE_SUM.
    score: u32,
    // With SCORE_LAST: the steps it averages.
    last: u32,
    // Words from one step's row of the readout's region to the next.
    stride: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// Mirror SCORE_MAX, SCORE_LAST, SCORE_SUM in src/backend/gpu/loss.rs.
const SCORE_MAX: u32 = 0u;
const SCORE_LAST: u32 = 1u;
const SCORE_SUM: u32 = 2u;
// A direct gradient's step word with this bit set: the value applies to every step from the
// word's other bits on (backward.wgsl reads it so).
const FROM: u32 = 0x80000000u;

override WG: u32 = 64u;
// Most classes a readout may have on the device (the scores stay in registers).
const MAX_CLASSES: u32 = 64u;

@group(0) @binding(0) var<uniform> L: LossParams;
@group(0) @binding(1) var<storage, read> mem: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
// Per sample of the chunk: `classes` pairs (step of the maximum, or FROM | first step of a
// score over a span, and the gradient on each of its steps as f32 bits); from
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
    let base = L.mem_base + s * L.steps * L.stride;
    if (L.score == SCORE_MAX) {
        for (var t = 0u; t < L.steps; t++) {
            for (var k = 0u; k < c; k++) {
                let v = mem[base + t * L.stride + k] * L.readout_scale;
                if (v > score[k]) {
                    score[k] = v;
                    at[k] = t;
                }
            }
        }
    } else {
        // The membrane summed in time order over the steps the score reads, then (the mean of
        // the last steps) divided by their number, then scaled.
        var first = 0u;
        if (L.score == SCORE_LAST) {
            first = L.steps - L.last;
        }
        for (var k = 0u; k < c; k++) {
            score[k] = 0.0;
            at[k] = FROM | first;
        }
        for (var t = first; t < L.steps; t++) {
            for (var k = 0u; k < c; k++) {
                score[k] += mem[base + t * L.stride + k];
            }
        }
        for (var k = 0u; k < c; k++) {
            if (L.score == SCORE_LAST) {
                score[k] = score[k] / f32(L.last);
            }
            score[k] = score[k] * L.readout_scale;
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
        var g = L.readout_scale * d;
        if (L.score == SCORE_LAST) {
            g = g / f32(L.last);
        }
        per_sample[2u * (pairs + k)] = at[k];
        per_sample[2u * (pairs + k) + 1u] = bitcast<u32>(g);
    }
    let stats = L.stats_base + 2u * (L.first + s);
    per_sample[stats] = bitcast<u32>(loss + reg);
    per_sample[stats + 1u] = bitcast<u32>(select(0.0, 1.0, best == label));
}
