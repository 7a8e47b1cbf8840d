"""Every real NIR file in ../shared/nir_real/blobs (written by snnTorch, Norse, Sinabs,
Rockpool, Spyx, the NIR paper's examples, NIRTorch's tests, nir4s): it imports and its spikes
equal the independent integration of NIR's equations in nir_reference.py (ideal mode, at most
0.1 % of spike entries differing, from float rounding), or it is refused with the reason
this table expects.
"""

import glob
import json
import os
import re

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import neuropart  # noqa: E402
from conftest import ROOT  # noqa: E402
from nir_reference import NEURONS, SPIKING, integrate, inline, kind  # noqa: E402

REAL = os.path.join(ROOT, "..", "shared", "nir_real")
BLOBS = sorted(glob.glob(os.path.join(REAL, "blobs", "*.nir")))
if not BLOBS:
    pytest.skip(f"no real NIR files at {REAL} (the shared fixtures folder beside the repository; "
                "CI has it)", allow_module_level=True)


def blob(path):
    return os.path.basename(path)[:10]


# Files neuropart refuses, with what the message must say (why, naming the node).
UNREADABLE = "nir.read .*cannot read"
REFUSED = {
    # nir.read (1.0.8) cannot read these at all, with or without type checking.
    "24057376cf": UNREADABLE, "4b359ff1f5": UNREADABLE, "aee771e1fb": UNREADABLE,
    "c5db44fefd": UNREADABLE, "2b0feb3d98": UNREADABLE, "4bea868590": UNREADABLE,
    "77b4a802cc": UNREADABLE, "ccffe66bbb": UNREADABLE, "ed8f57e7f4": UNREADABLE,
    "669fbfadd3": UNREADABLE, "9122dac07e": UNREADABLE, "ac9b387893": UNREADABLE,
    # Spyx's SHD model: weights written [in, out] (and negative time constants).
    "8764a75969": r"NIR node 'linear' \(Linear\): weight \[128, 64\] does not fit .*transposed",
    # NIRTorch's feedback graph: an LI's continuous membrane feeds weights into a LIF.
    "677500314b": r"NIR node 'feedback_ir' \(LI\) feeds 'state' through 'state_weights'.*only spikes",
    # An old Braille export without Input node, whose weights do not fit each other.
    "c381ba29a0": r"no Input node",
}


def read(path):
    try:
        return nir.read(path), True
    except Exception:
        return nir.read(path, type_check=False), False


def taus(graph):
    nodes, _, _ = inline(graph)
    out = []
    for n in nodes.values():
        for a in ("tau", "tau_mem", "tau_syn"):
            if hasattr(n, a):
                out += list(np.asarray(getattr(n, a), float).ravel())
    return np.array(out)


def choose_dt(graph):
    """The step to run a file at: 0.1 ms for graphs in seconds (as snnTorch and Norse ran
    them), one unit for graphs in steps or without time constants (Sinabs's IF networks sum
    one input per step), and never longer than the shortest τ."""
    t = taus(graph)
    if t.size == 0 or t.min() >= 0.5:
        return 1.0
    return float(min(1e-4, t[t > 0].min()))


def population_inputs(net, graph, rng, batch, steps, rate):
    """Random input spikes per Input node, and the same shaped as NIR's Input nodes."""
    nodes, _, passthrough = inline(graph)
    xs, shaped = {}, {}
    for p in net.populations:
        if p["kind"] != "input":
            continue
        x = rng.random((batch, steps, p["size"])) < rate
        xs[p["name"]] = x
        sh = [int(v) for v in np.asarray(nodes[p["name"]].input_type["input"]).ravel()]
        while int(np.prod(sh)) != p["size"]:
            sh = sh[1:]
        shaped[p["name"]] = x.reshape((batch, steps) + tuple(sh)).astype(float)
    return xs, shaped


def all_blobs():
    return [pytest.param(p, id=blob(p)) for p in BLOBS]


@pytest.mark.parametrize("path", all_blobs())
def test_real_file_imports_and_matches_nir_equations_or_is_refused(path):
    b = blob(path)
    if b in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[b]):
            try:
                neuropart.from_nir(path, dt=1e-4)
            except ValueError as e:
                if "type_check=False" in str(e):
                    neuropart.from_nir(path, dt=1e-4, type_check=False)
                raise
        return
    graph, checked = read(path)
    dt = choose_dt(graph)
    notes = []
    if not checked:
        # Without type_check=False, the refusal says that nir.read needs it.
        with pytest.raises(ValueError, match="type_check=False"):
            neuropart.from_nir(path, dt=dt)
    net = neuropart.from_nir(path, dt=dt, type_check=checked, notes=notes)
    steps = 40
    rng = np.random.default_rng(int(b, 16) % 2**32)
    rate = 0.3 if any(kind(n) == "Conv2d" for n in inline(graph)[0].values()) else 0.25
    batch = 2
    xs, shaped = population_inputs(net, graph, rng, batch, steps, rate)
    got = net.run(xs, device="cpu")
    nodes, _, _ = inline(graph)
    flips = total = spikes = 0
    for s in range(batch):
        want = integrate(graph, {k: v[s] for k, v in shaped.items()}, dt, steps)
        for k, ref in want.items():
            if k not in got:
                continue  # an Output that repeats a population
            g = np.asarray(got[k][s], float).reshape(steps, -1)
            r = ref.reshape(steps, -1)
            assert g.shape == r.shape, (k, g.shape, r.shape)
            if kind(nodes[k]) in SPIKING:
                flips += int(np.sum(g != r))
                total += r.size
                spikes += int(r.sum())
            else:
                scale = max(1.0, float(np.abs(r).max()))
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * scale, err_msg=k)
    if total:
        assert flips <= 0.001 * total, f"{flips} of {total} spike entries differ ({spikes} spikes)"
    # Every neuron node of the file is a population.
    names = {p["name"] for p in net.populations}
    assert {k for k, n in nodes.items() if kind(n) in NEURONS} <= names


def test_counts_over_the_real_files():
    """The issue's targets: of the files nir.read reads, at least 30 import and run; every
    other file is refused with a message (0 crashes)."""
    readable = imported = 0
    for path in BLOBS:
        try:
            graph, checked = read(path)
        except Exception:
            with pytest.raises(ValueError, match=UNREADABLE):
                neuropart.from_nir(path)
            continue
        readable += 1
        try:
            neuropart.from_nir(path, dt=choose_dt(graph), type_check=checked)
            imported += 1
        except ValueError as e:
            assert blob(path) in REFUSED and re.search(REFUSED[blob(path)], str(e)), str(e)
    assert readable >= 33 and imported >= 30, (readable, imported)


BRAILLE = "82d89d4238"  # NIR paper / Norse: CubaLIF, recurrent, Affine biases
SINABS_CNN = "89e0a618fc"  # NIR paper's CNN (Sinabs): Conv2d, IF, SumPool2d, Flatten


def by_blob(b):
    return next(p for p in BLOBS if blob(p) == b)


@pytest.mark.parametrize("b,steps", [(BRAILLE, 256), (SINABS_CNN, 30)])
def test_headline_models_agree_with_nir_equations(b, steps):
    """The Braille RNN over a full 256-step sample and the Sinabs CNN: at most 0.1 % of all
    spike entries differ, with real activity in every spiking layer. (Per layer, the CNN's
    10-neuron output can reach about 1 %: its IF neurons never leak, so one float32 rounding
    difference in an early layer persists and spreads.)"""
    path = by_blob(b)
    graph, _ = read(path)
    dt = choose_dt(graph)
    net = neuropart.from_nir(path, dt=dt)
    rng = np.random.default_rng(5)
    xs, shaped = population_inputs(net, graph, rng, 3, steps, 0.2)
    got = net.run(xs, device="cpu")
    nodes, _, _ = inline(graph)
    refs = [integrate(graph, {q: v[s] for q, v in shaped.items()}, dt, steps) for s in range(3)]
    flips = total = 0
    for k, n in nodes.items():
        if kind(n) not in SPIKING:
            continue
        g = np.stack([got[k][s].reshape(steps, -1) for s in range(3)])
        r = np.stack([refs[s][k].reshape(steps, -1) for s in range(3)])
        assert r.sum() > 0, f"{k}: the reference fires"
        flips += int(np.sum(g != r))
        total += r.size
    assert flips <= 0.001 * total, f"{flips} of {total} spike entries differ"


def test_hxtorch_convention_keeps_the_chip_softwares_reading():
    """Under convention='hxtorch' a spike adds w·w_in·r to the current (no dt/τ_syn), and the
    membrane starts at v_leak: the weights are the NIR ones times r·w_in."""
    path = by_blob(BRAILLE)
    graph, _ = read(path)
    a = neuropart.from_nir(path, dt=1e-4)
    h = neuropart.from_nir(path, dt=1e-4, convention="hxtorch")
    lif = graph.nodes["lif1.lif"]
    g_h = float(np.asarray(lif.r).ravel()[0] * np.asarray(lif.w_in).ravel()[0])
    g_n = g_h * 1e-4 / float(np.asarray(lif.tau_syn).ravel()[0])
    w = np.asarray(graph.nodes["fc1"].weight, np.float32)
    np.testing.assert_allclose(h.weights("fc1").reshape(w.shape), w * g_h, rtol=1e-6)
    np.testing.assert_allclose(a.weights("fc1").reshape(w.shape), w * g_n, rtol=1e-5)


def imported():
    out = []
    for p in BLOBS:
        if blob(p) in REFUSED:
            continue
        out.append(pytest.param(p, id=blob(p)))
    return out


@pytest.mark.parametrize("path", imported())
def test_round_trip_through_nir_is_lossless(path, tmp_path):
    """from_nir(to_nir(net)) equals net for every imported real file: parameters, weights,
    time step, Output names; and the same spikes."""
    graph, checked = read(path)
    dt = choose_dt(graph)
    net = neuropart.from_nir(path, dt=dt, type_check=checked)
    out = tmp_path / "back.nir"
    net.to_nir(str(out))
    # dt and convention come from the file's metadata; a composed chain comes back as one
    # Linear into an image-shaped node, which nir's type check does not accept.
    back = neuropart.from_nir(str(out), type_check=False)
    a = {p["name"]: p for p in net.populations}
    b = {p["name"]: p for p in back.populations}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["size"] == b[k]["size"] and a[k]["kind"] == b[k]["kind"]
        for key, v in a[k].get("params", {}).items():
            w = b[k]["params"][key]
            if isinstance(v, float):
                assert w == pytest.approx(v, rel=1e-5, abs=1e-7), (k, key)
            else:
                assert w == v, (k, key)
    assert sorted(net.projections) == sorted(back.projections)
    for pr in net.projections:
        np.testing.assert_allclose(dense(back, pr), dense(net, pr), rtol=1e-5, atol=1e-7)
    written = nir.read(str(out), type_check=False)
    outs = {k for k, n in graph.nodes.items() if kind(n) == "Output" and "." not in k}
    assert outs <= set(written.nodes)
    rng = np.random.default_rng(2)
    xs, _ = population_inputs(net, graph, rng, 2, 25, 0.25)
    x, y = net.run(xs, device="cpu"), back.run(xs, device="cpu")
    for k in x:
        np.testing.assert_allclose(np.asarray(x[k], float), np.asarray(y[k], float),
                                   rtol=1e-5, atol=1e-6, err_msg=k)


def dense(net, name):
    """A projection's weights as a dense [target, source] matrix."""
    import json
    d = json.loads(net.to_json_str())
    pr = next(p for p in d["projections"] if p["name"] == name)
    size = {p["name"]: p["size"] for p in d["populations"]}
    m = np.zeros((size[pr["target"]], size[pr["source"]]))
    w = np.asarray(net.weights(name), float)
    conn = pr.get("connectivity", {"type": "dense"})
    if conn["type"] == "sparse":
        c = np.asarray(conn["connections"]).reshape(-1, 2)
        m[c[:, 1], c[:, 0]] = w
        return m
    if conn["type"] == "dense":
        return w.reshape(m.shape)
    return w  # conv2d: shared kernels, compared as they are


def test_nir_features_on_a_built_graph():
    """A conv bias, IF, per-neuron τ, a start at 0 below v_leak, a Delay, AvgPool2d -> Conv2d composed, a
    nested graph and a weighted Output, against the reference integration."""
    rng = np.random.default_rng(9)
    f = np.float32
    n_h = 2 * 3 * 3
    inner = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([6])}),
               "lif": nir.LIF(tau=np.linspace(2e-3, 5e-3, 6).astype(f), r=np.full(6, 1.5, f),
                              v_leak=np.full(6, 0.2, f), v_threshold=np.full(6, 0.3, f),
                              v_reset=np.zeros(6, f)),
               "output": nir.Output(output_type={"output": np.array([6])})},
        edges=[("input", "lif"), ("lif", "output")], type_check=False)
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
            "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])),
            "conv": nir.Conv2d(input_shape=(3, 3), weight=rng.normal(0, 1, (2, 1, 3, 3)).astype(f),
                               stride=1, padding=1, dilation=1, groups=1,
                               bias=np.array([0.05, -0.02], f)),
            "if": nir.IF(r=np.full((2, 3, 3), 1e3, f), v_threshold=np.full((2, 3, 3), 0.8, f),
                         v_reset=np.zeros((2, 3, 3), f)),
            "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0),
            "fc": nir.Linear(weight=rng.normal(0, 0.6, (6, n_h)).astype(f)),
            "delay": nir.Delay(delay=np.full(6, 2e-3, f)),
            "sub": inner,
            "ro": nir.Linear(weight=rng.normal(0, 1, (3, 6)).astype(f)),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "pool"), ("pool", "conv"), ("conv", "if"), ("if", "flat"),
               ("flat", "fc"), ("fc", "delay"), ("delay", "sub"), ("sub", "ro"),
               ("ro", "output")],
        type_check=False)
    notes = []
    net = neuropart.from_nir(g, dt=1e-3, notes=notes)
    assert any("inlined" in n for n in notes) and any("composed" in n for n in notes)
    steps = 30
    x = rng.random((2, steps, 36)) < 0.5
    got = net.run({"input": x}, device="cpu")
    for s in range(2):
        ref = integrate_delayed(g, x[s].reshape(steps, 1, 6, 6).astype(float), 1e-3, steps)
        for k in ("if", "sub.lif"):
            assert np.array_equal(got[k][s].reshape(steps, -1), ref[k].reshape(steps, -1)), k
        np.testing.assert_allclose(got["output"][s], ref["output"].reshape(steps, -1),
                                   rtol=1e-4, atol=1e-4)
    assert got["if"].any() and got["sub.lif"].any()


def integrate_delayed(g, x, dt, steps):
    """The reference with the Delay node (2 steps) applied by hand: run the graph up to the
    delay, shift, run the rest (the reference integrator has no Delay)."""
    nodes = dict(g.nodes)
    pre = integrate(nir.NIRGraph(
        nodes={k: nodes[k] for k in ("input", "pool", "conv", "if", "flat", "fc")} |
        {"tap": nir.Output(output_type={"output": np.array([6])})},
        edges=[("input", "pool"), ("pool", "conv"), ("conv", "if"), ("if", "flat"),
               ("flat", "fc"), ("fc", "tap")], type_check=False), {"input": x}, dt, steps)
    tap = np.concatenate([np.zeros((2, 6)), pre["tap"][:-2]])
    post = integrate(nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([6])}), "sub": g.nodes["sub"],
               "ro": g.nodes["ro"], "output": g.nodes["output"]},
        edges=[("input", "sub"), ("sub", "ro"), ("ro", "output")], type_check=False),
        {"input": tap}, dt, steps)
    out = {"if": pre["if"], "output": post["output"]}
    out["sub.lif"] = post["sub.lif"]
    return out


def test_network_run_takes_t_from_its_input():
    net = neuropart.from_nir(by_blob(BRAILLE), dt=1e-4, steps=30)
    x = np.random.default_rng(1).random((2, 77, 12)) < 0.2
    got = net.run({"input": x}, device="cpu")
    assert got["lif2"].shape == (2, 77, 7)
    assert net.steps == 30


def same_graph(a, b, where=""):
    """Node names, types, nesting, edges and every array attribute equal up to float rounding."""
    assert set(a.nodes) == set(b.nodes), where
    assert {tuple(e) for e in a.edges} == {tuple(e) for e in b.edges}, where
    for k, n in a.nodes.items():
        m = b.nodes[k]
        assert kind(n) == kind(m), f"{where}{k}"
        if kind(n) == "NIRGraph":
            same_graph(n, m, f"{where}{k}.")
            continue
        for attr, v in vars(n).items():
            if attr in ("metadata", "input_type", "output_type") or v is None:
                continue
            va = np.asarray(v)
            if va.dtype.kind not in "fiu":
                continue
            vb = np.asarray(getattr(m, attr))
            if va.shape != vb.shape and va.size == vb.size == 1:
                vb = vb.reshape(va.shape)  # nir writes a scalar as one element
            assert va.shape == vb.shape, f"{where}{k}.{attr}"
            np.testing.assert_allclose(vb, va, rtol=2e-6, atol=1e-7,
                                       err_msg=f"{where}{k}.{attr}")


@pytest.mark.parametrize("path", imported())
def test_export_of_an_import_is_the_graph_read(path, tmp_path):
    """to_nir(from_nir(g)) is g: the same nodes (names, types, nesting), edges and
    parameters up to float rounding, with the step recorded in the metadata."""
    graph, checked = read(path)
    dt = choose_dt(graph)
    net = neuropart.from_nir(path, dt=dt, type_check=checked)
    out = tmp_path / "same.nir"
    back = net.to_nir(str(out))
    same_graph(graph, back)
    same_graph(graph, nir.read(str(out), type_check=False))
    assert json.loads(back.metadata["neuropart"])["dt"] == dt
    # After training-like changes to a weight node the export carries the new weights.
    name = next((p for p in net.projections if p in ("fc1", "fc", "0_LinearTorch", "linear1")),
                None)
    if name is not None:
        w = net.weights(name) * 2
        net.set_weights(name, w)
        g2 = net.to_nir()
        node = g2.nodes[name]
        np.testing.assert_allclose(np.asarray(node.weight).ravel(),
                                   2 * np.asarray(graph.nodes[name].weight).ravel(), rtol=1e-5)


@pytest.mark.parametrize("b", [BRAILLE, SINABS_CNN, "b23438d4e1", "f75a86dbef"])
@pytest.mark.parametrize("mode", ["ideal", "emulated"])
def test_gpu_equals_cpu_on_real_files(b, mode):
    """Biases, integrators without leak, membranes starting below rest and weighted Outputs:
    the GPU kernels give the CPU's spikes (and readout membranes)."""
    path = by_blob(b)
    graph, checked = read(path)
    net = neuropart.from_nir(path, dt=choose_dt(graph), type_check=checked)
    xs, _ = population_inputs(net, graph, np.random.default_rng(4), 2, 25, 0.25)
    try:
        gpu = net.run(xs, device="gpu", mode=mode)
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no GPU adapter: {e}")
    cpu = net.run(xs, device="cpu", mode=mode)
    for k in cpu:
        if cpu[k].dtype == bool:
            np.testing.assert_array_equal(gpu[k], cpu[k], err_msg=k)
        else:
            np.testing.assert_allclose(gpu[k], cpu[k], atol=1e-6, err_msg=k)


def small_trainable(hidden):
    f = np.float32
    rng = np.random.default_rng(0)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([64])}),
               "fc": nir.Affine(weight=rng.normal(0.05, 0.3, (20, 64)).astype(f),
                                bias=rng.normal(0, 0.5, 20).astype(f)),
               "h": hidden,
               "fo": nir.Linear(weight=rng.normal(0, 0.3, (3, 20)).astype(f)),
               "o": nir.CubaLI(tau_syn=np.full(3, 5e-3, f), tau_mem=np.full(3, 6e-3, f),
                               r=np.ones(3, f), v_leak=np.zeros(3, f), w_in=np.ones(3, f))},
        edges=[("input", "fc"), ("fc", "h"), ("h", "fo"), ("fo", "o")])


def test_training_keeps_working_with_biases_and_refuses_integrators():
    """An imported graph with biases and membranes that start below rest trains (weights
    change, the biases stay: they get no gradient); one with IF neurons is refused by name."""
    import json
    f = np.float32
    lif = nir.CubaLIF(tau_syn=np.full(20, 5e-3, f), tau_mem=np.full(20, 6e-3, f),
                      r=np.ones(20, f), v_leak=np.full(20, 0.3, f), v_threshold=np.ones(20, f),
                      v_reset=np.zeros(20, f), w_in=np.ones(20, f))
    net = neuropart.from_nir(small_trainable(lif), dt=1e-3)
    rng = np.random.default_rng(1)
    x = rng.random((60, 8, 8)).astype(f)
    y = x.reshape(60, -1)[:, :3].argmax(1).astype(np.int64)
    before = net.weights("fc").copy()
    bias = json.loads(net.to_json_str())["populations"][1]["per_neuron"]["bias"]
    records = net.train(x[:40], y[:40], x[40:], y[40:], epochs=2)
    assert len(records) == 2 and np.isfinite(records[-1]["train_loss"])
    assert not np.array_equal(net.weights("fc"), before)
    assert json.loads(net.to_json_str())["populations"][1]["per_neuron"]["bias"] == bias
    iff = nir.IF(r=np.full(20, 1e3, f), v_threshold=np.ones(20, f), v_reset=np.zeros(20, f))
    net = neuropart.from_nir(small_trainable(iff), dt=1e-3)
    with pytest.raises(ValueError, match="population 'h'.*training needs leaky neurons"):
        net.train(x[:40], y[:40], x[40:], y[40:], epochs=1)
