"""NIR (Neuromorphic Intermediate Representation) import and export.

Conventions (the README has them as tables):

* Times in the file are in the unit of ``dt``: a time constant ``tau`` becomes ``tau / dt``
  steps of the substrate's time step (1 µs on BrainScaleS-2).
* ``convention="nir"`` (default): NIR's equations integrated as the specification writes them
  (forward Euler at ``dt``): a CubaLIF's current moves by (dt/τ_syn)·w_in·(input) per step, the
  membrane by (dt/τ_mem)·(v_leak − v + r·I); ``LIF``/``LI`` take the input as their current
  (τ_syn = one step, gain r); ``IF``/``I`` integrate without leak (gain dt·r); a neuron fires
  when v > v_threshold; every state starts at 0. The input gains fold into the weights and
  biases of the projections into the node.
* ``convention="hxtorch"``: the chip software's reading (a spike adds w·w_in·r to the
  current; membranes start at v_leak; fire at v ≥ v_threshold).
* Biases become constant currents per neuron; parameters that differ between the neurons of
  a node become per-neuron values; chains of weight nodes (pooling, Flatten, Scale, Delay,
  convolutions, Affine) become one projection; nested graphs are inlined (``outer.inner``).
* Population names are the NIR node names; projections are named after their weight nodes
  (``a+b`` for a composed chain, ``src_to_tgt`` for a direct connection).
* A projection inside a recurrent loop takes one extra step (neuropart's timing).
* NIR has no update order: export records it in the neuron nodes' metadata
  (``neuropart_update``), which import reads before the ``update`` argument.

The import records the graph it read, the step and the convention in the network's
metadata; export writes an imported graph back node for node, and records ``dt`` and the
convention in the graph's metadata, which import reads.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _nir_graph as G
from ._nir_graph import Refusal

CONVENTIONS = ("nir", "hxtorch")

#: The chip's largest weight (6 bit): BrainScaleS-2's `Substrate.weight_max`.
WEIGHT_MAX = 63

#: The analog configuration's default weight scale (hardware units per model unit).
DEFAULT_WEIGHT_SCALE = 32.0


def weight_report(net, weight_max: int = WEIGHT_MAX,
                  default_scale: float = DEFAULT_WEIGHT_SCALE) -> List[Dict[str, Any]]:
    """How emulated mode maps each population's incoming weights onto the chip's integer
    range: per population its scale (hardware units per model unit: ``params.weight_scale``,
    else the analog default), the largest |w|, and how many weights are clipped
    (|round(scale·w)| > weight_max)."""
    if not hasattr(net, "to_json_str"):
        raise TypeError(f"weight_report takes a neuropart.Network, not {type(net).__name__}")
    for arg, v in (("weight_max", weight_max), ("default_scale", default_scale)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{arg} must be a finite number above 0, not {v!r}")
    desc = json.loads(net.to_json_str())
    out = []
    for p in desc["populations"]:
        if p.get("kind") == "input":
            continue
        scale = p.get("params", {}).get("weight_scale") or default_scale
        ws = [np.asarray(net.weights(pr["name"]), np.float64)
              for pr in desc["projections"] if pr["target"] == p["name"]]
        w = np.concatenate(ws) if ws else np.zeros(0)
        clipped = int(np.sum(np.abs(np.round(w * scale)) > weight_max))
        out.append({"population": p["name"], "scale": float(scale),
                     "largest": float(np.abs(w).max(initial=0.0)), "weights": int(w.size),
                     "clipped": clipped})
    return out

#: Node types that are refused with a reason (anything else unknown is refused as unknown).
WHY_NOT: Dict[str, str] = {}


def _nir():
    try:
        import nir  # noqa: F401
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise ImportError("NIR support needs the `nir` package: pip install nir") from e
    return nir


def _read(nir, path: str, type_check: bool):
    version = getattr(nir, "__version__", "?")
    try:
        return nir.read(path, type_check=type_check)
    except Exception as e:  # nir raises ValueError, TypeError, AssertionError, KeyError
        hint = ""
        if type_check:
            try:
                nir.read(path, type_check=False)
                hint = "; it reads with type_check=False (from_nir(path, type_check=False))"
            except Exception:
                pass
        why = f"{type(e).__name__}: {e}"
        try:
            with open(path, "rb") as f:
                hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
        except OSError:
            hdf5 = True
        if not hdf5:
            why += " (not an HDF5 file: a NIR file is HDF5, as nir.write writes it)"
        elif not hint:
            why += (" (the file does not follow the NIR format that this version of nir "
                    "reads: a node lacks a required field or an edge names a missing node)")
        raise Refusal(f"nir.read (nir {version}) cannot read '{path}': {why}{hint}") from e


def _params(name: str, node, attr: str, size: int) -> np.ndarray:
    v = getattr(node, attr, None)
    if v is None:
        raise Refusal(f"NIR node '{name}' ({G.kind(node)}): parameter '{attr}' is missing")
    a = np.asarray(v, dtype=np.float64)
    if a.size == 1:
        a = np.full(size, float(a.ravel()[0]))
    a = a.ravel()
    if a.size != size:
        raise Refusal(
            f"NIR node '{name}' ({G.kind(node)}): parameter '{attr}' has {a.size} values for "
            f"{size} neurons"
        )
    if not np.all(np.isfinite(a)):
        raise Refusal(f"NIR node '{name}' ({G.kind(node)}): parameter '{attr}' is not finite")
    return a


def _tau_steps(name: str, node, attr: str, size: int, dt: float) -> np.ndarray:
    tau = _params(name, node, attr, size)
    bad = np.flatnonzero(tau <= 0)
    if bad.size:
        raise Refusal(
            f"NIR node '{name}' ({G.kind(node)}): {attr} = {tau[bad[0]]:g} at neuron {bad[0]} "
            f"({bad.size} neurons at or below 0); a time constant must be positive"
        )
    if tau.min() < dt * (1 - 1e-6):
        raise Refusal(
            f"NIR node '{name}' ({G.kind(node)}): {attr} = {tau.min():g} is shorter than the "
            f"time step dt = {dt:g} given to from_nir; forward Euler is unstable there: pass "
            f"dt <= {tau.min():g}"
        )
    return np.maximum(tau / dt, 1.0)


def _neuron(name: str, node, size: int, dt: float, convention: str):
    """Population parameters of a neuron node, and the gain per neuron that multiplies every
    weight and bias into it (NIR's input scaling folded into the weights)."""
    t = G.kind(node)
    ones = np.ones(size)
    per: Dict[str, np.ndarray] = {}
    prm: Dict[str, Any] = {}
    if t in ("CubaLIF", "CubaLI"):
        per["tau_syn"] = _tau_steps(name, node, "tau_syn", size, dt)
        per["tau_mem"] = _tau_steps(name, node, "tau_mem", size, dt)
        gain = _params(name, node, "r", size) * _params(name, node, "w_in", size)
        if convention == "nir":
            # τ_syn dI/dt = −I + w_in·S: one step moves I by (dt/τ_syn)·w_in·S.
            gain = gain / per["tau_syn"]
        per["v_leak"] = _params(name, node, "v_leak", size)
    elif t in ("LIF", "LI"):
        per["tau_syn"] = ones  # no synaptic filter: the current is the step's input
        per["tau_mem"] = _tau_steps(name, node, "tau", size, dt)
        gain = _params(name, node, "r", size)
        per["v_leak"] = _params(name, node, "v_leak", size)
    elif t in ("IF", "I"):
        # dv/dt = R·I: v ← v + dt·R·I, no leak.
        per["tau_syn"] = ones
        per["tau_mem"] = ones
        prm["leak"] = False
        gain = _params(name, node, "r", size) * dt
        per["v_leak"] = np.zeros(size)
    else:  # an Output or a Threshold fed by weights: the weighted sum of the step
        # (τ_syn = τ_mem = one step: v = the step's input, no memory)
        per["tau_syn"] = ones
        per["tau_mem"] = ones
        gain = ones
        per["v_leak"] = np.zeros(size)
    spiking = t in G.SPIKING_NODES
    if spiking:
        # Threshold: H(x − threshold) of the step's input x, a neuron whose membrane is x.
        th = _params(name, node, "threshold" if t == "Threshold" else "v_threshold", size)
        reset = getattr(node, "v_reset", None)
        per["v_reset"] = np.zeros(size) if reset is None else _params(name, node, "v_reset", size)
        if t == "Threshold":
            # No memory: the next step's membrane is its input whatever the reset; a reset
            # below the threshold only satisfies the neuron's check.
            per["v_reset"] = np.minimum(0.0, np.floor(th) - 1.0)
        if convention == "nir":
            # NIR fires when v > v_threshold, neuropart when v >= v_th: the next float up.
            th = np.nextafter(th.astype(np.float32), np.float32(np.inf)).astype(np.float64)
        per["v_th"] = th
    else:
        prm["v_th"], prm["v_reset"] = 1.0, 0.0
    if convention == "nir":
        per["v_init"] = np.zeros(size)  # NIR graphs start at 0, not at v_leak
    if not np.all(np.isfinite(gain)):
        raise Refusal(f"NIR node '{name}' ({t}): r or w_in is not finite")
    per_neuron = {}
    for k, v in per.items():
        v32 = np.asarray(v, np.float32)
        if np.all(v32 == v32[0]):
            if k == "v_init":
                prm[k] = float(v32[0])
            else:
                prm[k] = float(v32[0])
        else:
            per_neuron[k] = v32.tolist()
    if convention == "nir" and prm.get("v_init") == prm.get("v_leak"):
        prm.pop("v_init")
    return prm, per_neuron, gain, spiking


def _input_size_wanted(nodes, succ, k: str, seen: Tuple[str, ...] = ()) -> Optional[int]:
    """What the first node after `k` (through identities and Flatten) takes as input."""
    for nxt in succ[k]:
        node = nodes[nxt]
        t = G.node_kind(node)
        if t in (G.IDENTITY, "Flatten"):
            if nxt in seen:
                cycle = " -> ".join(seen[seen.index(nxt):] + (nxt,))
                raise Refusal(f"NIR nodes {cycle} form a loop of {t} nodes without a weight or "
                              "neuron node in it: nothing is computed on it")
            got = _input_size_wanted(nodes, succ, nxt, seen + (nxt,))
            if got is not None:
                return got
        elif t in ("Linear", "Affine"):
            return int(np.asarray(node.weight).shape[1])
        elif t in G.NEURON_NODES:
            sh = G.node_shape(node)
            if sh is not None:
                return int(np.prod(sh))
    return None


def _check_values(k: str, t: str, node) -> None:
    """Refuse a weight node whose arrays are not real numbers that float32 holds, naming
    the node, the parameter, how many and the first."""
    for attr in ("weight", "bias", "scale"):
        v = getattr(node, attr, None)
        if v is None or isinstance(v, (str, bytes)):
            continue
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise Refusal(f"NIR node '{k}' ({t}): {attr} holds {a.dtype} values, not real numbers")
        bad = ~np.isfinite(a) | (np.abs(a) > np.finfo(np.float32).max)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
            raise Refusal(f"NIR node '{k}' ({t}): {attr} has {int(bad.sum())} values that are "
                          f"not finite float32 numbers, the first {a[first]} at index "
                          f"{list(map(int, first))}")


def from_nir(graph_or_path, dt: Optional[float] = None, steps: Optional[int] = None,
             update: Optional[str] = None, name: Optional[str] = None,
             convention: Optional[str] = None, type_check: bool = True,
             notes: Optional[List[str]] = None):
    """A :class:`neuropart.Network` from a NIR graph (or a NIR file's path).

    ``dt``: the step in the file's time unit (τ/dt steps; default: the one recorded by
    :func:`to_nir`, else 1e-3); ``steps``: the default T of a run (default: the one recorded
    by :func:`to_nir`, else 30; ``Network.run`` takes T
    from its input); ``convention``: ``"nir"`` (default) integrates NIR's equations as the
    specification writes them (one input spike moves a CubaLIF's current by
    (dt/τ_syn)·w_in·w, membranes start at 0, a neuron fires when v > v_threshold);
    ``"hxtorch"`` reads graphs written by the chip's software (a spike adds w·w_in to the
    current, membranes start at v_leak, fire at v >= v_threshold); ``update``:
    ``"input_first"`` (default) or ``"hxtorch"`` (the membrane integrates the previous step's
    current); ``type_check``: passed to ``nir.read``; ``notes``: a list that receives one line
    per mapping decision (inlined subgraphs, dropped batch dimensions, composed weight chains).
    """
    from ._neuropart import Network

    nir = _nir()
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"convention '{convention}': use 'nir' or 'hxtorch'")
    if update is not None and update not in ("input_first", "hxtorch"):
        raise ValueError(f"update '{update}': use 'input_first' or 'hxtorch'")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or not 1 <= steps <= 2**30):
        raise ValueError(f"steps must be a whole number of steps from 1 to 2**30, not {steps!r}")
    if name is not None and not (isinstance(name, str) and name):
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    if notes is None:
        notes = []
    if isinstance(graph_or_path, (str, os.PathLike)):
        path = str(graph_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r}: no such NIR file")
        graph = _read(nir, path, type_check)
        default_name = os.path.splitext(os.path.basename(path))[0]
    else:
        graph = graph_or_path
        default_name = "nir"
    if not (isinstance(getattr(graph, "nodes", None), dict)
            and hasattr(getattr(graph, "edges", None), "__iter__")):
        raise TypeError("from_nir takes a nir.NIRGraph or the path of a NIR file, not "
                        f"{type(graph_or_path).__name__}")
    meta = _neuropart_meta(graph)
    if steps is None:
        s = meta.get("steps")
        ok = isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 2**30
        steps = s if ok else 30
    if convention is None:
        convention = meta.get("convention", "nir")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention '{convention}': use 'nir' or 'hxtorch'")
    if dt is None:
        dt = float(meta.get("dt", 1e-3))
    try:
        dt_ok = bool(np.isfinite(dt) and dt > 0)
    except TypeError:
        dt_ok = False
    if not dt_ok:
        raise ValueError(f"dt must be a positive number (the file's time per step), not {dt}")
    nodes, edges, more = G.flatten_graph(graph)
    notes += more
    for k, node in nodes.items():
        t = G.node_kind(node)
        if t in WHY_NOT:
            raise Refusal(f"NIR node '{k}' of type {t} is not supported: {WHY_NOT[t]}")
        if t not in ("Input", "Output", G.IDENTITY) + G.NEURON_NODES + G.LINEAR_NODES:
            raise Refusal(
                f"NIR node '{k}' of type {t} is not supported (neuropart maps Input, Output, "
                f"{', '.join(G.NEURON_NODES + G.LINEAR_NODES)})"
            )
        if t in G.LINEAR_NODES:
            _check_values(k, t, node)
    inputs = sorted(k for k, n in nodes.items() if G.node_kind(n) == "Input")
    if not inputs:
        raise Refusal(
            "the NIR graph has no Input node; neuropart feeds spikes into Input nodes, so every "
            "graph needs at least one (nir.Input before the first weight node)"
        )
    succ: Dict[str, List[str]] = {k: [] for k in nodes}
    for a, b in edges:
        if b not in succ[a]:
            succ[a].append(b)

    # Shapes of inputs (dropping a leading batch or time dimension that an exporter wrote)
    # and of neuron nodes (None: scalar parameters, sized by what feeds them).
    shape: Dict[str, Optional[Tuple[int, ...]]] = {}
    for k in inputs:
        sh = G.input_shape(nodes[k])
        if not sh:
            raise Refusal(f"NIR node '{k}' (Input): no input_type, so its size is unknown")
        want = _input_size_wanted(nodes, succ, k)
        while len(sh) > 1 and want is not None and int(np.prod(sh)) != want \
                and int(np.prod(sh[1:])) == want:
            notes.append(f"Input '{k}': shape {list(sh)} read as {list(sh[1:])} (the leading "
                         f"{sh[0]} taken as a batch or time dimension the exporter wrote)")
            sh = sh[1:]
        shape[k] = sh
    for k, n in nodes.items():
        if G.node_kind(n) in G.NEURON_NODES:
            shape[k] = G.node_shape(n)

    # Paths: from every population through linear nodes to the next neuron node or Output.
    def walk(k: str, chain: List[Tuple[str, Any]], seen: Tuple[str, ...], src: str):
        out = []
        for nxt in succ[k]:
            node = nodes[nxt]
            t = G.node_kind(node)
            if t in G.NEURON_NODES or t == "Output":
                out.append((chain, nxt))
            elif t in G.LINEAR_NODES or t == G.IDENTITY:
                if nxt in seen:
                    raise Refusal(f"NIR node '{nxt}' ({t}) lies on a loop without a neuron node")
                out += walk(nxt, chain + [(nxt, node)], seen + (nxt,), src)
            else:
                raise Refusal(f"NIR node '{nxt}' ({t}) is fed by '{k}'; an Input feeds only "
                              "weight or neuron nodes")
        return out

    out_names: Dict[str, str] = {}
    pops_order = inputs + sorted(k for k, n in nodes.items() if G.node_kind(n) in G.NEURON_NODES)
    paths: List[Tuple[str, List[Tuple[str, Any]], str]] = []
    for src in pops_order:
        t = G.node_kind(nodes[src])
        for chain, tgt in walk(src, [], (src,), src):
            if t in G.NEURON_NODES and t not in G.SPIKING_NODES and \
                    G.node_kind(nodes[tgt]) != "Output":
                via = "".join(f" through '{k}'" for k, _ in chain)
                raise Refusal(
                    f"NIR node '{src}' ({t}) feeds '{tgt}'{via}: a {t} sends its membrane, a "
                    "continuous value, and the chip's neurons send only spikes"
                )
            if G.node_kind(nodes[tgt]) == "Output" and not any(
                    G.node_kind(n) not in (G.IDENTITY, "Flatten") for _, n in chain):
                if t == "Input":
                    notes.append(f"Output '{tgt}' repeats Input '{src}' (nothing to run)")
                else:
                    out_names[src] = tgt
                continue  # a population read as it is
            paths.append((src, chain, tgt))
    if not paths:
        raise Refusal("the NIR graph connects no population to a neuron node or weighted Output")
    used = {k for _, ch, _ in paths for k, _ in ch}
    for k, n in nodes.items():
        if G.node_kind(n) in G.LINEAR_NODES and k not in used:
            raise Refusal(
                f"NIR node '{k}' ({G.node_kind(n)}) is not on a path from an Input or a "
                "spiking neuron node to a neuron node or an Output; connect it or remove it"
            )
    # Sizes along the paths; neuron nodes with scalar parameters take the size of their input.
    outputs: Dict[str, Tuple[int, ...]] = {}
    todo = list(paths)
    shapes_of: Dict[int, List[Tuple[int, ...]]] = {}
    while todo:
        progress = False
        for p in list(todo):
            src, chain, tgt = p
            if shape.get(src) is None:
                continue
            sh = G.shapes_along(chain, shape[src])
            shapes_of[id(p)] = sh
            tt = G.node_kind(nodes[tgt])
            have = outputs.get(tgt) if tt == "Output" else shape.get(tgt)
            if have is None:
                if tt == "Output":
                    outputs[tgt] = sh[-1]
                else:
                    shape[tgt] = sh[-1]
                    notes.append(f"'{tgt}' ({tt}) has scalar parameters: {int(np.prod(sh[-1]))} "
                                 "neurons, the size of its input")
            elif int(np.prod(have)) != int(np.prod(sh[-1])):
                via = " -> ".join([src] + [k for k, _ in chain] + [tgt])
                raise Refusal(
                    f"NIR node '{tgt}' ({tt}) has {int(np.prod(have))} neurons but receives "
                    f"{int(np.prod(sh[-1]))} values along {via}"
                )
            todo.remove(p)
            progress = True
        if not progress:
            raise Refusal(f"NIR node '{todo[0][0]}': its size cannot be inferred (scalar "
                          "parameters and no sized input)")

    populations: List[Dict[str, Any]] = []
    gains: Dict[str, np.ndarray] = {}
    biases: Dict[str, np.ndarray] = {}
    for k in inputs:
        n = int(np.prod(shape[k]))
        pop: Dict[str, Any] = {"name": k, "size": n, "kind": "input"}
        if len(shape[k]) == 3:
            pop["shape"] = list(shape[k])
        populations.append(pop)
    targets = list(dict.fromkeys(
        [k for k in pops_order if k not in inputs] + [t for _, _, t in paths]))
    for k in targets:
        node = nodes[k]
        t = G.node_kind(node)
        sh = outputs[k] if t == "Output" else shape[k]
        if sh is None:
            raise Refusal(f"NIR node '{k}' ({t}): nothing feeds it and its parameters are "
                          "scalars, so its size is unknown")
        n = int(np.prod(sh))
        prm, per, gain, spiking = _neuron(k, node, n, dt, convention)
        upd = (getattr(node, "metadata", None) or {}).get("neuropart_update", update) \
            if t != "Output" else update
        prm["update"] = upd or "input_first"
        pop = {"name": k, "size": n, "kind": "lif" if spiking else "readout", "params": prm}
        if per:
            pop["per_neuron"] = per
        if len(sh) == 3:
            pop["shape"] = list(sh)
        if t == "Output":
            notes.append(f"Output '{k}' fed by weights: a readout population whose membrane "
                         "is the weighted sum of each step (τ = one step)")
        if t == "Threshold":
            notes.append(f"Threshold '{k}': a spiking population whose membrane is the "
                         "weighted sum of each step (τ_mem = τ_syn = one step, no memory); "
                         "emulated, the chip's threshold mismatch and noise flip some of its "
                         "spikes (2.3 % on 5 neurons fed by 6 random inputs)")
        if t in ("IF", "I"):
            notes.append(f"'{k}' ({t}) emulated: the chip's membrane always leaks; the longest "
                         "calibratable τ_mem (2000 µs) with its input scaled up to match, so "
                         "a leak of 1/2000 of (v_leak − v) per µs remains")
        for key, lo, hi in (("tau_mem", 0.1, 2000.0), ("tau_syn", 0.1, 100.0)):
            v = np.asarray(per.get(key, [prm.get(key, 1.0)]), np.float64)
            if t not in ("IF", "I", "Output") and (v.min() < lo or v.max() > hi) and \
                    not (key == "tau_syn" and np.all(v == 1.0)):
                notes.append(f"'{k}' ({t}) emulated: {key} {v.min():g} to {v.max():g} µs lies "
                             f"outside the chip's calibratable {lo:g} to {hi:g} µs; the "
                             "emulator runs it as given")
        populations.append(pop)
        gains[k] = gain
        biases[k] = np.zeros(n)
    pop_of = {p["name"]: p for p in populations}

    projections = []
    names_used: Dict[str, int] = {}
    for p in paths:
        src, chain, tgt = p
        sh = shapes_of[id(p)]
        proj = _projection(src, chain, tgt, sh, pop_of, gains[tgt], dt, notes)
        biases[tgt] += gains[tgt] * G.chain_bias(chain, sh)
        names_used[proj["name"]] = names_used.get(proj["name"], 0) + 1
        projections.append(proj)
    for proj in projections:
        if names_used[proj["name"]] > 1:
            proj["name"] = f"{proj['name']}_{proj['source']}_to_{proj['target']}"
    # Emulated mode: the synaptic gain calibration of each population chosen so that its
    # largest incoming weight uses the chip's whole range (as the chip software's weight
    # scaling does); nothing is clipped at import.
    recorded = meta.get("weight_scales", {})
    for k in pop_of:
        ws = [np.abs(np.asarray(p["weights"], np.float64)).max(initial=0.0)
              for p in projections if p["target"] == k]
        top = max(ws, default=0.0)
        if k in recorded:
            # Written by to_nir: the scale the network had (None: the analog default).
            if recorded[k] is not None:
                pop_of[k]["params"]["weight_scale"] = float(recorded[k])
            continue
        if pop_of[k]["kind"] != "input" and top > 0:
            scale = WEIGHT_MAX / top
            pop_of[k]["params"]["weight_scale"] = float(np.float32(scale))
            notes.append(f"emulated weights into '{k}': {scale:.4g} hardware units per model "
                         f"unit (largest |w| {top:.4g} -> {WEIGHT_MAX})")
    for k, b in biases.items():
        b32 = b.astype(np.float32)
        if not np.any(b32):
            continue
        if np.all(b32 == b32[0]):
            pop_of[k]["params"]["bias"] = float(b32[0])
        else:
            pop_of[k].setdefault("per_neuron", {})["bias"] = b32.tolist()
    record = {"dt": dt, "convention": convention, "outputs": out_names,
              "weighted_outputs": [k for k in targets if G.node_kind(nodes[k]) == "Output"],
              # The graph as read and how its nodes became projections: export writes it back
              # with the network's current parameters and weights.
              "graph": _encode(graph.to_dict()),
              "chains": {pr["name"]: [k for k, _ in ch]
                         for pr, (_, ch, _) in zip(projections, paths)},
              "digest": {pr["name"]: _digest(pr["weights"]) for pr in projections}}
    desc = {
        "name": name or default_name,
        "seed": 0,
        "steps": int(steps),
        "populations": populations,
        "projections": projections,
        "metadata": {"nir": json.dumps(record)},
    }
    return Network.from_str(json.dumps(desc), "json")


def _encode(x):
    """A nir dict (numpy arrays inside) as JSON-able data."""
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    if isinstance(x, np.generic):
        return {"__sc__": x.item() if x.dtype.kind not in "SUO" else str(x),
                "dtype": x.dtype.str}
    if isinstance(x, np.ndarray):
        a = np.asarray(x)
        if a.dtype.kind in "SUO":
            return {"__str__": [str(v.decode() if isinstance(v, bytes) else v)
                                for v in a.ravel()], "shape": list(a.shape)}
        return {"__nd__": a.ravel().tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(x, bytes):
        return x.decode()
    return x


def _decode(x):
    if isinstance(x, dict):
        if "__nd__" in x:
            return np.asarray(x["__nd__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
        if "__sc__" in x:
            return np.dtype(x["dtype"]).type(x["__sc__"])
        if "__str__" in x:
            return np.asarray(x["__str__"]).reshape(x["shape"])
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v) for v in x]
    return x


def _digest(weights) -> str:
    import hashlib
    return hashlib.sha1(np.asarray(weights, np.float32).tobytes()).hexdigest()


def _lookup(graph, dotted: str):
    """Node `dotted` of `graph` (top-level names may contain dots; nested ones are
    `outer.inner`)."""
    if dotted in graph.nodes:
        return graph.nodes[dotted]
    for k, n in graph.nodes.items():
        if G.kind(n) == "NIRGraph" and dotted.startswith(k + "."):
            return _lookup(n, dotted[len(k) + 1:])
    raise KeyError(dotted)


def _graph_from(d):
    d = dict(d)
    d["type_check"] = False
    return _nir().NIRGraph.from_dict(d)


def _structured(net, desc, meta, dt):
    """The imported graph, node for node, with the network's current parameters and weights:
    neuron nodes get τ, thresholds, leak and reset from the network (r and w_in as read); a
    weight node that became one projection gets its weights with the node's input gain taken
    out again; chains composed into one projection must be unchanged."""
    graph = _graph_from(_decode(meta["graph"]))
    nir_conv = meta.get("convention", "nir") == "nir"
    weighted = set(meta.get("weighted_outputs", []))
    gains: Dict[str, np.ndarray] = {}
    for p in desc["populations"]:
        if p.get("kind") == "input":
            continue
        n = p["size"]
        if p["name"] in weighted:
            gains[p["name"]] = np.ones(n)
            continue
        node = _lookup(graph, p["name"])
        t = G.kind(node)

        def per(key, default):
            v = (p.get("per_neuron") or {}).get(key)
            if v is not None:
                return np.asarray(v, np.float64)
            return np.full(n, p.get("params", {}).get(key, default), np.float64)

        def put(attr, values):
            old = np.asarray(getattr(node, attr))
            v = np.asarray(values, old.dtype if old.dtype.kind == "f" else np.float32)
            if old.size != n:
                if not np.all(v == v[0]):
                    raise ValueError(f"NIR node '{p['name']}': '{attr}' now differs between "
                                     "neurons but the node holds one value")
                v = np.full(old.shape, v[0], dtype=v.dtype)
            else:
                v = v.reshape(old.shape)
            setattr(node, attr, v)

        def vec(attr):
            return np.resize(np.asarray(getattr(node, attr), np.float64).ravel(), n)

        tau_syn = per("tau_syn", 5.7).astype(np.float32)
        if t in ("CubaLIF", "CubaLI"):
            put("tau_syn", tau_syn * dt)
            put("tau_mem", per("tau_mem", 6.0) * dt)
            gain = vec("r") * vec("w_in")
            if nir_conv:
                gain = gain / tau_syn
        elif t in ("LIF", "LI"):
            put("tau", per("tau_mem", 6.0) * dt)
            gain = vec("r")
        elif t == "Threshold":
            gain = np.ones(n)
        else:
            gain = vec("r") * dt
        if t not in ("IF", "I", "Threshold"):
            put("v_leak", per("v_leak", 0.0))
        if t in G.SPIKING_NODES:
            th = per("v_th", 1.0).astype(np.float32)
            if nir_conv:
                th = np.nextafter(th, np.float32(-np.inf))
            put("threshold" if t == "Threshold" else "v_threshold", th)
            if getattr(node, "v_reset", None) is not None:
                put("v_reset", per("v_reset", 0.0))
        upd = p.get("params", {}).get("update", "input_first")
        if upd != "input_first":
            node.metadata = {**(getattr(node, "metadata", None) or {}), "neuropart_update": upd}
        gains[p["name"]] = gain
    chains = meta.get("chains", {})
    digest = meta.get("digest", {})
    for pr in desc["projections"]:
        name = pr["name"]
        chain = chains.get(name)
        if chain is None:
            raise ValueError(f"projection '{name}' was added after the import; export with "
                             "structure=False")
        w = np.asarray(net.weights(name), np.float64)
        core = [k for k in chain if G.kind(_lookup(graph, k)) not in
                ("Flatten", "Input", "Output", "Delay")]
        conn = pr.get("connectivity", {"type": "dense"})
        g = gains[pr["target"]]
        kinds = [G.kind(_lookup(graph, k)) for k in core]
        if kinds in (["Linear"], ["Affine"]) and conn["type"] == "dense":
            node = _lookup(graph, core[0])
            old = np.asarray(node.weight)
            node.weight = (w.reshape(old.shape) / g[:, None]).astype(old.dtype)
        elif kinds == ["Conv2d"] and conn["type"] == "conv2d":
            node = _lookup(graph, core[0])
            old = np.asarray(node.weight)
            g_ch = g.reshape(old.shape[0], -1)[:, 0]
            node.weight = (w.reshape(old.shape) / g_ch[:, None, None, None]).astype(old.dtype)
        elif _digest(w) != digest.get(name):
            raise ValueError(
                f"projection '{name}' composes the NIR nodes {', '.join(chain) or '(none)'} and "
                "its weights changed since the import: those nodes cannot hold them; export "
                "with structure=False (one Linear per projection)"
            )
    md = dict(graph.metadata or {})
    md["neuropart"] = json.dumps({"dt": dt, "convention": meta.get("convention", "nir")})
    graph.metadata = md
    return graph


def _check_out(path) -> None:
    """Refuse an output ``path`` that cannot be written, naming it, before any work (h5py's
    own message named neither the folder nor what was wrong with it)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; give a file name (e.g. net.nir) in it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: the folder {folder} does not exist")


def _write(nir, path: str, graph) -> None:
    """nir.write into a temporary file beside ``path``, renamed over it when complete (a
    failure leaves any earlier file as it was, never half a file), with 0-d parameters (some
    exporters write scalars, which nir 1.0.8 reads but cannot write) stored as one-element
    arrays."""
    _check_out(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        _write_graph(nir, tmp, graph)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_graph(nir, path: str, graph) -> None:
    try:
        nir.write(path, graph)
    except TypeError as e:
        if "Scalar" not in str(e):
            raise

        def lift(g):
            for n in g.nodes.values():
                if G.kind(n) == "NIRGraph":
                    lift(n)
                    continue
                for attr, v in vars(n).items():
                    if isinstance(v, (np.ndarray, np.generic)) and np.ndim(v) == 0 \
                            and np.asarray(v).dtype.kind == "f":
                        setattr(n, attr, np.asarray(v).reshape(1))

        lift(graph)
        nir.write(path, graph)


def _neuropart_meta(graph) -> Dict[str, Any]:
    m = (getattr(graph, "metadata", None) or {}).get("neuropart")
    if isinstance(m, (str, bytes)):
        try:
            m = json.loads(m)
        except ValueError:
            m = None
    return m if isinstance(m, dict) else {}


def _projection(src, chain, tgt, shapes, pop_of, gain, dt, notes) -> Dict[str, Any]:
    delay = 0
    linear = []
    for k, node in chain:
        t = G.node_kind(node)
        if t == "Delay":
            delay += G.delay_steps(k, node, dt)
        elif t not in (G.IDENTITY,):
            linear.append((k, node))
    named = [k for k, n in linear if G.node_kind(n) != "Flatten"]
    name = "+".join(named) if named else f"{src}_to_{tgt}"
    proj: Dict[str, Any] = {"name": name, "source": src, "target": tgt, "sign": "signed",
                            "delay": int(delay)}
    src_pop, tgt_pop = pop_of[src], pop_of[tgt]
    core = [(k, n) for k, n in linear if G.node_kind(n) != "Flatten"]
    kinds = [G.node_kind(n) for _, n in core]
    n_in, n_out = src_pop["size"], tgt_pop["size"]
    if kinds in (["Linear"], ["Affine"]):
        w = np.asarray(core[0][1].weight, np.float64)
        proj["connectivity"] = {"type": "dense"}
        proj["weights"] = (w * gain[:, None]).astype(np.float32).ravel().tolist()
        return proj
    conv = _as_conv2d(core, src_pop, tgt_pop, gain)
    if conv is not None:
        proj["connectivity"], proj["weights"] = conv
        if len(core) > 1:
            notes.append(f"{' -> '.join(named)}: composed into one convolution {src} -> {tgt} "
                         f"(kernel {conv[0]['kernel']}, stride {conv[0]['stride']})")
        return proj
    # Anything else: the composed matrix, dense or as a list of synapses.
    sub = [(k, n) for k, n in chain if G.node_kind(n) != "Delay"]
    m = G.compose(sub, G.shapes_along(sub, shapes[0])) * gain[:, None]
    m = m.astype(np.float32)
    if len(core) > 1 or kinds == ["Conv1d"]:
        notes.append(f"{' -> '.join(named)}: composed into one projection {src} -> {tgt}")
    nz = np.count_nonzero(m)
    if not named:
        notes.append(f"'{src}' feeds '{tgt}' directly: one-to-one synapses of weight 1")
    if nz * 4 >= m.size or m.size <= 4096:
        proj["connectivity"] = {"type": "dense"}
        proj["weights"] = m.ravel().tolist()
    else:
        t_idx, s_idx = np.nonzero(m)
        order = np.lexsort((t_idx, s_idx))
        proj["connectivity"] = {"type": "sparse", "connections":
                                np.stack([s_idx[order], t_idx[order]], 1).tolist()}
        proj["weights"] = m[t_idx[order], s_idx[order]].tolist()
    return proj


def _pool_conv(core, src_pop, tgt_pop, gain):
    """SumPool2d/AvgPool2d (non-overlapping, tiling the image) then Conv2d, as one
    convolution: kernel (k_c − 1)·s_p + k_p, stride s_c·s_p, padding p_c·s_p, each conv weight
    spread over the pooling window (the Sinabs CNNs' pool -> conv)."""
    (kp_name, pool), (kc_name, conv) = core
    if G.node_kind(pool) not in ("SumPool2d", "AvgPool2d") or G.node_kind(conv) != "Conv2d":
        return None
    kp, sp, pp = (G._ints(pool.kernel_size, 2), G._ints(pool.stride, 2),
                  G._ints(pool.padding, 2))
    c_in, h, wd = src_pop["shape"]
    if kp[0] != kp[1] or kp != sp or pp != (0, 0) or h % kp[0] or wd % kp[0]:
        return None
    w = np.asarray(conv.weight, np.float64)
    if w.shape[2] != w.shape[3] or int(conv.groups) != 1 or w.shape[1] != c_in:
        return None
    stride, dil = G._ints(conv.stride, 2), G._ints(conv.dilation, 2)
    pad = G._conv_padding(kc_name, conv, tuple(w.shape[2:]), stride, dil)
    if stride[0] != stride[1] or pad[0] != pad[1] or dil != (1, 1):
        return None
    c_out, oh, ow = tgt_pop["shape"]
    g = gain.reshape(c_out, oh * ow)
    if not np.all(g == g[:, :1]):
        return None
    k_p, k_c = kp[0], w.shape[2]
    kern, st, p = (k_c - 1) * k_p + k_p, stride[0] * k_p, pad[0] * k_p
    if (h + 2 * p - kern) // st + 1 != oh or (wd + 2 * p - kern) // st + 1 != ow:
        return None
    per = 1.0 / (k_p * k_p) if G.node_kind(pool) == "AvgPool2d" else 1.0
    big = np.zeros((c_out, c_in, kern, kern))
    for ky in range(k_c):
        for kx in range(k_c):
            big[:, :, ky * k_p:(ky + 1) * k_p, kx * k_p:(kx + 1) * k_p] += \
                w[:, :, ky:ky + 1, kx:kx + 1] * per
    big = big * g[:, 0][:, None, None, None]
    conn = {"type": "conv2d", "kernel": int(kern), "stride": int(st), "padding": int(p)}
    return conn, big.astype(np.float32).ravel().tolist()


def _as_conv2d(core, src_pop, tgt_pop, gain):
    """A single square Conv2d or pooling node between image-shaped populations as neuropart's
    conv2d connectivity (weights shared per position), the gain folded per output channel; None
    when it does not fit (then the composed matrix is used)."""
    if "shape" not in src_pop or "shape" not in tgt_pop:
        return None
    if len(core) == 2:
        return _pool_conv(core, src_pop, tgt_pop, gain)
    if len(core) != 1:
        return None
    k, node = core[0]
    t = G.node_kind(node)
    c_in = src_pop["shape"][0]
    c_out, oh, ow = tgt_pop["shape"]
    g = gain.reshape(c_out, oh * ow)
    if not np.all(g == g[:, :1]):
        return None
    g = g[:, 0]
    if t == "Conv2d":
        w = np.asarray(node.weight, np.float64)
        if w.shape[2] != w.shape[3] or int(node.groups) != 1:
            return None
        stride, dil = G._ints(node.stride, 2), G._ints(node.dilation, 2)
        pad = G._conv_padding(k, node, tuple(w.shape[2:]), stride, dil)
        if stride[0] != stride[1] or pad[0] != pad[1] or dil != (1, 1):
            return None
        kern, s, p = int(w.shape[2]), stride[0], pad[0]
    elif t in ("SumPool2d", "AvgPool2d"):
        kk, ss, pp = (G._ints(node.kernel_size, 2), G._ints(node.stride, 2),
                      G._ints(node.padding, 2))
        if kk[0] != kk[1] or ss[0] != ss[1] or pp[0] != pp[1] or c_in != c_out:
            return None
        kern, s, p = kk[0], ss[0], pp[0]
        w = np.zeros((c_out, c_in, kern, kern))
        for ch in range(c_out):
            w[ch, ch] = 1.0 / (kern * kern) if t == "AvgPool2d" else 1.0
    else:
        return None
    h, wd = src_pop["shape"][1:]
    if (h + 2 * p - kern) // s + 1 != oh or (wd + 2 * p - kern) // s + 1 != ow:
        return None
    w = w * g[:, None, None, None]
    conn = {"type": "conv2d", "kernel": kern, "stride": s, "padding": p}
    return conn, w.astype(np.float32).ravel().tolist()


def to_nir(net, path=None, dt: Optional[float] = None, convention: str = "nir",
           structure: bool = True):
    """The network as a NIR graph (written to ``path`` when given).

    ``convention="nir"`` (default) writes what NIR's readers integrate to the same spikes:
    ``CubaLIF``/``CubaLI`` with ``r = 1`` and ``w_in = τ_syn/dt`` (so that a spike moves the
    current by its weight), ``LIF``/``LI`` where the synaptic time constant is one step,
    ``IF``/``I`` for neurons without leak (``r = 1/dt``), ``Affine``/``Conv2d`` biases for
    constant currents, ``Delay`` nodes for delays, thresholds one float below neuropart's
    (NIR fires at v > v_threshold), and the step in the graph's metadata
    (``metadata["neuropart"]``), which :func:`from_nir` reads back. Networks imported from NIR
    keep their Output names and weighted Outputs. ``convention="hxtorch"`` writes the chip
    software's reading (CubaLIF/CubaLI with ``r = w_in = 1``, τ·dt). ``dt``: the file's time
    per step (default: the import's, else 1e-3). ``structure``: a network imported from NIR
    is written back node for node (the same names, types, nesting, r and w_in, with its
    current parameters and weights), unless ``structure=False`` or the step or convention
    differs from the import's.
    """
    nir = _nir()
    if convention not in CONVENTIONS:
        raise ValueError(f"convention '{convention}': use 'nir' or 'hxtorch'")
    desc = json.loads(net.to_json_str())
    meta = {}
    try:
        meta = json.loads(desc.get("metadata", {}).get("nir", "{}"))
    except ValueError:
        meta = {}
    if dt is None:
        dt = float(meta.get("dt", 1e-3))
    try:
        dt_ok = bool(np.isfinite(dt) and dt > 0)
    except TypeError:
        dt_ok = False
    if not dt_ok:
        raise ValueError(
            f"dt must be a finite number above 0 (the file's time unit per step), not {dt}"
        )
    if path is not None:
        _check_out(path)
    if structure and "graph" in meta and float(meta.get("dt", -1)) == float(dt) \
            and meta.get("convention", "nir") == convention:
        graph = _structured(net, desc, meta, dt)
        if path is not None:
            _write(nir, str(path), graph)
        return graph
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
    outputs = meta.get("outputs", {})  # population -> its Output node's name
    weighted = set(meta.get("weighted_outputs", []))  # readouts that were weighted Outputs
    taken |= set(outputs.values())

    def unique(name: str) -> str:
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def per(p, key, default):
        """A parameter per neuron (the population's value, or its per_neuron list)."""
        v = (p.get("per_neuron") or {}).get(key)
        if v is not None:
            return np.asarray(v, np.float32)
        return np.full(p["size"], p.get("params", {}).get(key, default), np.float32)

    sources = {pr["source"] for pr in desc["projections"]}
    bias_of: Dict[str, np.ndarray] = {}
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

        def arr(key, default):
            return per(p, key, default).reshape(shape)

        bias = per(p, "bias", 0.0)
        if np.any(bias):
            bias_of[name] = bias
        if name in weighted:
            nodes[name] = nir.Output(output_type={"output": np.array(shape)})
            continue
        tau_syn, tau_mem = arr("tau_syn", 5.7), arr("tau_mem", 6.0)
        v_leak = arr("v_leak", 0.0)
        leak = prm.get("leak", True)
        spiking = p.get("kind", "lif") == "lif"
        md = {"neuropart_update": prm.get("update", "input_first")}
        if convention == "hxtorch":
            common = dict(tau_syn=tau_syn * dt, tau_mem=tau_mem * dt, r=np.ones_like(v_leak),
                          v_leak=v_leak, w_in=np.ones_like(v_leak), metadata=md)
            if not leak or np.any(bias):
                raise ValueError(f"population '{name}': a neuron without leak or with a bias "
                                 "has no form in the hxtorch convention; use convention='nir'")
            if spiking:
                nodes[name] = nir.CubaLIF(v_threshold=arr("v_th", 1.0),
                                          v_reset=arr("v_reset", 0.0), **common)
            else:
                nodes[name] = nir.CubaLI(**common)
        else:
            v_init = per(p, "v_init", np.nan)
            v_init = np.where(np.isnan(v_init), per(p, "v_leak", 0.0), v_init)
            if np.any(v_init != 0):
                raise ValueError(
                    f"population '{name}': its membranes start at {float(v_init.max()):g} "
                    "(v_init, or v_leak when unset); NIR graphs start at 0 (set v_init = 0, or "
                    "export with convention='hxtorch', whose readers start at v_leak)"
                )
            th = np.nextafter(arr("v_th", 1.0), np.float32(-np.inf))
            one = np.ones_like(v_leak)
            if not leak:
                # v ← v + dt·r·S with r = 1/dt: one unit of input per unit of weight.
                if not np.all(tau_mem == 1.0):
                    raise ValueError(f"population '{name}': an integrator without leak "
                                     "exports only with τ_mem = one step (k = 1)")
                r = (one / np.float32(dt)).astype(np.float32)
                nodes[name] = (nir.IF(r=r, v_threshold=th, v_reset=arr("v_reset", 0.0))
                               if spiking else nir.I(r=r))
            elif np.all(tau_syn == 1.0):
                if spiking:
                    nodes[name] = nir.LIF(tau=tau_mem * dt, r=one, v_leak=v_leak, v_threshold=th,
                                          v_reset=arr("v_reset", 0.0))
                else:
                    nodes[name] = nir.LI(tau=tau_mem * dt, r=one, v_leak=v_leak)
            else:
                # τ_syn dI/dt = −I + w_in·S with w_in = τ_syn/dt: a spike moves I by w.
                common = dict(tau_syn=tau_syn * dt, tau_mem=tau_mem * dt, r=one, v_leak=v_leak,
                              w_in=tau_syn.astype(np.float32))
                if spiking:
                    nodes[name] = nir.CubaLIF(v_threshold=th, v_reset=arr("v_reset", 0.0),
                                              **common)
                else:
                    nodes[name] = nir.CubaLI(**common)
            nodes[name].metadata = md
        if name not in sources:
            out = outputs.get(name) or unique(f"{name}_output")
            nodes[out] = nir.Output(output_type={"output": np.array(shape)})
            edges.append((name, out))
    names = net.projections
    for pr, pname in zip(desc["projections"], names):
        conn = pr.get("connectivity", {"type": "dense"})
        w = np.asarray(net.weights(pname), dtype=np.float32)
        src, tgt = pops[pr["source"]], pops[pr["target"]]
        node_name = unique(pname.replace("->", "_to_").replace(":", "_").replace("/", "_"))
        bias = bias_of.pop(pr["target"], None)
        if conn["type"] in ("dense", "sparse"):
            if conn["type"] == "sparse":
                m = np.zeros((tgt["size"], src["size"]), np.float32)
                c = np.asarray(conn["connections"], np.int64).reshape(-1, 2)
                np.add.at(m, (c[:, 1], c[:, 0]), w)
            else:
                m = w.reshape(tgt["size"], src["size"])
            if bias is not None:
                nodes[node_name] = nir.Affine(weight=m, bias=bias)
            else:
                nodes[node_name] = nir.Linear(weight=m)
        elif conn["type"] == "conv2d":
            k = conn["kernel"]
            c_in = src["shape"][0]
            c_out = tgt["shape"][0]
            b = np.zeros(c_out, dtype=np.float32)
            if bias is not None:
                per_ch = bias.reshape(c_out, -1)
                if not np.all(per_ch == per_ch[:, :1]):
                    raise ValueError(f"population '{pr['target']}': its bias differs within a "
                                     "channel; a Conv2d bias is one value per channel")
                b = per_ch[:, 0].copy()
            nodes[node_name] = nir.Conv2d(
                input_shape=tuple(src["shape"][1:]),
                weight=w.reshape(c_out, c_in, k, k),
                stride=conn.get("stride", 1),
                padding=conn.get("padding", 0),
                dilation=1,
                groups=1,
                bias=b,
            )
        else:
            raise ValueError(f"projection '{pname}': {conn['type']} connectivity has no NIR form here")
        if conn["type"] != "conv2d" and src.get("shape"):
            # An image-shaped source reaches a Linear through a Flatten.
            flat = unique(f"{node_name}_flatten")
            nodes[flat] = nir.Flatten(input_type={"input": np.array(src["shape"])}, start_dim=0)
            edges.append((pr["source"], flat))
            edges.append((flat, node_name))
        else:
            edges.append((pr["source"], node_name))
        last = node_name
        if pr.get("delay", 0):
            if convention == "hxtorch":
                raise ValueError(f"projection '{pname}': a delay has no NIR form here")
            d = unique(f"{node_name}_delay")
            nodes[d] = nir.Delay(delay=np.full(tgt["size"], pr["delay"] * dt, np.float32))
            edges.append((node_name, d))
            last = d
        edges.append((last, pr["target"]))
    if bias_of:
        k = next(iter(bias_of))
        raise ValueError(f"population '{k}' has a bias but no projection into it to carry it "
                         "(NIR puts biases on Affine and convolution nodes)")
    # What NIR has no field for, so that from_nir gives this network back: its steps and each
    # population's emulated weight scale (None: the analog default).
    scales = {k: p.get("params", {}).get("weight_scale") for k, p in pops.items()
              if p["kind"] != "input"}
    record = {"dt": dt, "convention": convention, "steps": desc["steps"],
              "weight_scales": scales}
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                         metadata={"neuropart": json.dumps(record)})
    if path is not None:
        _write(nir, str(path), graph)
    return graph
