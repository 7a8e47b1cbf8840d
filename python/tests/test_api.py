"""The Python API against an independent numpy reference (tests/reference.py), plus its
errors, plans, training and checkpoints."""

import json
import os

import numpy as np
import pytest

import neuropart
from reference import simulate

RNG = np.random.default_rng(7)


def dyadic(shape, scale=16):
    """Random weights that are multiples of 1/scale (exact in fixed point and in float32)."""
    return (RNG.integers(-6, 12, size=shape) / scale).astype(np.float32)


def small(update="input_first", steps=12):
    """input 8 -> hidden 6 (LIF) -> out 3 (readout), dyadic weights, as JSON text."""
    w1, w2 = dyadic((6, 8)), dyadic((3, 6))
    params = {"tau_mem": 4.0, "tau_syn": 8.0, "v_leak": 0.0, "v_reset": 0.0, "v_th": 0.5,
              "update": update}
    desc = {
        "name": "small",
        "steps": steps,
        "populations": [
            {"name": "in", "size": 8, "kind": "input"},
            {"name": "hidden", "size": 6, "kind": "lif", "params": params},
            {"name": "out", "size": 3, "kind": "readout", "params": params},
        ],
        "projections": [
            {"source": "in", "target": "hidden", "weights": w1.ravel().tolist()},
            {"source": "hidden", "target": "out", "weights": w2.ravel().tolist()},
        ],
    }
    ref_pops = [
        {"name": "in", "size": 8, "kind": "input"},
        {"name": "hidden", "size": 6, "kind": "lif", **params},
        {"name": "out", "size": 3, "kind": "readout", **params},
    ]
    return desc, ref_pops, [("in", "hidden", w1), ("hidden", "out", w2)]


def spikes(batch, steps, n, p=0.3):
    return RNG.random((batch, steps, n)) < p


@pytest.mark.parametrize("update", ["input_first", "hxtorch"])


def test_run_equals_a_numpy_reference(update):
    desc, pops, projs = small(update)
    net = neuropart.Network.from_str(json.dumps(desc), "json")
    x = spikes(5, 12, 8)
    out = net.run({"in": x}, device="cpu")
    ref = simulate(pops, projs, {"in": x}, 12, update)
    assert out["hidden"].dtype == bool and out["hidden"].shape == (5, 12, 6)
    assert out["hidden"].any(), "the hidden layer should spike"
    np.testing.assert_array_equal(out["hidden"], ref["hidden"])
    assert out["out"].dtype == np.float32
    np.testing.assert_array_equal(out["out"], ref["out"])


def test_gpu_runs_equal_cpu_runs():
    desc, _, _ = small()
    net = neuropart.Network.from_str(json.dumps(desc), "json")
    x = spikes(4, 12, 8)
    try:
        gpu = net.run({"in": x}, device="gpu")
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no GPU adapter: {e}")
    cpu = net.run({"in": x}, device="cpu")
    np.testing.assert_array_equal(gpu["hidden"], cpu["hidden"])
    np.testing.assert_allclose(gpu["out"], cpu["out"], atol=1e-6)


def test_files_round_trip(tmp_path, root):
    net = neuropart.Network.from_toml(os.path.join(root, "examples/networks/mnist.toml"))
    assert net.name == "mnist" and net.steps == 30
    assert [p["name"] for p in net.populations] == ["input", "hidden", "readout"]
    assert net.projections == ["input->hidden", "hidden->readout"]
    path = tmp_path / "copy.toml"
    net.to_toml(str(path))
    again = neuropart.Network.from_toml(str(path))
    for name in net.projections:
        np.testing.assert_array_equal(net.weights(name), again.weights(name))
    jpath = tmp_path / "copy.json"
    jpath.write_text(net.to_json_str())
    j = neuropart.Network.from_json(str(jpath))
    np.testing.assert_array_equal(j.weights("input->hidden"), net.weights("input->hidden"))


def test_substrates(root):
    s = neuropart.Substrate.bss2()
    assert s.circuits == 512
    e = neuropart.Substrate.from_toml(os.path.join(root, "examples/networks/eurosat-substrate.toml"))
    assert e.circuits > 0 and e.name


def test_plan(tmp_path, root):
    net = neuropart.Network.from_toml(os.path.join(root, "examples/networks/mnist.toml"))
    plan = net.plan()
    assert len(plan.partitions) == 5
    assert [p["neurons"] for p in plan.partitions] == [64, 64, 64, 64, 10]
    assert plan.waves == [[0, 1, 2, 3], [4]]
    assert plan.rounds == [[0], [1], [2], [3], [4]]
    assert plan.cost["chip_runs"] == 5
    synapses = 784 * 256 + 256 * 10
    assert plan.memory == {"synapses": synapses, "weight_bytes": 4 * synapses,
                           "compiled_bytes": 28 * synapses}
    assert json.loads(plan.to_json())["network"] == "mnist"
    four = net.plan(chips=4)
    assert four.rounds == [[0, 1, 2, 3], [4]]
    png = tmp_path / "placement.png"
    plan.draw(str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_errors_are_python_exceptions(tmp_path):
    with pytest.raises(ValueError, match="population"):
        neuropart.Network.from_str('{"populations": [{"name": "a", "size": 0}]}', "json")
    desc, _, _ = small()
    net = neuropart.Network.from_str(json.dumps(desc), "json")
    with pytest.raises(ValueError, match=r"\[batch, 12, 8\]"):
        net.run({"in": np.zeros((2, 12, 7), bool)}, device="cpu")
    # T comes from the input.
    assert net.run({"in": np.zeros((2, 11, 8), bool)}, device="cpu")["out"].shape[1] == 11
    with pytest.raises(ValueError, match="no population 'nope'"):
        net.run({"nope": np.zeros((2, 12, 8), bool)}, device="cpu")
    with pytest.raises(ValueError, match="device 'tpu'"):
        net.run({"in": np.zeros((2, 12, 8), bool)}, device="tpu")
    with pytest.raises(ValueError, match="mode 'analog'"):
        net.run({"in": np.zeros((2, 12, 8), bool)}, device="cpu", mode="analog")
    with pytest.raises(RuntimeError, match="missing.toml"):
        neuropart.Network.from_toml(str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="chips"):
        net.plan(chips=0)


def synthetic(n, seed):
    """A learnable 4-class task on 6x6 images: each class lights one row."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    x = np.zeros((n, 6, 6), np.float32)
    for k, c in enumerate(y):
        x[k, c + 1, :] = 0.7 + 0.3 * rng.random(6)
        x[k][rng.random((6, 6)) < 0.05] = rng.random()
    return x, y


def task_net():
    desc = {
        "name": "task",
        "steps": 12,
        "seed": 3,
        "populations": [
            {"name": "in", "size": 36, "kind": "input"},
            {"name": "hidden", "size": 20, "kind": "lif"},
            {"name": "out", "size": 4, "kind": "readout"},
        ],
        "projections": [
            {"source": "in", "target": "hidden", "init": {"mean": 0.15, "std": 0.2}},
            {"source": "hidden", "target": "out", "init": {"mean": 0.1, "std": 0.3}},
        ],
    }
    return neuropart.Network.from_str(json.dumps(desc), "json")


def test_train_evaluate_and_checkpoints(tmp_path):
    net = task_net()
    x, y = synthetic(400, 1)
    tx, ty = synthetic(100, 2)
    before = net.evaluate(tx, ty, mode="ideal", device="cpu")
    seen = []
    # uint8 labels and float64 images are converted.
    records = net.train(x.astype(np.float64), y.astype(np.uint8), tx, ty, epochs=3, mode="ideal",
                        device="cpu", out=str(tmp_path), on_epoch=seen.append, batch=20,
                        lr=0.02, augment=False)
    assert [r["epoch"] for r in records] == [1, 2, 3] and len(seen) == 3
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    after = net.evaluate(tx, ty, mode="ideal", device="cpu")
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.5
    assert abs(after["accuracy"] - records[-1]["test_accuracy"]) < 1e-9
    ck = tmp_path / "checkpoint.json"
    assert [r["epoch"] for r in json.loads(ck.read_text())["history"]] == [1, 2, 3]
    path = tmp_path / "task.json"
    path.write_text(task_net().to_json_str())
    loaded = neuropart.Network.from_checkpoint(str(path), str(ck))
    np.testing.assert_array_equal(loaded.weights("in->hidden"), net.weights("in->hidden"))
    with pytest.raises(ValueError, match="labels"):
        net.train(x, y[:10], epochs=1, device="cpu")
    with pytest.raises(ValueError, match="train_x"):
        net.train([["not", "numbers"]], y, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="epochs"):
        net.train(x, y, epochs=0, device="cpu")


def test_weights_can_be_set_and_are_checked():
    net = task_net()
    w = net.weights("in->hidden")
    net.set_weights("in->hidden", np.zeros_like(w))
    assert not net.weights("in->hidden").any()
    with pytest.raises(ValueError, match="720 weights"):
        net.set_weights("in->hidden", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not finite"):
        net.set_weights("in->hidden", np.full_like(w, np.nan))
    # A finite value beyond float32's range is named, with its index, and numpy's overflow
    # warning does not reach the caller.
    big = np.zeros(w.size, np.float64)
    big[17] = -1e300
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"-1e300 at index 17 .*beyond float32's range"):
            net.set_weights("in->hidden", big)
        with pytest.raises(ValueError, match="index 3 .*beyond float32's range"):
            net.set_weights("in->hidden", [0.0, 0.0, 0.0, 4e38] + [0.0] * (w.size - 4))


def test_a_recurrent_loop_spans_the_chips_of_a_system():
    import neuropart as npt

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    net = npt.Network.from_toml(os.path.join(root, "examples/networks/recurrent-600.toml"))
    with pytest.raises(ValueError, match="every recurrent loop must run on one substrate"):
        net.plan()
    sub = npt.Substrate.bss2().with_system(chips=11, delivery_delay_us=2.0)
    assert sub.system["chips"] == 11 and sub.system["topology"] == "star"
    plan = net.plan(substrate=sub)
    parts = plan.partitions
    assert len(parts) == 11
    assert sorted(p["chip"] for p in parts) == list(range(11))
    with pytest.raises(ValueError, match="argument chips = 0: at least 1"):
        npt.Substrate.bss2().with_system(chips=0)
    with pytest.raises(ValueError, match="topology 'ring'"):
        npt.Substrate.bss2().with_system(chips=2, topology="ring")


def test_a_checkpoint_without_a_test_set_is_readable(tmp_path, root):
    net = task_net()
    x, y = synthetic(60, 1)
    records = net.train(x, y, epochs=1, mode="ideal", device="cpu", out=str(tmp_path),
                        batch=20, augment=False)
    assert "test_loss" not in records[0]
    ck = tmp_path / "checkpoint.json"
    text = ck.read_text()
    assert "null" not in text and "NaN" not in text
    assert "test_loss" not in json.loads(text)["history"][0]
    path = tmp_path / "task.json"
    path.write_text(task_net().to_json_str())
    loaded = neuropart.Network.from_checkpoint(str(path), str(ck))
    np.testing.assert_array_equal(loaded.weights("in->hidden"), net.weights("in->hidden"))


def test_flat_images_are_refused_with_augmentation():
    net = task_net()
    x, y = synthetic(40, 1)
    with pytest.raises(ValueError, match=r"train_x has shape \[40, 36\].*reshape\(40, 6, 6\)"
                                         r".*augment=False"):
        net.train(x.reshape(40, 36), y, epochs=1, mode="ideal", device="cpu", batch=20)
    # Image-shaped, or flat without augmentation, trains.
    net.train(x, y, epochs=1, mode="ideal", device="cpu", batch=20)
    net.train(x.reshape(40, 36), y, epochs=1, mode="ideal", device="cpu", batch=20,
              augment=False)


def in_child(code):
    """Run `code` in a fresh interpreter (an abort there must not take the tests with it)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_dense_results_are_checked_against_the_memory_limit():
    # 1 sample x 2^26 steps x 4096 neurons: 256 GiB of spikes, over any memory limit here;
    # refused before anything is run or converted (the input itself is 64 MiB).
    r = in_child(
        "import json, numpy as np, neuropart\n"
        "desc = {'steps': 8, 'populations': [{'name': 'in', 'size': 1, 'kind': 'input'},"
        " {'name': 'wide', 'size': 4096}],"
        " 'projections': [{'source': 'in', 'target': 'wide'}]}\n"
        "net = neuropart.Network.from_str(json.dumps(desc), 'json')\n"
        "net.steps = 2**26\n"
        "try:\n"
        "    net.run({'in': np.zeros((1, 2**26, 1), bool)}, device='cpu')\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n"
        "try:\n"
        "    neuropart.spikes_to_dense([[]], 10**6, 10**6)\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 2, (r.returncode, r.stdout, r.stderr)
    assert "1 samples x 67108864 steps" in lines[0] and "4096 spiking" in lines[0], lines
    assert "1 samples x 1000000 steps x 1000000 neurons" in lines[1], lines
    assert all("memory limit" in line for line in lines), lines


def _run_in_worker(desc_json):
    net = neuropart.Network.from_str(desc_json, "json")
    x = np.random.default_rng(3).random((64, 12, 8)) < 0.3
    return int(net.run({"in": x}, device="cpu")["hidden"].sum())


def test_a_forked_worker_runs_after_the_parent_did():
    import multiprocessing

    desc, _, _ = small()
    text = json.dumps(desc)
    # The parent's run starts its worker threads, which a forked child does not have.
    want = _run_in_worker(text)
    assert want > 0
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map_async(_run_in_worker, [text, text]).get(timeout=60)
    assert got == [want, want]


def test_set_weights_takes_what_run_takes_and_data_is_validated():
    net = task_net()
    name = net.projections[0]
    w = net.weights(name)
    # float64, lists and [target, source] matrices, as run and train accept their inputs; a
    # matrix of another shape (its transpose) is refused, not flattened into the wrong places.
    sizes = {p["name"]: p["size"] for p in net.populations}
    src, tgt = name.split("->")
    matrix = w.astype(np.float64).reshape(sizes[tgt], sizes[src])
    net.set_weights(name, matrix)
    np.testing.assert_array_equal(net.weights(name), w)
    with pytest.raises(ValueError, match="transpose"):
        net.set_weights(name, matrix.T)
    with pytest.raises(ValueError, match=r"\[target, source\]"):
        net.set_weights(name, w.reshape(2, -1))
    net.set_weights(name, [float(v) for v in w])
    np.testing.assert_array_equal(net.weights(name), w)
    x, y = synthetic(20, 3)
    with pytest.raises(ValueError, match="0 samples"):
        net.evaluate(x[:0], y[:0], device="cpu")
    bad = x.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        net.evaluate(bad, y, device="cpu")
    with pytest.raises(ValueError, match="whole numbers"):
        net.evaluate(x, y + 0.5, device="cpu")
    with pytest.raises(ValueError, match="whole numbers"):
        net.evaluate(x, np.where(y == 0, np.nan, y), device="cpu")
    # Whole-number floats are labels.
    net.evaluate(x, y.astype(np.float64), device="cpu")


def test_run_takes_spikes_as_zeros_and_ones_only():
    net = task_net()
    x = (np.random.default_rng(1).random((2, 12, 36)) < 0.2)
    a = net.run({"in": x}, device="cpu")
    b = net.run({"in": x.astype(np.float32)}, device="cpu")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for bad in (x * 0.5, np.where(x, np.nan, 0.0), x * 2):
        with pytest.raises(ValueError, match="spikes must be 0 or 1"):
            net.run({"in": bad}, device="cpu")


def test_errors_speak_python_and_train_keeps_earlier_checkpoints(tmp_path):
    net = task_net()
    x, y = synthetic(40, 1)
    # Options are named as the Python arguments, not as the command line's flags.
    with pytest.raises(ValueError, match="argument batch = 0") as e:
        net.train(x, y, epochs=1, mode="ideal", device="cpu", batch=0)
    assert "--" not in str(e.value)
    with pytest.raises(ValueError, match="argument lr") as e:
        net.train(x, y, epochs=1, mode="ideal", device="cpu", lr=-1.0)
    assert "--" not in str(e.value)
    # The readout is not an input, and the error says what the inputs are.
    with pytest.raises(ValueError,
                       match=r"'out' is a readout, not an input; the network's inputs are \['in'\]"):
        net.run({"out": np.zeros((1, 12, 4), bool)}, device="cpu")
    # A checkpoint in `out` from an earlier training is kept unless force=True.
    net.train(x, y, epochs=2, mode="ideal", device="cpu", out=str(tmp_path), batch=20,
              augment=False)
    ck = tmp_path / "checkpoint.json"
    before = ck.read_text()
    with pytest.raises(ValueError, match="force=True"):
        net.train(x, y, epochs=1, mode="ideal", device="cpu", out=str(tmp_path), batch=20,
                  augment=False)
    assert ck.read_text() == before
    # on_epoch may read the network, and sees that epoch's weights.
    seen = []
    net.train(x, y, epochs=2, mode="ideal", device="cpu", out=str(tmp_path), batch=20,
              augment=False, force=True,
              on_epoch=lambda r: seen.append(net.weights("in->hidden").copy()))
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[1], net.weights("in->hidden"))
    assert [r["epoch"] for r in json.loads(ck.read_text())["history"]] == [1, 2]


def test_the_memory_limit_is_set_from_python():
    r = in_child(
        "import json, numpy as np, neuropart\n"
        "desc = {'steps': 8, 'populations': [{'name': 'in', 'size': 1, 'kind': 'input'},"
        " {'name': 'wide', 'size': 64}],"
        " 'projections': [{'source': 'in', 'target': 'wide'}]}\n"
        "net = neuropart.Network.from_str(json.dumps(desc), 'json')\n"
        "neuropart.set_memory_limit('1K')\n"
        "try:\n"
        "    net.run({'in': np.zeros((64, 8, 1), bool)}, device='cpu')\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n"
        "neuropart.set_memory_limit(1 << 30)\n"
        "print(net.run({'in': np.zeros((64, 8, 1), bool)}, device='cpu')['wide'].shape)\n"
        "for bad in ('12Q', -1, 2.5):\n"
        "    try:\n"
        "        neuropart.set_memory_limit(bad)\n"
        "    except (ValueError, TypeError) as e:\n"
        "        print(type(e).__name__, e)\n")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 5, (r.stdout, r.stderr)
    assert "neuropart.set_memory_limit" in lines[0] and "--" not in lines[0], lines
    assert lines[1] == "(64, 8, 64)"
    assert lines[2].startswith("ValueError limit = 12Q"), lines
    assert lines[3].startswith("ValueError limit = -1"), lines
    assert lines[4].startswith("TypeError limit"), lines


def test_a_bad_thread_count_is_an_error_naming_the_variable():
    desc, _, _ = small()
    r = subprocess_env(
        "import json, numpy as np, neuropart\n"
        "try:\n"
        f"    net = neuropart.Network.from_str({json.dumps(json.dumps(desc))}, 'json')\n"
        "    net.run({'in': np.zeros((1, 12, 8), bool)}, device='cpu')\n"
        "except ValueError as e:\n"
        "    print(e)\n",
        RAYON_NUM_THREADS="5000")
    assert r.returncode == 0, r.stderr
    assert "RAYON_NUM_THREADS" in r.stdout and "5000" in r.stdout, r.stdout


def subprocess_env(code, **env):
    """`in_child` with extra environment variables."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_labels_of_another_shape_and_non_finite_gradients_are_refused():
    net = task_net()
    x, y = synthetic(8, 5)
    # A (2, 4) array of 8 labels, or one-hot rows, was flattened into 8 or 32 labels.
    with pytest.raises(ValueError, match=r"y: labels must be one class index per sample.*\[2, 4\]"):
        net.evaluate(x, y.reshape(2, 4), device="cpu")
    with pytest.raises(ValueError, match="one-hot rows"):
        net.evaluate(x, np.eye(4, dtype=np.int64)[y], device="cpu")
    tr = neuropart.Trainable(net, mode="ideal", device="cpu")
    spikes = (np.random.default_rng(1).random((2, 12, 36)) < 0.2).astype(np.float32)
    scores, _, trace = tr.forward(spikes)
    d = np.ones_like(scores)
    assert all(np.isfinite(g).all() for g in tr.backward(trace, d))
    d[1, 2] = np.nan
    with pytest.raises(ValueError, match="dscores: sample 1, value 2 is NaN"):
        tr.backward(trace, d)


def test_training_errors_name_the_argument_and_the_sample():
    net = task_net()
    x, y = synthetic(8, 6)
    bad = x.copy()
    bad[2, 1, 1] = np.inf
    with pytest.raises(ValueError, match="test_x: pixel 79"):
        net.train(x, y, bad, y, epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"test_y: label 30\d of sample 0"):
        net.train(x, y, x, y + 300, epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"train_y: label -\d of sample 0"):
        net.train(x, y - 5, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="8 images in x but 7 labels in y"):
        net.evaluate(x, y[:7], device="cpu")
    # Float labels beyond int64 gave numpy's RuntimeWarning and the label -2^63: named, quietly.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for big, shown in ((np.inf, "inf"), (1e30, "1e30"), (300.0, "300")):
            far = y.astype(np.float64)
            far[3] = big
            with pytest.raises(ValueError, match=f"y: label {shown} of sample 3 is outside 0..=255"):
                net.evaluate(x, far, device="cpu")
    # Network.to_nir takes what neuropart.to_nir takes.
    assert type(net.to_nir(structure=False)).__name__ == "NIRGraph"


def test_images_of_another_shape_or_range_and_bad_config_entries_are_refused():
    net = task_net()
    x, y = synthetic(4, 7)
    # A flat image was 36 samples of one pixel, a 5-D array flattened, 0..255 pixels all spiked
    # at step 0 and negative ones never.
    with pytest.raises(ValueError, match=r"x has shape \[36\].*one image: x\[None\]"):
        neuropart.encode_images(x[0].ravel(), steps=12)
    with pytest.raises(ValueError, match=r"x has shape \[\]"):
        neuropart.encode_images(np.float32(0.5), steps=12)
    with pytest.raises(ValueError, match=r"x has shape \[1, 4, 1, 6, 6\]"):
        neuropart.encode_images(x[None, :, None], steps=12)
    img = np.zeros((2, 6, 6), np.float32)
    img[1, 2, 3] = 200.0
    with pytest.raises(ValueError, match="pixel 51 .* is 200; .*divide images of 0..255 by 255"):
        neuropart.encode_images(img, steps=12)
    neg = x.copy()
    neg[1, 0, 3] = -0.25
    with pytest.raises(ValueError, match=r"train_x: pixel 39 .* is -0.25; pixels must lie in \[0, 1\]"):
        net.train(neg, y, epochs=1, device="cpu")
    # The edges themselves are pixels: 1 spikes at step 0, 0 never.
    edge = np.array([[0.0, 1.0]], np.float32)
    assert neuropart.encode_images(edge, steps=4)[0].nonzero() == (np.array([0]), np.array([1]))
    # A config entry is named with its key and value (serde gave a column of JSON text).
    with pytest.raises(ValueError, match=r"config\['lr'\] = 'fast': invalid type"):
        neuropart.Trainable(net, config={"lr": "fast"})
    with pytest.raises(ValueError, match=r"config\['lr'\] = nan: Out of range float"):
        neuropart.Trainable(net, config={"lr": float("nan")})
    with pytest.raises(ValueError, match=r"config\['learning_rate'\] = 0.1: unknown field"):
        neuropart.Trainable(net, config={"learning_rate": 0.1})
    assert neuropart.Trainable(net, config={"lr": 0.01, "batch": 2}, device="cpu")
    # Integers beyond 64 bits are named too (a bare OverflowError before).
    with pytest.raises(ValueError, match=r"argument seed = 1180591620717411303424: 0 to"):
        net.train(x, y, epochs=1, seed=2**70, device="cpu")
