"""An independent numpy reference of the discrete neuron model the tests compare neuropart
with (written from REFERENCE.md's equations, not calling neuropart):

    input first (default):  i ← a·i + Σ w·s;  v ← v + k·(v_leak − v + i)
    hxtorch:                v ← v + k·(v_leak − v + i);  i ← a·i + Σ w·s
    a = 1 − 1/τ_syn, k = 1/τ_mem (τ in steps); spike when v ≥ ϑ (spiking neurons), then
    v ← v_reset; a spike of step t reaches its targets in step t.

All arithmetic in float32 in the same order as the model, so dyadic weights give bit-equal
results.
"""

import numpy as np


def simulate(pops, projs, inputs, steps, update="input_first"):
    """pops: list of dicts (name, size, kind, tau_mem, tau_syn, v_leak, v_th, v_reset) in
    topological order; projs: list of (source, target, dense weight matrix [target, source]);
    inputs: name -> bool [batch, T, n]. Returns name -> spikes (bool) or membranes (float32),
    [batch, T, n]."""
    f = np.float32
    batch = next(iter(inputs.values())).shape[0]
    out = {}
    state = {}
    for p in pops:
        if p["kind"] == "input":
            out[p["name"]] = inputs[p["name"]].astype(bool)
            continue
        n = p["size"]
        state[p["name"]] = (
            np.zeros((batch, n), f),
            np.full((batch, n), f(p["v_leak"]), f),
        )
        out[p["name"]] = np.zeros((batch, steps, n), bool if p["kind"] == "lif" else f)
    for t in range(steps):
        for p in pops:
            if p["kind"] == "input":
                continue
            name = p["name"]
            a = f(1.0) - f(1.0) / f(p["tau_syn"])
            k = f(1.0) / f(p["tau_mem"])
            inp = np.zeros((batch, p["size"]), f)
            for src, tgt, w in projs:
                if tgt == name:
                    inp = inp + (out[src][:, t, :].astype(f) @ w.T.astype(f)).astype(f)
            i, v = state[name]
            if update == "hxtorch":
                v = (v + k * ((f(p["v_leak"]) - v) + i)).astype(f)
                i = (a * i + inp).astype(f)
            else:
                i = (a * i + inp).astype(f)
                v = (v + k * ((f(p["v_leak"]) - v) + i)).astype(f)
            if p["kind"] == "lif":
                spike = v >= f(p["v_th"])
                out[name][:, t, :] = spike
                v = np.where(spike, f(p["v_reset"]), v).astype(f)
            else:
                out[name][:, t, :] = v
            state[name] = (i, v)
    return out


def conv2d(x, w, stride, padding):
    """x [c_in, h, w], w [c_out, c_in, k, k] → [c_out, oh, ow] (cross-correlation, zero
    padding), in float32."""
    c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    xp = np.zeros((c_in, h + 2 * padding, wd + 2 * padding), np.float32)
    xp[:, padding:padding + h, padding:padding + wd] = x
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    out = np.zeros((c_out, oh, ow), np.float32)
    for o in range(c_out):
        for y in range(oh):
            for z in range(ow):
                patch = xp[:, y * stride:y * stride + k, z * stride:z * stride + k]
                out[o, y, z] = np.float32((patch * w[o]).sum(dtype=np.float64))
    return out


def conv_matrix(shape_in, w, stride, padding):
    """The dense [target, source] matrix of a convolution, built by applying it to unit
    images (for the reference simulator)."""
    n_in = int(np.prod(shape_in))
    cols = []
    for j in range(n_in):
        e = np.zeros(n_in, np.float32)
        e[j] = 1.0
        cols.append(conv2d(e.reshape(shape_in), w, stride, padding).ravel())
    return np.stack(cols, axis=1)
