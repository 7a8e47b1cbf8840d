// Integrates any partition (stages, synapses between its own neurons, delays) for a chunk of
// samples: one workgroup per sample, the partition's neurons spread over the workgroup's
// threads, the whole time loop inside the shader (one dispatch per partition per chunk). The
// same model and order of work as `run_sample` in src/backend/cpu.rs; bindings as declared in
// neuron.wgsl (src/backend/gpu/lif.rs owns this file).
//
// Synaptic input is accumulated in fixed point with integer atomics, so the sums do not depend
// on the order in which threads add them and GPU spikes equal CPU spikes.

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> P: Params;
// Per local neuron.
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// stage bounds (stages + 1) | synapse offsets (channels + neurons + 1) | synapses (target,
// delay, weight bits) | source table | luts | CADC table
@group(0) @binding(2) var<storage, read> program: array<u32>;
// [start, end] per sample | (step, channel) pairs, from gather.wgsl.
@group(0) @binding(3) var<storage, read> input: array<u32>;
@group(0) @binding(4) var<storage, read_write> state: array<State>;
// [sample][slot][neuron] pending input of the next `slots` steps
@group(0) @binding(5) var<storage, read_write> pending: array<atomic<i32>>;
// Spike bits [sample][step][word] | loop-count word.
@group(0) @binding(6) var<storage, read_write> bits: array<atomic<u32>>;
// [sample][step][neuron] (trace) or [sample][neuron] (maximum).
@group(0) @binding(7) var<storage, read_write> membrane: array<f32>;

// The input events of the current step are cursor..step_end.
var<workgroup> cursor: u32;
var<workgroup> step_end: u32;
// Neurons that spiked in the current stage and step; their synapses are delivered by the
// whole workgroup together (uniform loops: fast, and countable against the software adapter's
// loop limit).
const FIRED_MAX: u32 = 1024u;
var<workgroup> fired: array<u32, 1024>;
var<workgroup> fired_count: atomic<u32>;

// Word `i` of the program (neuron.wgsl reads the CADC table through this).
fn program_word(i: u32) -> u32 {
    return program[i];
}

// Add the weights of source `source` (channel, or channels + local neuron) spiking at step `t`
// to the pending input of their targets; threads `lane, lane + stride, ...` share the list.
fn deliver(source: u32, t: u32, sample: u32, lane: u32, stride: u32) {
    let a = program[P.syn_off_base + source];
    let b = program[P.syn_off_base + source + 1u];
    tick();
    for (var k = a + lane; k < b; k += stride) {
        tick();
        let base = P.syn_base + 3u * k;
        let tgt = program[base];
        let when = t + program[base + 1u];
        if (when < P.steps) {
            let w = bitcast<i32>(program[base + 2u]);
            atomicAdd(&pending[(sample * P.slots + when % P.slots) * P.neurons + tgt], w);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sample = wg.y * P.grid_x + wg.x;
    if (sample >= P.samples) {
        return;
    }
    let n = P.neurons;
    tick();
    for (var j = lid; j < n; j += WG) {
        tick();
        state[sample * n + j] = State(0.0, coeffs[j].v_init, 0u);
    }
    tick();
    for (var k = lid; k < P.slots * n; k += WG) {
        tick();
        atomicStore(&pending[sample * P.slots * n + k], 0);
    }
    if (lid == 0u) {
        cursor = input[2u * sample];
    }
    let in_end = input[2u * sample + 1u];
    var peak: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        peak[k] = bitcast<f32>(0xff800000u);
    }
    storageBarrier();
    workgroupBarrier();
    for (var t = 0u; t < P.steps; t++) {
        tick();
        // Input events of this step: a contiguous run of the sample's sorted events.
        if (lid == 0u) {
            var c = cursor;
            tick();
            while (c < in_end && input[c] == t) {
                tick();
                c += 2u;
            }
            step_end = c;
        }
        workgroupBarrier();
        let c0 = cursor;
        let c1 = step_end;
        tick();
        for (var e = c0; e < c1; e += 2u) {
            tick();
            deliver(input[e + 1u], t, sample, lid, WG);
        }
        storageBarrier();
        workgroupBarrier();
        let slot = (sample * P.slots + t % P.slots) * n;
        let base = noise_base(P.noise_seed, P.noise_sample + sample, t);
        for (var st = 0u; st < P.stages; st++) {
            tick();
            let lo = program[st];
            let hi = program[st + 1u];
            tick();
            for (var j = lo + lid; j < hi; j += WG) {
                tick();
                let c = coeffs[j];
                let noise = membrane_noise(c, base);
                let r = lif_step(c, state[sample * n + j], atomicLoad(&pending[slot + j]), noise, P.zero);
                state[sample * n + j] = r.next;
                let k = j / WG;
                if (k < 8u) {
                    peak[k] = max(peak[k], r.v);
                } else if (P.record == 1u) {
                    // More than 8 neurons per thread: keep the running maximum in the output.
                    let m = select(membrane[sample * n + j], bitcast<f32>(0xff800000u), t == 0u);
                    membrane[sample * n + j] = max(m, r.v);
                }
                record(sample, t, j, r);
                if (r.spike) {
                    let f = atomicAdd(&fired_count, 1u);
                    if (f < FIRED_MAX) {
                        fired[f] = j;
                    } else {
                        deliver(P.channels + j, t, sample, 0u, 1u);
                    }
                }
            }
            workgroupBarrier();
            let m = min(atomicLoad(&fired_count), FIRED_MAX);
            tick();
            for (var f = 0u; f < m; f++) {
                tick();
                deliver(P.channels + fired[f], t, sample, lid, WG);
            }
            storageBarrier();
            workgroupBarrier();
            if (lid == 0u) {
                atomicStore(&fired_count, 0u);
            }
            workgroupBarrier();
        }
        tick();
        for (var j = lid; j < n; j += WG) {
            tick();
            atomicStore(&pending[slot + j], 0);
        }
        if (lid == 0u) {
            cursor = step_end;
        }
        storageBarrier();
        workgroupBarrier();
    }
    for (var j = lid; j < n; j += WG) {
        let k = j / WG;
        if (k < 8u) {
            record_peak(sample, j, peak[k]);
        } else if (P.record == 1u) {
            record_peak(sample, j, membrane[sample * n + j]);
        }
    }
    report_iterations();
}
