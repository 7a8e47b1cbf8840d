"""NIR (Neuromorphic Intermediate Representation) import and export.

Conventions (the README has them as a table):

* Times in the file are in the unit of ``dt``: a time constant ``tau`` becomes ``tau / dt``
  steps of the substrate's time step (1 µs on BrainScaleS-2). NIR's documentation uses
  seconds or milliseconds; hxtorch writes τ in ms and runs at 1 µs, hence ``dt=1e-3``.
* A spike through weight ``w`` makes the synaptic current jump by ``w · w_in`` (the jump does
  not scale with dt or τ_syn, as in the chip's software), and ``r`` multiplies the current in
  the membrane equation; both are folded into the weights of the projection into the node.
* ``LIF`` and ``LI`` have no synaptic filter: their current is the input of the step
  (τ_syn = one step).
* Every neuron of a node must share τ, thresholds and potentials; differing values are
  refused naming the node and the parameter. ``Affine`` biases must be zero (the chip has no
  bias current). ``Conv2d`` needs a square kernel, equal strides and paddings, dilation 1 and
  groups 1; ``SumPool2d`` becomes a convolution with fixed unit weights.
* Population names are the NIR node names; projections are named after the weight nodes
  (``node:source->target`` when one weight node connects several pairs of populations).
* A projection inside a recurrent loop takes one extra step (neuropart's timing).
* NIR has no update order: export records it in the neuron nodes' metadata
  (``neuropart_update``), which import reads before the ``update`` argument.

Export writes the same conventions (``r = 1``, ``w_in = 1``), so a graph exported here and
read back gives identical spikes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

NEURON_NODES = ("CubaLIF", "CubaLI", "LIF", "LI")
WEIGHT_NODES = ("Linear", "Affine", "Conv2d", "SumPool2d")
PASS_NODES = ("Flatten",)
SUPPORTED = ("Input", "Output") + NEURON_NODES + WEIGHT_NODES + PASS_NODES


def _nir():
    try:
        import nir  # noqa: F401
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise ImportError("NIR support needs the `nir` package: pip install nir") from e
    return nir


def _uniform(node_name: str, param: str, values) -> float:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"NIR node '{node_name}': parameter '{param}' is empty")
    if not np.all(a == a[0]):
        raise ValueError(
            f"NIR node '{node_name}': parameter '{param}' differs between neurons "
            f"({a.min():g} to {a.max():g}); neuropart populations share one value"
        )
    if not np.isfinite(a[0]):
        raise ValueError(f"NIR node '{node_name}': parameter '{param}' is {a[0]}")
    return float(a[0])


def _shape(values) -> Tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(values).shape)


def _pair(node_name: str, what: str, value) -> int:
    a = np.atleast_1d(np.asarray(value)).astype(np.int64).ravel()
    if a.size == 2 and a[0] != a[1]:
        raise ValueError(
            f"NIR node '{node_name}': {what} {tuple(a)} differs between height and width; "
            "neuropart convolutions use one value for both"
        )
    return int(a[0])


def _node_shape(node, fallback) -> Tuple[int, ...]:
    """A node's neuron shape: its input type where NIR gives one, else `fallback`'s shape; a
    2-D [H, W] is one channel [1, H, W]."""
    shape: Tuple[int, ...] = ()
    it = getattr(node, "input_type", None)
    if isinstance(it, dict) and it.get("input") is not None:
        shape = tuple(int(x) for x in np.asarray(it["input"]).ravel())
    if not shape or any(x <= 0 for x in shape):
        shape = _shape(fallback)
    if len(shape) == 2:
        shape = (1,) + shape
    return shape


def _neuron_population(name: str, node, dt: float, update: str) -> Dict[str, Any]:
    kind = type(node).__name__
    shape = _node_shape(node, node.v_leak)
    size = int(np.prod(shape)) if shape else 1
    # A neuropart update order written by `to_nir` wins over the argument.
    update = (getattr(node, "metadata", None) or {}).get("neuropart_update", update)
    if kind in ("CubaLIF", "CubaLI"):
        tau_syn = _uniform(name, "tau_syn", node.tau_syn) / dt
        tau_mem = _uniform(name, "tau_mem", node.tau_mem) / dt
    else:
        tau_syn = 1.0  # no synaptic filter: the current is the step's input
        tau_mem = _uniform(name, "tau", node.tau) / dt
    params = {
        "tau_mem": tau_mem,
        "tau_syn": tau_syn,
        "v_leak": _uniform(name, "v_leak", node.v_leak),
        "update": update,
    }
    spiking = kind in ("CubaLIF", "LIF")
    if spiking:
        params["v_th"] = _uniform(name, "v_threshold", node.v_threshold)
        params["v_reset"] = _uniform(name, "v_reset", node.v_reset)
    else:
        # A readout never spikes; its threshold is unused.
        params["v_th"] = 1.0
        params["v_reset"] = 0.0
    pop: Dict[str, Any] = {
        "name": name,
        "size": size,
        "kind": "lif" if spiking else "readout",
        "params": params,
    }
    if len(shape) == 3:
        pop["shape"] = list(shape)
    return pop


def _input_gain(name: str, node) -> np.ndarray:
    """Per neuron: what multiplies a weight (w_in · r), flattened."""
    r = np.asarray(node.r, dtype=np.float64).ravel()
    w_in = np.asarray(getattr(node, "w_in", np.ones_like(r)), dtype=np.float64)
    w_in = np.broadcast_to(w_in, np.asarray(node.r).shape).ravel()
    g = r * w_in
    if not np.all(np.isfinite(g)):
        raise ValueError(f"NIR node '{name}': r or w_in is not finite")
    return g


def from_nir(graph_or_path, dt: float = 1e-3, steps: int = 30, update: str = "input_first",
             name: Optional[str] = None):
    """A :class:`neuropart.Network` from a NIR graph (or a NIR file's path).

    ``dt``: the file's time unit per substrate step (τ/dt steps); ``steps``: time steps of one
    run; ``update``: ``"input_first"`` (neuropart's order) or ``"hxtorch"`` (the membrane
    integrates the previous step's current, as the chip's software).
    """
    from ._neuropart import Network

    nir = _nir()
    if not (dt > 0 and np.isfinite(dt)):
        raise ValueError(f"dt must be a positive number, not {dt}")
    if update not in ("input_first", "hxtorch"):
        raise ValueError(f"update '{update}': use 'input_first' or 'hxtorch'")
    if isinstance(graph_or_path, (str, os.PathLike)):
        path = str(graph_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r}: no such NIR file")
        try:
            graph = nir.read(path)
        except Exception as e:  # h5py and nir raise many kinds; the user needs the file named
            raise ValueError(f"{path!r}: cannot be read as a NIR file ({type(e).__name__}: {e})"
                             ) from e
        default_name = os.path.splitext(os.path.basename(path))[0]
    else:
        graph = graph_or_path
        default_name = "nir"
    if not (isinstance(getattr(graph, "nodes", None), dict)
            and hasattr(getattr(graph, "edges", None), "__iter__")):
        raise TypeError("from_nir takes a nir.NIRGraph or the path of a NIR file, not "
                        f"{type(graph_or_path).__name__}")
    nodes = dict(graph.nodes)
    for k, node in nodes.items():
        t = type(node).__name__
        if t not in SUPPORTED:
            raise ValueError(
                f"NIR node '{k}' of type {t} is not supported (supported: {', '.join(SUPPORTED)})"
            )
    if not any(type(node).__name__ == "Input" for node in nodes.values()):
        raise ValueError(
            "the NIR graph has no Input node; neuropart feeds spikes into Input nodes, so every "
            "graph needs at least one (nir.Input before the first weight node)"
        )
    succ: Dict[str, List[str]] = {k: [] for k in nodes}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise ValueError(f"NIR edge ({a}, {b}) names a node that is not in the graph")
        if b not in succ[a]:
            succ[a].append(b)

    # Populations: inputs and neuron nodes, in a stable order (inputs first, then by name
    # along the edges).
    populations: List[Dict[str, Any]] = []
    pop_names = set()
    for k in sorted(nodes):
        node = nodes[k]
        t = type(node).__name__
        if t == "Input":
            shape = tuple(int(x) for x in np.asarray(node.input_type["input"]).ravel())
            if len(shape) == 2:
                shape = (1,) + shape
            pop: Dict[str, Any] = {"name": k, "size": int(np.prod(shape)), "kind": "input"}
            if len(shape) == 3:
                pop["shape"] = list(shape)
            populations.append(pop)
            pop_names.add(k)
    for k in sorted(nodes):
        if type(nodes[k]).__name__ in NEURON_NODES:
            populations.append(_neuron_population(k, nodes[k], dt, update))
            pop_names.add(k)

    def through_pass(start: str, path: List[str]) -> List[Tuple[str, List[str]]]:
        """Follow pass-through nodes from `start`: (first non-pass node, pass nodes on the way)."""
        out = []
        for nxt in succ[start]:
            t = type(nodes[nxt]).__name__
            if t in PASS_NODES:
                out += through_pass(nxt, path + [nxt])
            else:
                out.append((nxt, path))
        return out

    pairs: List[Tuple[str, str, str]] = []
    for src in [p["name"] for p in populations]:
        for w_name, _ in through_pass(src, []):
            wnode = nodes[w_name]
            wt = type(wnode).__name__
            if wt in ("Output",):
                continue
            if wt not in WEIGHT_NODES:
                raise ValueError(
                    f"NIR node '{src}' feeds '{w_name}' ({wt}) directly; neuropart needs a "
                    "weight node (Linear, Affine, Conv2d, SumPool2d) between populations"
                )
            targets = through_pass(w_name, [])
            if not targets:
                raise ValueError(
                    f"NIR weight node '{w_name}' has no outgoing edge: nothing would receive its "
                    "input; connect it to a neuron node or remove it"
                )
            for tgt, _ in targets:
                tt = type(nodes[tgt]).__name__
                if tt not in NEURON_NODES:
                    raise ValueError(
                        f"NIR weight node '{w_name}' feeds '{tgt}' ({tt}); neuropart needs a "
                        "neuron node (CubaLIF, CubaLI, LIF, LI) after every weight node"
                    )
                pairs.append((w_name, src, tgt))
    used = {w for w, _, _ in pairs}
    for k in sorted(nodes):
        if type(nodes[k]).__name__ in WEIGHT_NODES and k not in used:
            raise ValueError(
                f"NIR weight node '{k}' is not fed by any population (no edge into it from an "
                "Input or neuron node); connect it or remove it"
            )
    # A weight node between several pairs of populations gives one projection per pair.
    uses = {w: sum(1 for p in pairs if p[0] == w) for w, _, _ in pairs}
    projections = []
    for w_name, src, tgt in pairs:
        proj = _projection(w_name, nodes[w_name], src, tgt, nodes, populations)
        if uses[w_name] > 1:
            proj["name"] = f"{w_name}:{src}->{tgt}"
        projections.append(proj)
    if not projections:
        raise ValueError("the NIR graph has no weight node between two populations")
    desc = {
        "name": name or default_name,
        "seed": 0,
        "steps": int(steps),
        "populations": populations,
        "projections": projections,
    }
    return Network.from_str(json.dumps(desc), "json")


def _projection(w_name, wnode, src, tgt, nodes, populations) -> Dict[str, Any]:
    wt = type(wnode).__name__
    src_pop = next(p for p in populations if p["name"] == src)
    tgt_node = nodes[tgt]
    gain = _input_gain(tgt, tgt_node)
    proj: Dict[str, Any] = {"name": w_name, "source": src, "target": tgt, "sign": "signed"}
    if wt in ("Linear", "Affine"):
        w = np.asarray(wnode.weight, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"NIR node '{w_name}': weight of shape {w.shape}, not [out, in]")
        if wt == "Affine":
            b = np.asarray(wnode.bias, dtype=np.float64)
            if np.any(b != 0):
                raise ValueError(
                    f"NIR node '{w_name}': Affine with a non-zero bias (largest |b| = "
                    f"{np.abs(b).max():g}); the chip has no bias current"
                )
        if w.shape[1] != src_pop["size"] or w.shape[0] != gain.size:
            raise ValueError(
                f"NIR node '{w_name}': weight [{w.shape[0]}, {w.shape[1]}] between '{src}' "
                f"({src_pop['size']} neurons) and '{tgt}' ({gain.size} neurons)"
            )
        proj["connectivity"] = {"type": "dense"}
        proj["weights"] = (w * gain[:, None]).astype(np.float32).ravel().tolist()
        return proj
    # Convolutions: weights [c_out][c_in][k][k].
    if wt == "Conv2d":
        w = np.asarray(wnode.weight, dtype=np.float64)
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise ValueError(
                f"NIR node '{w_name}': weight of shape {w.shape}; neuropart needs a square "
                "kernel [c_out, c_in, k, k]"
            )
        if _pair(w_name, "dilation", wnode.dilation) != 1 or int(wnode.groups) != 1:
            raise ValueError(f"NIR node '{w_name}': dilation and groups must be 1")
        b = np.asarray(wnode.bias, dtype=np.float64)
        if np.any(b != 0):
            raise ValueError(
                f"NIR node '{w_name}': Conv2d with a non-zero bias; the chip has no bias current"
            )
        k = w.shape[2]
        stride = _pair(w_name, "stride", wnode.stride)
        pad = wnode.padding
        if isinstance(pad, str):
            if pad == "valid":
                padding = 0
            elif pad == "same" and stride == 1 and k % 2 == 1:
                padding = k // 2
            else:
                raise ValueError(f"NIR node '{w_name}': padding '{pad}' with kernel {k}, stride {stride}")
        else:
            padding = _pair(w_name, "padding", pad)
    else:  # SumPool2d: a convolution with unit weights, channel to the same channel.
        k = _pair(w_name, "kernel_size", wnode.kernel_size)
        stride = _pair(w_name, "stride", wnode.stride)
        padding = _pair(w_name, "padding", wnode.padding)
        shape = src_pop.get("shape")
        if shape is None:
            raise ValueError(f"NIR node '{w_name}': SumPool2d needs a source with a [c, h, w] shape")
        c = shape[0]
        w = np.zeros((c, c, k, k))
        for ch in range(c):
            w[ch, ch] = 1.0
    if src_pop.get("shape") is None:
        raise ValueError(f"NIR node '{w_name}': a convolution needs a source with a [c, h, w] shape")
    tgt_pop = next(p for p in populations if p["name"] == tgt)
    if tgt_pop.get("shape") is None:
        # A convolution into a flat node (through a Flatten): the node is its output image.
        c, h, wd = src_pop["shape"]
        oh = (h + 2 * padding - k) // stride + 1
        ow = (wd + 2 * padding - k) // stride + 1
        if w.shape[0] * oh * ow == tgt_pop["size"]:
            tgt_pop["shape"] = [int(w.shape[0]), int(oh), int(ow)]
    if not np.all(gain == gain[0]):
        raise ValueError(
            f"NIR node '{tgt}': r · w_in differs between neurons after the convolution "
            f"'{w_name}' (shared kernel weights cannot fold it)"
        )
    proj["connectivity"] = {"type": "conv2d", "kernel": int(k), "stride": int(stride), "padding": int(padding)}
    proj["weights"] = (w * gain[0]).astype(np.float32).ravel().tolist()
    return proj


def to_nir(net, path=None, dt: float = 1e-3):
    """The network as a NIR graph (written to ``path`` when given): Input, CubaLIF (spiking),
    CubaLI (readout), Linear (dense), Conv2d (convolutions), with ``r = 1``, ``w_in = 1`` and
    times ``τ · dt`` (see the module's conventions)."""
    nir = _nir()
    try:
        dt_ok = bool(np.isfinite(dt) and dt > 0)
    except TypeError:
        dt_ok = False
    if not dt_ok:
        raise ValueError(
            f"dt must be a finite number above 0 (the file's time unit per step), not {dt}"
        )
    desc = json.loads(net.to_json_str())
    for p in desc["populations"]:
        if "/" in p["name"]:
            raise ValueError(
                f"population '{p['name']}': a NIR node name cannot contain '/' (NIR files "
                "store nodes as HDF5 groups, where '/' separates groups); rename the population"
            )
    nodes: Dict[str, Any] = {}
    edges: List[Tuple[str, str]] = []
    pops = {p["name"]: p for p in desc["populations"]}
    taken = set(pops)

    def unique(name: str) -> str:
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    sources = {pr["source"] for pr in desc["projections"]}
    for p in desc["populations"]:
        shape = p.get("shape") or [p["size"]]
        name = p["name"]
        if p.get("kind") == "input":
            nodes[name] = nir.Input(input_type={"input": np.array(shape)})
            continue
        prm = p.get("params", {})
        if prm.get("integration", "euler") != "euler":
            raise ValueError(
                f"population '{name}': {prm['integration']} integration has no NIR form here"
            )
        if prm.get("refractory", 0.0) != 0.0:
            raise ValueError(f"population '{name}': a refractory period has no NIR form")

        def full(v):
            return np.full(shape, v, dtype=np.float32)

        common = dict(
            tau_syn=full(prm.get("tau_syn", 5.7) * dt),
            tau_mem=full(prm.get("tau_mem", 6.0) * dt),
            r=full(1.0),
            v_leak=full(prm.get("v_leak", 0.0)),
            w_in=full(1.0),
            # NIR has no update order: kept in the metadata, which from_nir reads.
            metadata={"neuropart_update": prm.get("update", "input_first")},
        )
        if p.get("kind", "lif") == "lif":
            nodes[name] = nir.CubaLIF(
                v_threshold=full(prm.get("v_th", 1.0)), v_reset=full(prm.get("v_reset", 0.0)), **common
            )
        else:
            nodes[name] = nir.CubaLI(**common)
        if name not in sources:
            out = unique(f"{name}_output")
            nodes[out] = nir.Output(output_type={"output": np.array(shape)})
            edges.append((name, out))
    names = net.projections
    for pr, pname in zip(desc["projections"], names):
        if pr.get("delay", 0) != 0:
            raise ValueError(f"projection '{pname}': a delay has no NIR form here")
        conn = pr.get("connectivity", {"type": "dense"})
        w = np.asarray(net.weights(pname), dtype=np.float32)
        src, tgt = pops[pr["source"]], pops[pr["target"]]
        node_name = unique(pname.replace("->", "_to_").replace(":", "_").replace("/", "_"))
        if conn["type"] == "dense":
            nodes[node_name] = nir.Linear(weight=w.reshape(tgt["size"], src["size"]))
        elif conn["type"] == "conv2d":
            k = conn["kernel"]
            c_in = src["shape"][0]
            c_out = tgt["shape"][0]
            nodes[node_name] = nir.Conv2d(
                input_shape=tuple(src["shape"][1:]),
                weight=w.reshape(c_out, c_in, k, k),
                stride=conn.get("stride", 1),
                padding=conn.get("padding", 0),
                dilation=1,
                groups=1,
                bias=np.zeros(c_out, dtype=np.float32),
            )
        else:
            raise ValueError(f"projection '{pname}': {conn['type']} connectivity has no NIR form here")
        if conn["type"] == "dense" and src.get("shape"):
            # An image-shaped source reaches a Linear through a Flatten.
            flat = unique(f"{node_name}_flatten")
            nodes[flat] = nir.Flatten(input_type={"input": np.array(src["shape"])}, start_dim=0)
            edges.append((pr["source"], flat))
            edges.append((flat, node_name))
        else:
            edges.append((pr["source"], node_name))
        edges.append((node_name, pr["target"]))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    if path is not None:
        nir.write(str(path), graph)
    return graph
