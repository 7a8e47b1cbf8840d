"""Reading a NIR graph into the pieces neuropart builds a network from: nested graphs
flattened, pass-through nodes (Flatten, a subgraph's Input and Output, Scale, Delay) and
chains of weight nodes composed into one linear map per pair of populations.

Nothing here knows neuropart's network format; ``_nir.py`` maps the result onto it. Every
refusal names the node, its type and why.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

#: Neuron nodes: what becomes a population (a Threshold too: a neuron without memory).
NEURON_NODES = ("CubaLIF", "CubaLI", "LIF", "LI", "IF", "I", "Threshold")
#: Nodes that spike (their output is 0 or 1 per step).
SPIKING_NODES = ("CubaLIF", "LIF", "IF", "Threshold")
#: Linear nodes: composed along a path from one population to the next.
LINEAR_NODES = ("Linear", "Affine", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
                "Scale", "Delay")
#: Nodes a path passes unchanged (a nested graph's inner Input and Output after flattening).
IDENTITY = "Identity"


class Refusal(ValueError):
    """A graph neuropart cannot run, with the node, its type and the reason."""


def kind(node) -> str:
    return type(node).__name__


def node_shape(node) -> Optional[Tuple[int, ...]]:
    """The neuron shape of a neuron node from its parameters (None when they are scalars)."""
    for attr in ("v_threshold", "threshold", "r", "tau", "tau_mem", "v_leak"):
        v = getattr(node, attr, None)
        if v is not None:
            a = np.asarray(v)
            if a.size > 1 or a.size == 1 and a.ndim > 1:
                return tuple(int(x) for x in a.shape)
            if a.size == 1 and a.ndim == 1:
                return None  # one value: a scalar (nir writes scalars so), sized by its input
    return None


def input_shape(node) -> Tuple[int, ...]:
    it = getattr(node, "input_type", None) or {}
    v = it.get("input")
    if v is None:
        return ()
    return tuple(int(x) for x in np.asarray(v).ravel())


def flatten_graph(graph) -> Tuple[Dict[str, Any], List[Tuple[str, str]], List[str]]:
    """Nodes and edges with every nested NIRGraph inlined (inner nodes named
    ``outer.inner``; the subgraph's Input and Output nodes become identities), and edges that
    name a subgraph by its prefix alone (``lif1`` for ``lif1.input`` / ``lif1.output``, as
    some exporters write flattened graphs) resolved. Returns nodes, edges, notes."""
    notes: List[str] = []
    nodes: Dict[str, Any] = {}
    edges: List[Tuple[str, str]] = []
    entry: Dict[str, str] = {}
    exit_: Dict[str, str] = {}

    def inline(prefix: str, g) -> None:
        for k, n in g.nodes.items():
            name = f"{prefix}{k}"
            if kind(n) == "NIRGraph":
                inline(name + ".", n)
                ins = [k2 for k2, n2 in n.nodes.items() if kind(n2) == "Input"]
                outs = [k2 for k2, n2 in n.nodes.items() if kind(n2) == "Output"]
                if len(ins) != 1 or len(outs) != 1:
                    raise Refusal(
                        f"NIR node '{name}' (NIRGraph): a nested graph needs exactly one Input "
                        f"and one Output node to be inlined; it has {len(ins)} and {len(outs)}"
                    )
                entry[name] = f"{name}.{ins[0]}"
                exit_[name] = f"{name}.{outs[0]}"
                notes.append(f"nested NIRGraph '{name}' inlined")
            else:
                nodes[name] = n
        for a, b in g.edges:
            edges.append((f"{prefix}{a}", f"{prefix}{b}"))

    inline("", graph)
    # A nested graph's Input and Output pass values through.
    ident = {entry[g] for g in entry} | {exit_[g] for g in exit_}
    # Flattened graphs written with dotted names: 'lif1' standing for 'lif1.input' and
    # 'lif1.output' (Input and Output nodes of the former subgraph).
    for k in list(nodes):
        if "." in k and kind(nodes[k]) in ("Input", "Output"):
            prefix = k.rsplit(".", 1)[0]
            if prefix in nodes or k in ident:
                continue
            (entry if kind(nodes[k]) == "Input" else exit_).setdefault(prefix, k)
            ident.add(k)
    resolved = []
    for a, b in edges:
        a2 = exit_.get(a, a) if a not in nodes else a
        b2 = entry.get(b, b) if b not in nodes else b
        if a2 not in nodes or b2 not in nodes:
            missing = a2 if a2 not in nodes else b2
            raise Refusal(
                f"NIR edge ({a}, {b}) names node '{missing}', which is not in the graph (nor a "
                "subgraph's Input or Output): the file is inconsistent"
            )
        if a == b and a != a2 and b != b2:
            notes.append(f"edge ({a}, {b}) read as written: the subgraph's output fed back "
                         "into its input one to one")
        resolved.append((a2, b2))
    for k in ident:
        nodes[k] = _Identity(nodes[k])
    if ident and not notes:
        notes.append("the Input and Output nodes of a flattened subgraph passed through")
    return nodes, list(dict.fromkeys(resolved)), notes


class _Identity:
    """A subgraph's Input or Output after inlining: passes its input on."""

    def __init__(self, node):
        self.node = node


def node_kind(node) -> str:
    return IDENTITY if isinstance(node, _Identity) else kind(node)


# --- Linear maps -----------------------------------------------------------------------------


def _ints(v, n: int) -> Tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    if a.size == 1:
        a = np.repeat(a, n)
    return tuple(int(x) for x in a[:n])


def _conv_padding(name, node, k: Tuple[int, ...], stride, dilation) -> Tuple[int, ...]:
    pad = node.padding
    if isinstance(pad, (str, bytes, np.str_)):
        pad = pad.decode() if isinstance(pad, bytes) else str(pad)
        if pad == "valid":
            return tuple(0 for _ in k)
        if pad == "same" and all(s == 1 for s in stride):
            total = [d * (kk - 1) for kk, d in zip(k, dilation)]
            if all(t % 2 == 0 for t in total):
                return tuple(t // 2 for t in total)
        raise Refusal(
            f"NIR node '{name}' ({kind(node)}): padding '{pad}' with kernel {k}, stride "
            f"{stride} is asymmetric; neuropart pads both sides alike"
        )
    return _ints(pad, len(k))


def out_shape(name: str, node, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """Output shape of linear node `node` for input `shape` (refusing what does not fit)."""
    t = node_kind(node)
    n = int(np.prod(shape)) if shape else 1
    if t in (IDENTITY, "Scale", "Delay"):
        return shape
    if t == "Flatten":
        return (n,)
    if t in ("Linear", "Affine"):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise Refusal(f"NIR node '{name}' ({t}): weight of shape {list(w.shape)}, not [out, in]")
        if w.shape[1] != n:
            hint = (" (it looks transposed: [in, out] as JAX writes it)" if w.shape[0] == n else "")
            raise Refusal(
                f"NIR node '{name}' ({t}): weight [{w.shape[0]}, {w.shape[1]}] does not fit its "
                f"input of {n} values{hint}"
            )
        return (int(w.shape[0]),)
    if t in ("Conv1d", "Conv2d"):
        dims = 1 if t == "Conv1d" else 2
        w = np.asarray(node.weight)
        if len(shape) == dims:
            shape = (1,) + tuple(shape)
        if len(shape) != dims + 1:
            raise Refusal(f"NIR node '{name}' ({t}): input of shape {list(shape)}, not [C, {'L' if dims == 1 else 'H, W'}]")
        groups = int(node.groups)
        if w.ndim != dims + 2 or w.shape[1] * groups != shape[0]:
            raise Refusal(
                f"NIR node '{name}' ({t}): weight {list(w.shape)} with groups {groups} does not "
                f"fit an input of {shape[0]} channels"
            )
        k = tuple(int(x) for x in w.shape[2:])
        stride, dil = _ints(node.stride, dims), _ints(node.dilation, dims)
        pad = _conv_padding(name, node, k, stride, dil)
        sizes = tuple((shape[1 + i] + 2 * pad[i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1
                      for i in range(dims))
        return (int(w.shape[0]),) + sizes
    if t in ("SumPool2d", "AvgPool2d"):
        if len(shape) == 2:
            shape = (1,) + tuple(shape)
        if len(shape) != 3:
            raise Refusal(f"NIR node '{name}' ({t}): input of shape {list(shape)}, not [C, H, W]")
        k, s, p = _ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2)
        return (shape[0],) + tuple((shape[1 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2))
    raise Refusal(f"NIR node '{name}' ({t}) is not a linear node")


def apply(name: str, node, x: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Apply linear node `node` (without bias) to the batch `x` [B, *shape] (float64)."""
    t = node_kind(node)
    b = x.shape[0]
    if t in (IDENTITY, "Delay"):
        return x
    if t == "Flatten":
        return x.reshape(b, -1)
    if t == "Scale":
        return x * np.broadcast_to(np.asarray(node.scale, np.float64), shape)[None]
    if t in ("Linear", "Affine"):
        return x.reshape(b, -1) @ np.asarray(node.weight, np.float64).T
    if t in ("Conv1d", "Conv2d"):
        dims = 1 if t == "Conv1d" else 2
        if len(shape) == dims:
            shape = (1,) + tuple(shape)
        x = x.reshape((b,) + tuple(shape))
        w = np.asarray(node.weight, np.float64)
        k = w.shape[2:]
        stride, dil = _ints(node.stride, dims), _ints(node.dilation, dims)
        pad = _conv_padding(name, node, k, stride, dil)
        groups = int(node.groups)
        osz = out_shape(name, node, shape)[1:]
        xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
        out = np.zeros((b, w.shape[0]) + tuple(osz))
        cin, cout = shape[0] // groups, w.shape[0] // groups
        for off in np.ndindex(*k):
            sl = tuple(slice(off[i] * dil[i], off[i] * dil[i] + stride[i] * (osz[i] - 1) + 1,
                             stride[i]) for i in range(dims))
            patch = xp[(slice(None), slice(None)) + sl]
            for g in range(groups):
                wk = w[(slice(g * cout, (g + 1) * cout), slice(None)) + tuple(off)]
                out[:, g * cout:(g + 1) * cout] += np.einsum(
                    "bc...,oc->bo...", patch[:, g * cin:(g + 1) * cin], wk)
        return out
    if t in ("SumPool2d", "AvgPool2d"):
        if len(shape) == 2:
            shape = (1,) + tuple(shape)
        x = x.reshape((b,) + tuple(shape))
        k, s, p = _ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2)
        osz = out_shape(name, node, shape)[1:]
        xp = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])])
        out = np.zeros((b, shape[0]) + tuple(osz))
        for dy in range(k[0]):
            for dx in range(k[1]):
                out += xp[:, :, dy:dy + s[0] * (osz[0] - 1) + 1:s[0], dx:dx + s[1] * (osz[1] - 1) + 1:s[1]]
        return out / (k[0] * k[1]) if t == "AvgPool2d" else out
    raise Refusal(f"NIR node '{name}' ({t}) is not a linear node")


def bias_of(name: str, node, shape_out: Tuple[int, ...]) -> Optional[np.ndarray]:
    """The bias a node adds to its output (flattened), or None."""
    t = node_kind(node)
    if t == "Affine":
        return np.asarray(node.bias, np.float64).ravel()
    if t in ("Conv1d", "Conv2d"):
        b = np.asarray(getattr(node, "bias", 0.0), np.float64)
        if b.size == 0 or not np.any(b):
            return None
        per = int(np.prod(shape_out[1:]))
        return np.repeat(np.broadcast_to(b.ravel(), (shape_out[0],)), per)
    return None


def delay_steps(name: str, node, dt: float) -> int:
    d = np.asarray(node.delay, np.float64).ravel()
    if d.size == 0 or not np.all(d == d[0]):
        raise Refusal(
            f"NIR node '{name}' (Delay): delays differ between elements "
            f"({d.min() if d.size else 0:g} to {d.max() if d.size else 0:g}); a neuropart "
            "projection has one delay"
        )
    steps = d[0] / dt
    if steps < 0 or abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
        raise Refusal(
            f"NIR node '{name}' (Delay): delay {d[0]:g} is not a whole number of steps of "
            f"dt = {dt:g}"
        )
    return int(round(steps))


def shapes_along(chain: List[Tuple[str, Any]], shape_in: Tuple[int, ...]) -> List[Tuple[int, ...]]:
    """The shape before every node of `chain` and after the last."""
    shapes = [tuple(shape_in)]
    for name, node in chain:
        shapes.append(out_shape(name, node, shapes[-1]))
    return shapes


def chain_bias(chain: List[Tuple[str, Any]], shapes) -> np.ndarray:
    """The bias at the chain's output: every node's bias carried through the nodes after it."""
    bias = np.zeros(int(np.prod(shapes[-1])))
    for i, (name, node) in enumerate(chain):
        b = bias_of(name, node, shapes[i + 1])
        if b is None or not np.any(b):
            continue
        x = b.reshape((1,) + tuple(shapes[i + 1]))
        for (name2, node2), sh in zip(chain[i + 1:], shapes[i + 1:]):
            x = apply(name2, node2, x, sh)
        bias += x.ravel()
    return bias


def compose(chain: List[Tuple[str, Any]], shapes, chunk: int = 512) -> np.ndarray:
    """The dense matrix [out, in] of a chain of linear nodes (without biases), built by
    applying the chain to unit inputs."""
    shape_in = shapes[0]
    n_in = int(np.prod(shape_in)) if shape_in else 1
    n_out = int(np.prod(shapes[-1]))
    m = np.zeros((n_out, n_in))
    for lo in range(0, n_in, chunk):
        hi = min(n_in, lo + chunk)
        x = np.zeros((hi - lo, n_in))
        x[np.arange(hi - lo), np.arange(lo, hi)] = 1.0
        x = x.reshape((hi - lo,) + tuple(shape_in))
        for (name, node), sh in zip(chain, shapes):
            x = apply(name, node, x, sh)
        m[:, lo:hi] = x.reshape(hi - lo, -1).T
    return m
