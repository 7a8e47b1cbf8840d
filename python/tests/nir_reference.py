"""An independent step-by-step integration of a NIR graph, written from the NIR
specification's equations (nir 1.0.8 docstrings) and not calling neuropart:

    CubaLIF  I ← I + dt/τ_syn·(−I + w_in·S);  v ← v + dt/τ_mem·(v_leak − v + r·I)
    CubaLI   the same without firing
    LIF, LI  v ← v + dt/τ·(v_leak − v + r·S)
    IF, I    v ← v + dt·r·S
    spiking nodes fire when v > v_threshold, then v ← v_reset; every state starts at 0.

S is the sum of everything a node receives this step. Nodes are evaluated once per step in a
topological order of the graph; an edge that points backwards in that order (a recurrent
edge) delivers the value its source had one step earlier (before the first step: a weight
node's response to no spikes, its bias). Weight nodes (Linear, Affine,
Conv1d/2d, SumPool2d/AvgPool2d, Flatten, Scale) act within the step, on arrays shaped as the
node's input. All in float64.
"""

import numpy as np

NEURONS = {"CubaLIF", "CubaLI", "LIF", "LI", "IF", "I"}
SPIKING = {"CubaLIF", "LIF", "IF"}


def kind(n):
    return type(n).__name__


def inline(graph):
    """Nodes and edges with nested graphs inlined (`outer.inner`); a subgraph's Input and
    Output become pass-through nodes; edges naming `x` where only `x.input`/`x.output`
    exist are redirected there."""
    nodes, edges, passthrough = {}, [], set()

    def rec(prefix, g):
        for k, n in g.nodes.items():
            if kind(n) == "NIRGraph":
                rec(prefix + k + ".", n)
                for k2, n2 in n.nodes.items():
                    if kind(n2) in ("Input", "Output"):
                        passthrough.add(prefix + k + "." + k2)
            else:
                nodes[prefix + k] = n
        for a, b in g.edges:
            edges.append((prefix + a, prefix + b))

    rec("", graph)
    fixed = []
    for a, b in edges:
        if a not in nodes:
            outs = [k for k in nodes if k.startswith(a + ".") and kind(nodes[k]) == "Output"]
            passthrough.update(outs)
            a = outs[0]
        if b not in nodes:
            ins = [k for k in nodes if k.startswith(b + ".") and kind(nodes[k]) == "Input"]
            passthrough.update(ins)
            b = ins[0]
        fixed.append((a, b))
    return nodes, list(dict.fromkeys(fixed)), passthrough


def _pair(v, n):
    a = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return tuple(int(a[0]) for _ in range(n)) if a.size == 1 else tuple(int(x) for x in a[:n])


def conv(x, w, stride, pad, dil, groups):
    """x [C, *spatial] (1 or 2 spatial dims); direct sum over output positions."""
    dims = x.ndim - 1
    xp = np.pad(x, [(0, 0)] + [(p, p) for p in pad])
    k = w.shape[2:]
    osz = [(x.shape[1 + i] + 2 * pad[i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1
           for i in range(dims)]
    out = np.zeros([w.shape[0]] + osz)
    cin = x.shape[0] // groups
    cout = w.shape[0] // groups
    for o in range(w.shape[0]):
        g = o // cout
        for pos in np.ndindex(*osz):
            idx = tuple(slice(pos[i] * stride[i], pos[i] * stride[i] + dil[i] * (k[i] - 1) + 1,
                              dil[i]) for i in range(dims))
            out[(o,) + pos] = np.sum(xp[(slice(g * cin, (g + 1) * cin),) + idx] * w[o])
    return out


def pool(x, k, s, p, avg):
    xp = np.pad(x, [(0, 0), (p[0], p[0]), (p[1], p[1])])
    oh = (x.shape[1] + 2 * p[0] - k[0]) // s[0] + 1
    ow = (x.shape[2] + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((x.shape[0], oh, ow))
    for y in range(oh):
        for z in range(ow):
            out[:, y, z] = xp[:, y * s[0]:y * s[0] + k[0], z * s[1]:z * s[1] + k[1]].sum(axis=(1, 2))
    return out / (k[0] * k[1]) if avg else out


def linear_node(n, x):
    t = kind(n)
    if t == "Linear":
        return np.asarray(n.weight, float) @ x.ravel()
    if t == "Affine":
        return np.asarray(n.weight, float) @ x.ravel() + np.asarray(n.bias, float).ravel()
    if t == "Flatten":
        return x.ravel()
    if t == "Scale":
        return x * np.asarray(n.scale, float)
    if t in ("Conv1d", "Conv2d"):
        dims = 1 if t == "Conv1d" else 2
        w = np.asarray(n.weight, float)
        if x.ndim == dims:
            x = x[None]
        pad = n.padding
        if isinstance(pad, str):
            pad = [0] * dims if pad == "valid" else [(d * (kk - 1)) // 2 for kk, d in
                                                     zip(w.shape[2:], _pair(n.dilation, dims))]
        y = conv(x, w, _pair(n.stride, dims), _pair(pad, dims), _pair(n.dilation, dims),
                 int(n.groups))
        b = np.asarray(n.bias, float).ravel()
        if b.size:
            y = y + b.reshape((-1,) + (1,) * dims)
        return y
    if t in ("SumPool2d", "AvgPool2d"):
        if x.ndim == 2:
            x = x[None]
        return pool(x, _pair(n.kernel_size, 2), _pair(n.stride, 2), _pair(n.padding, 2),
                    t == "AvgPool2d")
    raise NotImplementedError(t)


def integrate(graph, inputs, dt, steps):
    """inputs: Input node name -> array [T, *shape] (one sample). Returns node name -> array
    [T, *shape] of every neuron node's output (spikes as 0/1 or membranes) and every Output's
    value."""
    nodes, edges, passthrough = inline(graph)
    succ = {k: [] for k in nodes}
    pred = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    # Topological order by depth-first search from the inputs (recurrent edges point back).
    order, state = [], {}

    def dfs(k):
        state[k] = 1
        for m in succ[k]:
            if m not in state:
                dfs(m)
        order.append(k)

    for k in sorted(inputs):
        dfs(k)
    order.reverse()
    pos = {k: i for i, k in enumerate(order)}
    prev = {k: None for k in order}
    cur = {}
    neuron_state = {}
    out = {k: [] for k in order if kind(nodes[k]) in NEURONS or kind(nodes[k]) == "Output"}
    for t in range(steps):
        cur = {}
        for k in order:
            n = nodes[k]
            tk = kind(n)
            if tk == "Input" and k not in passthrough:
                cur[k] = np.asarray(inputs[k][t], float)
                continue
            s = None
            for p in pred[k]:
                if p not in pos:
                    continue
                v = cur[p] if pos[p] < pos[k] else prev[p]
                if v is None:
                    # Before the first step a recurrent weight node has seen no spikes: it
                    # gives its bias.
                    if kind(nodes[p]) != "Affine":
                        continue
                    v = np.asarray(nodes[p].bias, float).ravel()
                s = v.copy() if s is None else s + v.reshape(s.shape)
            if s is None:
                s = np.zeros(1)
            if tk in NEURONS:
                shape = np.asarray(getattr(n, "v_threshold", getattr(n, "r"))).shape
                if shape == ():
                    shape = s.shape
                s = s.reshape(shape) if s.size == int(np.prod(shape)) else s
                i, v = neuron_state.get(k, (np.zeros(shape), np.zeros(shape)))
                f = lambda a: np.asarray(a, float)  # noqa: E731
                if tk in ("CubaLIF", "CubaLI"):
                    i = i + dt / f(n.tau_syn) * (-i + f(n.w_in) * s)
                    v = v + dt / f(n.tau_mem) * (f(n.v_leak) - v + f(n.r) * i)
                elif tk in ("LIF", "LI"):
                    v = v + dt / f(n.tau) * (f(n.v_leak) - v + f(n.r) * s)
                else:
                    v = v + dt * f(n.r) * s
                if tk in SPIKING:
                    z = (v > f(n.v_threshold)).astype(float)
                    v = np.where(z > 0, f(n.v_reset) if n.v_reset is not None else 0.0, v)
                    y = z
                else:
                    y = v.copy()
                neuron_state[k] = (i, v)
                cur[k] = y
                out[k].append(y)
            elif tk == "Output" or k in passthrough:
                cur[k] = s
                if tk == "Output" and k not in passthrough:
                    out[k].append(s)
            else:
                cur[k] = linear_node(n, s)
        prev = cur
    return {k: np.stack(v) for k, v in out.items() if v}
