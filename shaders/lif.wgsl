// Integrates one partition for a chunk of samples: one workgroup per sample, the partition's
// neurons spread over the workgroup's threads, the whole time loop inside the shader (one
// dispatch per partition per chunk). Mirrors `lif_step` in src/neuron.rs and `run_sample` in
// src/backend/cpu.rs line by line; binding numbers match src/gpu/lif.rs.
//
// Synaptic input is accumulated in fixed point with integer atomics, so the sums do not depend
// on the order in which threads add them and GPU spikes equal CPU spikes.

override WG: u32 = 64u;

struct Coeffs {
    a_syn: f32,
    k_mem: f32,
    v_leak: f32,
    v_reset: f32,
    v_th: f32,
    refractory_steps: u32,
    spiking: u32,
    weight_gain: f32,
    input_scale: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

struct State {
    i: f32,
    v: f32,
    refractory: u32,
}

struct Params {
    neurons: u32,
    channels: u32,
    steps: u32,
    slots: u32,
    stages: u32,
    samples: u32,
    grid_x: u32,
    out_capacity: u32,
    record_membrane: u32,
    syn_off_base: u32,
    syn_base: u32,
    events_base: u32,
    blocks: u32,
    delay: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
// Per local neuron.
@group(0) @binding(1) var<storage, read> coeffs: array<Coeffs>;
// stage bounds (stages + 1) | synapse offsets (channels + neurons + 1) | synapses (target, delay, weight bits)
@group(0) @binding(2) var<storage, read> program: array<u32>;
// sample offsets (samples + 1) | events (step, channel)
@group(0) @binding(3) var<storage, read> input: array<u32>;
@group(0) @binding(4) var<storage, read_write> state: array<State>;
// [sample][slot][neuron] pending input of the next `slots` steps
@group(0) @binding(5) var<storage, read_write> pending: array<atomic<i32>>;
// spike counts (samples) | events (samples x out_capacity x (step, neuron))
@group(0) @binding(6) var<storage, read_write> output: array<atomic<u32>>;
// [sample][step][neuron], written only when record_membrane != 0
@group(0) @binding(7) var<storage, read_write> membrane: array<f32>;

var<workgroup> cursor: u32;
var<workgroup> step_end: u32;

// Add the weights of source `src` (channel, or channels + local neuron) spiking at step `t`
// to the pending input of their targets; threads `lane, lane + stride, ...` share the list.
fn deliver(src: u32, t: u32, sample: u32, lane: u32, stride: u32) {
    let a = program[P.syn_off_base + src];
    let b = program[P.syn_off_base + src + 1u];
    for (var k = a + lane; k < b; k += stride) {
        let base = P.syn_base + 3u * k;
        let tgt = program[base];
        let when = t + program[base + 1u];
        if (when < P.steps) {
            let w = bitcast<i32>(program[base + 2u]);
            atomicAdd(&pending[(sample * P.slots + when % P.slots) * P.neurons + tgt], w);
        }
    }
}

struct Step {
    next: State,
    spike: bool,
    // Membrane before reset.
    v: f32,
}

// One step of one neuron: src/neuron.rs `lif_step`.
fn lif_step(c: Coeffs, s: State, input: i32) -> Step {
    let i = c.a_syn * s.i + c.weight_gain * (f32(input) * c.input_scale);
    let refractory = s.refractory > 0u;
    let integrated = s.v + c.k_mem * (c.v_leak - s.v + i);
    let v = select(integrated, c.v_reset, refractory);
    let spike = !refractory && c.spiking != 0u && v >= c.v_th;
    var out: Step;
    out.next.i = i;
    out.next.v = select(v, c.v_reset, spike);
    out.next.refractory = select(select(0u, s.refractory - 1u, refractory), c.refractory_steps, spike);
    out.spike = spike;
    out.v = v;
    return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sample = wg.y * P.grid_x + wg.x;
    if (sample >= P.samples) {
        return;
    }
    let n = P.neurons;
    for (var j = lid; j < n; j += WG) {
        state[sample * n + j] = State(0.0, coeffs[j].v_leak, 0u);
    }
    for (var k = lid; k < P.slots * n; k += WG) {
        atomicStore(&pending[sample * P.slots * n + k], 0);
    }
    if (lid == 0u) {
        atomicStore(&output[sample], 0u);
        cursor = input[sample];
    }
    let in_end = input[sample + 1u];
    storageBarrier();
    workgroupBarrier();
    for (var t = 0u; t < P.steps; t++) {
        // Input events of this step: a contiguous run of the sample's sorted events.
        if (lid == 0u) {
            var c = cursor;
            while (c < in_end && input[P.events_base + 2u * c] == t) {
                c++;
            }
            step_end = c;
        }
        workgroupBarrier();
        let c0 = cursor;
        let c1 = step_end;
        for (var e = c0; e < c1; e++) {
            deliver(input[P.events_base + 2u * e + 1u], t, sample, lid, WG);
        }
        storageBarrier();
        workgroupBarrier();
        let slot = (sample * P.slots + t % P.slots) * n;
        for (var st = 0u; st < P.stages; st++) {
            let lo = program[st];
            let hi = program[st + 1u];
            for (var j = lo + lid; j < hi; j += WG) {
                let r = lif_step(coeffs[j], state[sample * n + j], atomicLoad(&pending[slot + j]));
                state[sample * n + j] = r.next;
                if (P.record_membrane != 0u) {
                    membrane[(sample * P.steps + t) * n + j] = r.v;
                }
                if (r.spike) {
                    let idx = atomicAdd(&output[sample], 1u);
                    if (idx < P.out_capacity) {
                        let at = P.samples + 2u * (sample * P.out_capacity + idx);
                        atomicStore(&output[at], t);
                        atomicStore(&output[at + 1u], j);
                    }
                    deliver(P.channels + j, t, sample, 0u, 1u);
                }
            }
            storageBarrier();
            workgroupBarrier();
        }
        for (var j = lid; j < n; j += WG) {
            atomicStore(&pending[slot + j], 0);
        }
        if (lid == 0u) {
            cursor = step_end;
        }
        storageBarrier();
        workgroupBarrier();
    }
}
