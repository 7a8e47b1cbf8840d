"""Properties over random shapes, dtypes and values (hypothesis): whatever a user passes to
`run`, `train`, `set_weights` and `from_nir`, the interpreter survives, and a refusal is a
`ValueError`, `TypeError` or `MemoryError` with a message; what is accepted gives results of
the documented shape and dtype."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import neuropart

EXPECTED = (ValueError, TypeError, MemoryError)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.bool_, np.uint8, np.int8, np.int32, np.int64, np.float16,
                          np.float32, np.float64, np.complex64, np.object_])


def net_json(steps=6):
    return json.dumps({
        "name": "prop",
        "steps": steps,
        "seed": 1,
        "populations": [
            {"name": "in", "size": 4, "kind": "input"},
            {"name": "hidden", "size": 5, "kind": "lif"},
            {"name": "out", "size": 3, "kind": "readout"},
        ],
        "projections": [
            {"source": "in", "target": "hidden", "init": {"mean": 0.3, "std": 0.3}},
            {"source": "hidden", "target": "out"},
        ],
    })


def arrays(max_dims=4, max_side=7):
    """Arrays of any dtype above, 0 to `max_dims` axes, with NaN, infinities and large values
    among the floats."""
    def of(dtype):
        if dtype is np.object_:
            return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=max_dims,
                                                      min_side=0, max_side=max_side),
                              elements=st.one_of(st.none(), st.text(max_size=2),
                                                 st.integers(-3, 3)))
        return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0,
                                                  max_side=max_side))
    return DTYPES.flatmap(of)


def refused_with_a_message(call):
    """Run `call`; a refusal must be one of the expected exceptions, with a message."""
    try:
        return call(), None
    except EXPECTED as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None, e


@SETTINGS
@given(x=arrays(), device=st.sampled_from(["cpu"]), mode=st.sampled_from(
    ["ideal", "emulated", "mixed", "analog"]))
def test_run_takes_any_array(x, device, mode):
    net = neuropart.Network.from_str(net_json(), "json")
    out, err = refused_with_a_message(lambda: net.run({"in": x}, device=device, mode=mode))
    if err is None:
        # Accepted input is spikes: a batch of [T, 4] zeros and ones (T from the input).
        assert x.ndim == 3 and x.shape[2] == 4
        batch, steps = x.shape[:2]
        assert out["hidden"].dtype == np.bool_ and out["hidden"].shape == (batch, steps, 5)
        assert out["out"].dtype == np.float32 and out["out"].shape == (batch, steps, 3)
        assert np.isin(np.asarray(x, dtype=np.float64), [0.0, 1.0]).all()


@SETTINGS
@given(w=st.one_of(arrays(max_dims=3, max_side=21), st.none(), st.integers(), st.text(max_size=3),
                   st.lists(st.floats(), max_size=25)),
       name=st.sampled_from(["in->hidden", "hidden->out", "nope", ""]))
def test_set_weights_takes_any_value(w, name):
    net = neuropart.Network.from_str(net_json(), "json")
    _, err = refused_with_a_message(lambda: net.set_weights(name, w))
    if err is None:
        got = net.weights(name)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_array_equal(got, np.asarray(w, dtype=np.float32).ravel())


@SETTINGS
@given(x=arrays(max_dims=4, max_side=6), y=arrays(max_dims=2, max_side=8),
       batch=st.integers(-2, 9), epochs=st.integers(-1, 1), augment=st.booleans(),
       lr=st.sampled_from([0.01, 0.0, -1.0, float("nan"), float("inf")]))
def test_train_takes_any_data(x, y, batch, epochs, augment, lr):
    net = neuropart.Network.from_str(net_json(), "json")
    before = net.weights("in->hidden").copy()

    def call():
        return net.train(x, y, epochs=epochs, mode="ideal", device="cpu", batch=batch,
                         augment=augment, lr=lr)

    records, err = refused_with_a_message(call)
    if err is None:
        assert len(records) == epochs == 1 and batch >= 1 and lr > 0
        assert np.isfinite(records[0]["train_loss"])
        assert np.isfinite(net.weights("in->hidden")).all()
    else:
        np.testing.assert_array_equal(net.weights("in->hidden"), before)


def test_train_accepts_the_obvious_case():
    # The property above must not pass by refusing everything.
    net = neuropart.Network.from_str(net_json(), "json")
    rng = np.random.default_rng(0)
    x = rng.random((12, 2, 2)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    records = net.train(x, y, epochs=1, mode="ideal", device="cpu", batch=4)
    assert len(records) == 1


def nir_graphs():
    """Small NIR graphs, valid and not: Input -> Affine/Linear -> LIF/CubaLIF -> Output with
    random shapes and parameters (negative, zero, NaN time constants; mismatched shapes)."""
    nir = pytest.importorskip("nir")
    side = st.integers(0, 4)
    value = st.sampled_from([1e-3, 5e-3, 0.0, -1e-3, float("nan"), 1.0, 1e9])

    @st.composite
    def graph(draw):
        n_in, n_out = draw(side), draw(side)
        w = np.asarray(draw(hnp.arrays(np.float32, (draw(side), draw(side)))))
        weight = draw(st.sampled_from(["Affine", "Linear"]))
        if weight == "Affine":
            wnode = nir.Affine(weight=w, bias=np.zeros(w.shape[0], np.float32))
        else:
            wnode = nir.Linear(weight=w)
        n = np.ones(n_out, np.float32)
        kind = draw(st.sampled_from(["LIF", "CubaLIF"]))
        tau, th = draw(value), draw(value)
        if kind == "LIF":
            neuron = nir.LIF(tau=tau * n, r=n, v_leak=0 * n, v_threshold=th * n)
        else:
            neuron = nir.CubaLIF(tau_mem=tau * n, tau_syn=draw(value) * n, r=n, v_leak=0 * n,
                                 v_threshold=th * n, w_in=n)
        nodes = {"input": nir.Input(input_type=np.array([n_in])), "w": wnode,
                 "lif": neuron, "output": nir.Output(output_type=np.array([n_out]))}
        edges = [("input", "w"), ("w", "lif"), ("lif", "output")]
        if draw(st.booleans()):
            edges.append(("lif", "w"))
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)

    return graph()


@SETTINGS
@given(g=st.one_of(st.deferred(nir_graphs), st.none(), st.integers(), st.text(max_size=8),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
       dt=st.sampled_from([1e-3, 1e-4, 0.0, -1.0, float("nan")]))
def test_from_nir_takes_any_graph(g, dt):
    try:
        net, err = refused_with_a_message(lambda: neuropart.from_nir(g, dt=dt))
    except FileNotFoundError as e:
        # A string is a path; a missing file is Python's usual error, naming it.
        assert isinstance(g, str) and repr(g) in str(e)
        return
    if err is None:
        assert isinstance(net, neuropart.Network)
        assert dt > 0
