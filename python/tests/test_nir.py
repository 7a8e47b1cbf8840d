"""NIR import and export under the chip software's reading (convention="hxtorch": a spike
adds w·w_in·r to the current, membranes start at v_leak) against the numpy reference
(tests/reference.py), file round trips with identical spikes, and the refusals. NIR's own
semantics (the default) are tested against the real files in test_nir_real.py and below."""

import json

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import neuropart  # noqa: E402
from reference import conv_matrix, simulate  # noqa: E402

RNG = np.random.default_rng(11)
DT = 1e-3


def dyadic(shape, lo=-6, hi=12, scale=16):
    return (RNG.integers(lo, hi, size=shape) / scale).astype(np.float32)


def full(shape, v):
    return np.full(shape, v, dtype=np.float32)


def cuba_lif(n, tau_syn=8e-3, tau_mem=4e-3, th=0.5, r=1.0, w_in=1.0):
    return nir.CubaLIF(tau_syn=full(n, tau_syn), tau_mem=full(n, tau_mem), r=full(n, r),
                       v_leak=full(n, 0.0), v_threshold=full(n, th), v_reset=full(n, 0.0),
                       w_in=full(n, w_in))


def cuba_li(n, tau_syn=8e-3, tau_mem=4e-3):
    return nir.CubaLI(tau_syn=full(n, tau_syn), tau_mem=full(n, tau_mem), r=full(n, 1.0),
                      v_leak=full(n, 0.0))


def pop(name, n, kind, tau_mem=4.0, tau_syn=8.0, th=0.5):
    return {"name": name, "size": n, "kind": kind, "tau_mem": tau_mem, "tau_syn": tau_syn,
            "v_leak": 0.0, "v_th": th, "v_reset": 0.0}


def run_both(graph, ref_pops, ref_projs, n_in, steps=12, update="input_first", name="input"):
    net = neuropart.from_nir(graph, dt=DT, steps=steps, update=update, convention="hxtorch")
    x = RNG.random((4, steps, n_in)) < 0.3
    got = net.run({name: x}, device="cpu")
    want = simulate([{"name": name, "size": n_in, "kind": "input"}] + ref_pops, ref_projs,
                    {name: x}, steps, update)
    for p in ref_pops:
        np.testing.assert_array_equal(got[p["name"]], want[p["name"]], err_msg=p["name"])
    return got


@pytest.mark.parametrize("update", ["input_first", "hxtorch"])


def test_linear_cubalif_cubali(update):
    w1, w2 = dyadic((6, 8)), dyadic((3, 6))
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([8])}),
            "fc1": nir.Linear(weight=w1),
            "lif1": cuba_lif(6),
            "fc2": nir.Linear(weight=w2),
            "li2": cuba_li(3),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2"), ("li2", "output")],
    )
    got = run_both(g, [pop("lif1", 6, "lif"), pop("li2", 3, "readout")],
                   [("input", "lif1", w1), ("lif1", "li2", w2)], 8, update=update)
    assert got["lif1"].any()


def test_affine_lif_li_and_folded_gains():
    # LIF/LI have no synaptic filter (τ_syn = one step); r · w_in folds into the weights.
    w1, w2 = dyadic((5, 8)), dyadic((2, 5))
    lif = nir.LIF(tau=full(5, 4e-3), r=full(5, 2.0), v_leak=full(5, 0.0),
                  v_threshold=full(5, 0.5), v_reset=full(5, 0.0))
    li = nir.LI(tau=full(2, 2e-3), r=full(2, 1.0), v_leak=full(2, 0.0))
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([8])}),
            "aff": nir.Affine(weight=w1, bias=np.zeros(5, np.float32)),
            "lif": lif,
            "fc": nir.Linear(weight=w2),
            "li": li,
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("input", "aff"), ("aff", "lif"), ("lif", "fc"), ("fc", "li"), ("li", "output")],
    )
    run_both(g, [pop("lif", 5, "lif", 4.0, 1.0), pop("li", 2, "readout", 2.0, 1.0)],
             [("input", "lif", 2.0 * w1), ("lif", "li", w2)], 8)


def test_conv2d_flatten_and_sumpool():
    # 1x6x6 input -> Conv2d(2 channels, k 3, pad 1) -> LIF [2,6,6] -> SumPool2d(2) -> LIF
    # [2,3,3] -> Flatten -> Linear -> LI.
    wc = dyadic((2, 1, 3, 3))
    wl = dyadic((3, 18))
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
            "conv": nir.Conv2d(input_shape=(6, 6), weight=wc, stride=1, padding=1, dilation=1,
                               groups=1, bias=np.zeros(2, np.float32)),
            "l1": cuba_lif((2, 6, 6)),
            "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                  padding=np.array([0, 0])),
            "l2": cuba_lif((2, 3, 3)),
            "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0),
            "fc": nir.Linear(weight=wl),
            "out": cuba_li(3),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "conv"), ("conv", "l1"), ("l1", "pool"), ("pool", "l2"), ("l2", "flat"),
               ("flat", "fc"), ("fc", "out"), ("out", "output")],
        type_check=False,
    )
    pool = np.zeros((2, 2, 2, 2), np.float32)
    pool[0, 0] = 1.0
    pool[1, 1] = 1.0
    got = run_both(
        g,
        [pop("l1", 72, "lif"), pop("l2", 18, "lif"), pop("out", 3, "readout")],
        [("input", "l1", conv_matrix((1, 6, 6), wc, 1, 1)),
         ("l1", "l2", conv_matrix((2, 6, 6), pool, 2, 0)),
         ("l2", "out", wl)],
        36,
    )
    assert got["l1"].any()


def test_file_round_trip_gives_identical_spikes(tmp_path):
    w1, w2 = dyadic((6, 8)), dyadic((3, 6))
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([8])}),
            "fc1": nir.Linear(weight=w1),
            "lif1": cuba_lif(6),
            "fc2": nir.Linear(weight=w2),
            "li2": cuba_li(3),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2"), ("li2", "output")],
    )
    net = neuropart.from_nir(g, steps=12)
    path = tmp_path / "net.nir"
    net.to_nir(str(path))
    back = neuropart.from_nir(str(path), steps=12)
    x = RNG.random((3, 12, 8)) < 0.3
    a, b = net.run({"input": x}, device="cpu"), back.run({"input": x}, device="cpu")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # And a network from a TOML file (image-shaped input through a Flatten).
    written = nir.read(str(path))
    assert {type(n).__name__ for n in written.nodes.values()} >= {"Input", "Linear", "CubaLIF", "CubaLI"}
    # A network from a TOML description: its steps and emulated weight scales (the analog
    # default, and one set by hand) come back, so emulated runs are the same spike for spike.
    desc = {
        "name": "toml", "steps": 9, "seed": 4,
        "populations": [
            {"name": "in", "size": 8, "kind": "input"},
            {"name": "h", "size": 6, "kind": "lif", "params": {"weight_scale": 20.0}},
            {"name": "out", "size": 3, "kind": "readout"},
        ],
        "projections": [
            {"source": "in", "target": "h", "init": {"mean": 0.3, "std": 0.2}},
            {"source": "h", "target": "out", "init": {"mean": 0.1, "std": 0.3}},
        ],
    }
    net = neuropart.Network.from_str(json.dumps(desc), "json")
    net.to_nir(str(path))
    back = neuropart.from_nir(str(path))
    assert back.steps == 9
    scales = {p["name"]: p["params"].get("weight_scale") for p in back.populations}
    assert scales["h"] == 20.0 and scales["out"] is None, scales
    x = RNG.random((3, 9, 8)) < 0.3
    a = net.run({"in": x}, device="cpu", mode="emulated", seed=3)
    b = back.run({"in": x}, device="cpu", mode="emulated", seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_recurrent_graph():
    # input -> fc -> h (LIF) with h -> rec -> h: a projection inside a loop takes one extra
    # step (neuropart's timing), so the reference adds the recurrent input one step late.
    w_in, w_rec, w_out = dyadic((5, 6)), dyadic((5, 5), -4, 4), dyadic((2, 5))
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([6])}),
            "fc": nir.Linear(weight=w_in),
            "h": cuba_lif(5),
            "rec": nir.Linear(weight=w_rec),
            "fo": nir.Linear(weight=w_out),
            "o": cuba_li(2),
        },
        edges=[("input", "fc"), ("fc", "h"), ("h", "rec"), ("rec", "h"), ("h", "fo"), ("fo", "o")],
    )
    net = neuropart.from_nir(g, steps=12, convention="hxtorch")
    assert sorted(net.projections) == ["fc", "fo", "rec"]
    x = RNG.random((3, 12, 6)) < 0.4
    got = net.run({"input": x}, device="cpu")
    # Reference: the recurrent spikes of step t arrive at t + 1.
    f = np.float32
    a, k = f(1) - f(1) / f(8.0), f(1) / f(4.0)
    i = np.zeros((3, 5), f)
    v = np.zeros((3, 5), f)
    prev = np.zeros((3, 5), f)
    spikes = np.zeros((3, 12, 5), bool)
    for t in range(12):
        inp = (x[:, t, :].astype(f) @ w_in.T).astype(f) + (prev @ w_rec.T).astype(f)
        i = (a * i + inp).astype(f)
        v = (v + k * ((f(0) - v) + i)).astype(f)
        s = v >= f(0.5)
        spikes[:, t] = s
        v = np.where(s, f(0), v).astype(f)
        prev = s.astype(f)
    np.testing.assert_array_equal(got["h"], spikes)
    assert spikes.any()


def test_update_order_survives_the_round_trip(tmp_path):
    w1, w2 = dyadic((6, 8)), dyadic((3, 6))
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([8])}),
               "fc1": nir.Linear(weight=w1), "lif1": cuba_lif(6), "fc2": nir.Linear(weight=w2),
               "li2": cuba_li(3)},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2")],
    )
    net = neuropart.from_nir(g, steps=12, update="hxtorch")
    path = tmp_path / "h.nir"
    net.to_nir(str(path))
    back = neuropart.from_nir(str(path), steps=12)
    assert all(p.get("params", {}).get("update", "hxtorch") == "hxtorch"
               for p in back.populations if p["kind"] != "input")
    x = RNG.random((3, 12, 8)) < 0.3
    a, b = net.run({"input": x}, device="cpu"), back.run({"input": x}, device="cpu")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    names = set(nir.read(str(path)).nodes)
    # The graph's Output nodes (nir names them after their source) keep their names.
    outs = {k for k, n in g.nodes.items() if type(n).__name__ == "Output"}
    assert outs and outs <= names


def graph_with(node, name="x", n=4):
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([n])}), name: node,
               "lif": cuba_lif(n)},
        edges=[("input", name), (name, "lif")],
        type_check=False,
    )


def test_threshold_nodes_spike_where_their_input_exceeds_the_threshold():
    """NIR's Threshold, H(x - threshold) of the step's input x, as a neuron without memory:
    Input -> Affine -> Threshold -> Linear -> Output against numpy, step by step; the node
    comes back from to_nir as a Threshold with its thresholds."""
    rng = np.random.default_rng(3)
    w1, b1 = dyadic((5, 6)), dyadic(5, scale=32)
    th = np.array([0.25, 0.5, -0.125, 1.0, 0.0], np.float32)
    w2 = dyadic((2, 5))
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([6])}),
               "fc": nir.Affine(weight=w1, bias=b1), "thr": nir.Threshold(threshold=th),
               "fc2": nir.Linear(weight=w2), "output": nir.Output(output_type={"output": np.array([2])})},
        edges=[("input", "fc"), ("fc", "thr"), ("thr", "fc2"), ("fc2", "output")],
        type_check=False,
    )
    net = neuropart.from_nir(g, dt=1e-3)
    x = rng.random((3, 20, 6)) < 0.4
    out = net.run({"input": x}, device="cpu")
    want = np.einsum("btj,ij->bti", x.astype(np.float64), w1) + b1 > th
    np.testing.assert_array_equal(out["thr"], want)
    assert want.any() and not want.all()
    np.testing.assert_allclose(out["output"], np.einsum("bti,oi->bto", want, w2), atol=1e-6)
    back = net.to_nir()
    assert type(back.nodes["thr"]).__name__ == "Threshold"
    np.testing.assert_array_equal(np.asarray(back.nodes["thr"].threshold), th)
    again = neuropart.from_nir(back)
    np.testing.assert_array_equal(again.run({"input": x}, device="cpu")["thr"], want)


def test_refusals_name_the_node():
    lif = cuba_lif(4)
    lif.tau_mem = np.array([4e-3, -4e-3, 5e-3, 4e-3], np.float32)
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}),
                            "fc": nir.Linear(weight=dyadic((4, 4))), "lif": lif},
                     edges=[("input", "fc"), ("fc", "lif")], type_check=False)
    with pytest.raises(ValueError, match=r"'lif' \(CubaLIF\): tau_mem = -0.004 at neuron 1"):
        neuropart.from_nir(g)
    lif.tau_mem = np.array([4e-3, 4e-3, 5e-4, 4e-3], np.float32)
    with pytest.raises(ValueError, match=r"'lif' \(CubaLIF\): tau_mem = 0.0005 is shorter than "
                                         r"the time step dt = 0.001.*pass dt <= 0.0005"):
        neuropart.from_nir(g)
    li = cuba_li(4)
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}),
                            "fc": nir.Linear(weight=dyadic((4, 4))), "li": li,
                            "w": nir.Linear(weight=dyadic((4, 4))), "lif": cuba_lif(4)},
                     edges=[("input", "fc"), ("fc", "li"), ("li", "w"), ("w", "lif")],
                     type_check=False)
    with pytest.raises(ValueError, match="'li' \\(CubaLI\\) feeds 'lif'.*only spikes"):
        neuropart.from_nir(g)
    with pytest.raises(ValueError, match="dt"):
        neuropart.from_nir(graph_with(nir.Linear(weight=dyadic((4, 4)))), dt=0)
    # Weights no float32 holds, or not real: refused naming the node and the first value
    # (they went into the network description as invalid JSON).
    for bad, word in [(np.nan, "nan"), (np.inf, "inf"), (1e39, r"1e\+39")]:
        w = dyadic((4, 4)).astype(np.float64)
        w[2, 1] = bad
        with pytest.raises(ValueError, match=rf"'fc' \(Linear\): weight has 1 values.*{word} "
                                             r"at index \[2, 1\]"):
            neuropart.from_nir(graph_with(nir.Linear(weight=w), name="fc"))
    with pytest.raises(ValueError, match=r"'fc' \(Linear\): weight holds complex128"):
        neuropart.from_nir(graph_with(nir.Linear(weight=dyadic((4, 4)).astype(complex)), "fc"))
    # steps and name: checked, not coerced.
    good = graph_with(nir.Linear(weight=dyadic((4, 4))))
    for steps in (0, -5, 2.5, "10", True):
        with pytest.raises(ValueError, match="steps must be a whole number"):
            neuropart.from_nir(good, steps=steps)
    for name in ("", 5):
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            neuropart.from_nir(good, name=name)


def test_a_recurrent_nir_graph_larger_than_a_chip_runs_on_a_system():
    # 300 recurrent neurons reading 100 inputs and each other: 400 signed inputs, 4 circuits
    # each, 1 200 circuits: more than one chip; on a 4-chip system the loop spans 3 chips.
    n_in, n = 100, 300
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([n_in])}),
            "fc": nir.Linear(weight=dyadic((n, n_in), 0, 12)),
            "h": cuba_lif(n),
            "rec": nir.Linear(weight=dyadic((n, n), -2, 2, 64)),
            "fo": nir.Linear(weight=dyadic((2, n))),
            "o": cuba_li(2),
        },
        edges=[("input", "fc"), ("fc", "h"), ("h", "rec"), ("rec", "h"), ("h", "fo"), ("fo", "o")],
    )
    net = neuropart.from_nir(g, steps=20, convention="hxtorch")
    with pytest.raises(ValueError, match="recurrent subnetwork"):
        net.plan()
    sub = neuropart.Substrate.bss2().with_system(chips=4)
    parts = net.plan(substrate=sub).partitions
    loop = [p for p in parts if any(r["population"] == "h" for r in p["ranges"])]
    assert sorted(p["chip"] for p in loop) == [0, 1, 2]
    assert {p["system_run"] for p in parts} == {0}
    x = RNG.random((2, 20, n_in)) < 0.2
    a = net.run({"input": x}, device="cpu", substrate=sub)
    b = net.run({"input": x}, device="cpu", substrate=sub)
    np.testing.assert_array_equal(a["h"], b["h"])
    assert a["h"].shape == (2, 20, n) and a["h"].any()

def small_graph(extra_nodes=None, extra_edges=()):
    """input 4 -> fc -> lif 4 -> out -> li 2, plus `extra_nodes` and `extra_edges`."""
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Linear(weight=dyadic((4, 4))), "lif": cuba_lif(4),
             "out": nir.Linear(weight=dyadic((2, 4))), "li": cuba_li(2)}
    nodes.update(extra_nodes or {})
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "out"), ("out", "li")] + list(extra_edges)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_dangling_weight_nodes_and_graphs_without_input_are_refused():
    # A weight node with no outgoing edge: its target would never be driven.
    g = small_graph({"dangling": nir.Linear(weight=dyadic((2, 4)))}, [("lif", "dangling")])
    with pytest.raises(ValueError, match="'dangling' \\(Linear\\) is not on a path"):
        neuropart.from_nir(g)
    # A weight node that no population feeds.
    g = small_graph({"orphan": nir.Linear(weight=dyadic((2, 4)))}, [("orphan", "li")])
    with pytest.raises(ValueError, match="'orphan' \\(Linear\\) is not on a path"):
        neuropart.from_nir(g)
    # No Input node: the first weight node would be dropped.
    g = nir.NIRGraph(nodes={"fc": nir.Linear(weight=dyadic((4, 4))), "lif": cuba_lif(4),
                            "out": nir.Linear(weight=dyadic((2, 4))), "li": cuba_li(2)},
                     edges=[("fc", "lif"), ("lif", "out"), ("out", "li")], type_check=False)
    with pytest.raises(ValueError, match="no Input node"):
        neuropart.from_nir(g)
    assert neuropart.from_nir(small_graph()).projections == ["fc", "out"]


def two_pops(name="hidden", projections=None):
    desc = {
        "name": "pair", "steps": 8,
        "populations": [{"name": "in", "size": 4, "kind": "input"},
                        {"name": name, "size": 3, "kind": "lif"}],
        "projections": projections or [{"source": "in", "target": name}],
    }
    return neuropart.Network.from_str(json.dumps(desc), "json")


def test_export_checks_dt_names_and_projection_names(tmp_path):
    net = two_pops()
    for dt in (0, 0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dt must be a finite number above 0"):
            net.to_nir(dt=dt)
    with pytest.raises(ValueError, match="population 'a/b'.*'/'"):
        two_pops("a/b").to_nir(str(tmp_path / "x.nir"))
    assert not (tmp_path / "x.nir").exists()
    # Two projections between the same populations under one (default) name are refused; named
    # apart, each is its own weight node and survives the round trip.
    same = [{"source": "in", "target": "hidden", "init": {"mean": 0.5, "std": 0.0}},
            {"source": "in", "target": "hidden", "init": {"mean": -0.25, "std": 0.0}}]
    with pytest.raises(ValueError, match="projection 'in->hidden'.*#0 and #1"):
        two_pops(projections=same)
    same[1]["name"] = "in->hidden/2"
    net = two_pops(projections=same)
    path = tmp_path / "pair.nir"
    g = net.to_nir(str(path))
    linear = sorted(k for k, n in g.nodes.items() if type(n).__name__ == "Linear")
    assert len(linear) == 2
    weights = sorted(float(np.asarray(g.nodes[k].weight).ravel()[0]) for k in linear)
    assert weights == [-0.25, 0.5]
    back = neuropart.from_nir(str(path))
    got = sorted(float(back.weights(p)[0]) for p in back.projections)
    assert got == pytest.approx([-0.25, 0.5], rel=1e-6)  # up to float rounding


def test_a_loop_of_flatten_nodes_is_refused_naming_it():
    nir = pytest.importorskip("nir")
    n = np.ones(3, np.float32)
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([3])),
               "a": nir.Flatten(input_type={"input": np.array([3])}, start_dim=0),
               "b": nir.Flatten(input_type={"input": np.array([3])}, start_dim=0),
               "w": nir.Linear(weight=np.eye(3, dtype=np.float32)),
               "lif": nir.LIF(tau=n * 1e-2, r=n, v_leak=0 * n, v_threshold=n),
               "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "w"), ("w", "lif"),
               ("lif", "output")],
        type_check=False)
    with pytest.raises(ValueError, match="a -> b -> a form a loop of Flatten nodes"):
        neuropart.from_nir(g)
    # A bad parameter names the node and the neuron, not a column of generated JSON.
    bad = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([3])),
               "w": nir.Linear(weight=np.eye(3, dtype=np.float32)),
               "lif": nir.LIF(tau=-n, r=n, v_leak=0 * n, v_threshold=n),
               "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "w"), ("w", "lif"), ("lif", "output")], type_check=False)
    with pytest.raises(ValueError, match=r"NIR node 'lif' \(LIF\): tau = -1") as e:
        neuropart.from_nir(bad)
    assert "column" not in str(e.value)
    with pytest.raises(TypeError, match="NIRGraph or the path"):
        neuropart.from_nir(None)


def test_a_recurrent_nir_graph_trains_and_exports(tmp_path):
    # input -> h (LIF) with h -> rec -> h, read out by o: once refused for training ("training
    # supports feed-forward networks"); now it trains through time, the loss falls, the
    # recurrent weights move, and the trained graph exports and reads back.
    n_in, n_h = 16, 12
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([n_in])}),
            "fc": nir.Linear(weight=(RNG.normal(0.3, 0.4, (n_h, n_in))).astype(np.float32)),
            "h": cuba_lif(n_h),
            "rec": nir.Linear(weight=(RNG.normal(0.0, 0.2, (n_h, n_h))).astype(np.float32)),
            "fo": nir.Linear(weight=(RNG.normal(0.0, 0.3, (2, n_h))).astype(np.float32)),
            "o": cuba_li(2),
        },
        edges=[("input", "fc"), ("fc", "h"), ("h", "rec"), ("rec", "h"), ("h", "fo"), ("fo", "o")],
    )
    net = neuropart.from_nir(g, steps=20)
    # Two classes: bright left half or bright right half (flat 16-pixel images).
    x = np.zeros((200, n_in), np.float32)
    y = RNG.integers(0, 2, 200)
    for k in range(200):
        half = slice(0, 8) if y[k] == 0 else slice(8, 16)
        x[k, half] = RNG.uniform(0.5, 1.0, 8)
    rec_before = net.weights("rec").copy()
    records = net.train(x, y, epochs=3, mode="emulated", device="cpu", batch=20, lr=0.01,
                        augment=False)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert not np.array_equal(net.weights("rec"), rec_before)
    path = tmp_path / "rec.nir"
    neuropart.to_nir(net, str(path))
    back = neuropart.from_nir(nir.read(str(path)), steps=20)
    # Equal up to float rounding (export takes NIR's input gain out, import puts it back).
    np.testing.assert_allclose(back.weights("rec"), net.weights("rec"), rtol=1e-6, atol=1e-9)


def test_weight_report_counts_clipped_weights_and_checks_its_arguments():
    desc = {
        "name": "wr", "steps": 5, "seed": 1,
        "populations": [
            {"name": "in", "size": 4, "kind": "input"},
            {"name": "h", "size": 2, "kind": "lif", "params": {"weight_scale": 10.0}},
        ],
        "projections": [{"source": "in", "target": "h", "weights": [1, 2, 6.4, -7, 0, 0, 0, 0]}],
    }
    net = neuropart.Network.from_str(json.dumps(desc), "json")
    # round(10 * w): 10, 20, 64, -70 -> two beyond 63.
    (h,) = neuropart.weight_report(net)
    assert (h["population"], h["scale"], h["largest"], h["weights"], h["clipped"]) == \
        ("h", 10.0, 7.0, 8, 2)
    assert neuropart.weight_report(net, weight_max=70)[0]["clipped"] == 0
    for bad in (-1, 0, float("nan"), "63", True):
        with pytest.raises(ValueError, match="weight_max must be a finite number above 0"):
            neuropart.weight_report(net, weight_max=bad)
    with pytest.raises(TypeError, match="takes a neuropart.Network, not str"):
        neuropart.weight_report("x")


def test_export_names_a_path_it_cannot_write_and_never_leaves_half_a_file(tmp_path, monkeypatch):
    net = two_pops()
    with pytest.raises(FileNotFoundError, match="the folder .*no/such does not exist"):
        net.to_nir(str(tmp_path / "no" / "such" / "x.nir"))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        net.to_nir(str(tmp_path))
    # A file that is there stays whole until the new one is complete, and no temporary is left.
    path = tmp_path / "x.nir"
    path.write_bytes(b"earlier")

    def fails_halfway(nir, to, graph):
        with open(to, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    import neuropart._nir as N
    monkeypatch.setattr(N, "_write_graph", fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        net.to_nir(str(path))
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nir"]
    monkeypatch.undo()
    net.to_nir(str(path))
    back = neuropart.from_nir(str(path))
    assert [p["name"] for p in back.populations] == [p["name"] for p in net.populations]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nir"]
