// The replay on the device: builds one partition's input for a chunk of samples from the
// device copy of the batch's spike store, which holds every source population once. One
// thread per sample walks the sample's events of each source population, keeps those that are
// channels of the partition (through its channel tables) and writes them in step order as
// (step, channel) pairs, the input the simulation kernels read. src/backend/gpu/gather.rs owns
// this file.
//
// store = directory (one region start per population) | regions. A region is
// [neurons, offsets (store_samples + 1), events], each event the flat index step·neurons +
// neuron, every sample's events ascending (sorted by step, then neuron).
// input = [start, end] per sample of the chunk | (step, channel) pairs.

override WG: u32 = 64u;
// Most source populations one partition reads on the GPU (`MAX_SOURCES` in
// src/backend/gpu/mod.rs).
const MAX_SOURCES: u32 = 16u;

@group(0) @binding(0) var<uniform> P: Params;
// The partition's program: source table (4 words per source) and channel tables.
@group(0) @binding(1) var<storage, read> program: array<u32>;
@group(0) @binding(2) var<storage, read> store: array<u32>;
@group(0) @binding(3) var<storage, read_write> input: array<u32>;

// One source population, resolved for one sample.
struct Source {
    // Its neurons (events of step t lie in [t·size, (t+1)·size)).
    size: u32,
    // Next and end event, and the chunk's first event (absolute indices into `store`).
    next: u32,
    end: u32,
    first: u32,
    // Neuron n is channel program[lut + n − span_start] (u32 max: none) when
    // n − span_start < span_len.
    span_start: u32,
    span_len: u32,
    lut: u32,
}

fn open_source(b: u32, sample: u32) -> Source {
    let t = P.source_base + 4u * b;
    let region = store[program[t]];
    var s: Source;
    s.size = store[region];
    let events = region + 2u + P.store_samples;
    let gs = P.store_sample + sample;
    s.next = events + store[region + 1u + gs];
    s.end = events + store[region + 2u + gs];
    s.first = events + store[region + 1u + P.store_sample];
    s.span_start = program[t + 1u];
    s.span_len = program[t + 2u];
    s.lut = program[t + 3u];
    return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sample = (wg.y * P.gather_grid_x + wg.x) * WG + lid;
    if (sample >= P.samples) {
        return;
    }
    var src: array<Source, MAX_SOURCES>;
    // This sample's pairs start after those every source could give the chunk's earlier
    // samples.
    var before = 0u;
    for (var b = 0u; b < P.sources; b++) {
        src[b] = open_source(b, sample);
        before += src[b].next - src[b].first;
    }
    var at = 2u * P.samples + 2u * before;
    input[2u * sample] = at;
    for (var t = 0u; t < P.steps; t++) {
        for (var b = 0u; b < P.sources; b++) {
            let limit = (t + 1u) * src[b].size;
            let low = t * src[b].size + src[b].span_start;
            while (src[b].next < src[b].end && store[src[b].next] < limit) {
                let k = store[src[b].next] - low;
                if (k < src[b].span_len) {
                    let ch = program[src[b].lut + k];
                    if (ch != 0xffffffffu) {
                        input[at] = t;
                        input[at + 1u] = ch;
                        at += 2u;
                    }
                }
                src[b].next++;
            }
        }
    }
    input[2u * sample + 1u] = at;
}
