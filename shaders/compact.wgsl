// Turns the spike bits a simulation kernel wrote ([sample][step][word], one bit per neuron)
// into compact events, so that only spikes that happened are read back. Each sample's steps
// are cut into `segments` runs of `seg_steps` steps (one run for all but the widest
// programs, whose runs keep a thread's loop within the software adapter's limit), one thread
// per (sample, run): `count` writes each run's spike count, `scan` turns the counts into
// offsets (one workgroup), `emit` writes each run's events in (step, neuron) order as flat
// indices step·neurons + neuron, at most `capacity` in all (the host grows the buffer and runs
// `emit` again when they do not fit). Runs follow each other, so offsets[s · segments] is
// sample s's first event. src/backend/gpu/compact.rs owns this file.

// Mirrors `CompactParams` in src/backend/gpu/compact.rs.
struct CompactParams {
    samples: u32,
    steps: u32,
    words: u32,
    neurons: u32,
    capacity: u32,
    grid_x: u32,
    segments: u32,
    seg_steps: u32,
}

override WG: u32 = 64u;
const SCAN_WG: u32 = 256u;

@group(0) @binding(0) var<uniform> C: CompactParams;
@group(0) @binding(1) var<storage, read> bits: array<u32>;
// offsets[0..=samples]: offsets[s] is the first event of sample s.
@group(0) @binding(2) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> events: array<u32>;

var<workgroup> partial: array<u32, SCAN_WG>;

fn entry_of(wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * C.grid_x + wg.x) * WG + lid;
}

// The first word of the run's sample and the run's steps.
fn run_of(e: u32) -> vec3<u32> {
    let s = e / C.segments;
    let t0 = (e % C.segments) * C.seg_steps;
    return vec3<u32>(s * C.steps * C.words, t0, min(C.steps, t0 + C.seg_steps));
}

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = entry_of(wg, lid);
    if (e == 0u) {
        offsets[0] = 0u;
    }
    if (e >= C.samples * C.segments) {
        return;
    }
    let r = run_of(e);
    var c = 0u;
    for (var k = r.y * C.words; k < r.z * C.words; k++) {
        c += countOneBits(bits[r.x + k]);
    }
    offsets[e + 1u] = c;
}

// Inclusive prefix sum of offsets[1..=runs] by one workgroup: each thread sums a contiguous
// range, the range sums are scanned, then each thread rewrites its range.
@compute @workgroup_size(SCAN_WG)
fn scan(@builtin(local_invocation_index) lid: u32) {
    let runs = C.samples * C.segments;
    let per = (runs + SCAN_WG - 1u) / SCAN_WG;
    let lo = 1u + min(lid * per, runs);
    let hi = 1u + min(lo - 1u + per, runs);
    var sum = 0u;
    for (var k = lo; k < hi; k++) {
        sum += offsets[k];
    }
    partial[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var run = 0u;
        for (var k = 0u; k < SCAN_WG; k++) {
            let x = partial[k];
            partial[k] = run;
            run += x;
        }
    }
    workgroupBarrier();
    var run = partial[lid];
    for (var k = lo; k < hi; k++) {
        run += offsets[k];
        offsets[k] = run;
    }
}

@compute @workgroup_size(WG)
fn emit(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = entry_of(wg, lid);
    if (e >= C.samples * C.segments) {
        return;
    }
    var at = offsets[e];
    let r = run_of(e);
    for (var t = r.y; t < r.z; t++) {
        for (var w = 0u; w < C.words; w++) {
            var word = bits[r.x + t * C.words + w];
            while (word != 0u) {
                let b = firstTrailingBit(word);
                if (at < C.capacity) {
                    events[at] = t * C.neurons + w * 32u + b;
                }
                at++;
                word &= word - 1u;
            }
        }
    }
}
