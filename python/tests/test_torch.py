"""The PyTorch bridge (neuropart.torch): its gradients against neuropart's own training step,
a torch Adam step against the trainer's, a short training, NIR in and out, and that
``import neuropart`` needs no torch. Skips without torch, except under CI (which installs
Debian's CPU-only python3-torch, see .ci/run and scripts/test-all.sh)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

try:
    import torch
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("PyTorch is not installed (pip install 'neuropart[torch]', or Debian's "
                "python3-torch in a venv made with --system-site-packages; CI has it)",
                allow_module_level=True)

import neuropart  # noqa: E402
from neuropart.torch import SpikingModule  # noqa: E402
from conftest import ROOT  # noqa: E402

MNIST = os.path.join(ROOT, "examples", "networks", "mnist.toml")


def network():
    """The MNIST network with its first weights shifted up, so that the hidden layer spikes
    (about 40 spikes per sample) on the images of `batch`."""
    net = neuropart.Network.from_toml(MNIST)
    net.set_weights("input->hidden", net.weights("input->hidden") + 0.05)
    return net


def batch(n, seed):
    """Sparse random images with a bright bar per class, encoded as training encodes them,
    and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    img = np.where(rng.random((n, 28, 28)) < 0.15, rng.random((n, 28, 28)), 0)
    img = img.astype(np.float32)
    for k, c in enumerate(y):
        img[k, 4 + 2 * c:6 + 2 * c, 4:24] = 1.0
    return neuropart.encode_images(img, steps=30), y


def relative(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("mode,chips", [("ideal", 1), ("emulated", 1), ("mixed", 2)])
def test_gradients_equal_neuropart_training_step(mode, chips):
    """The MNIST network partitioned into the chip's 5 runs (on 1 or 2 chips)."""
    net = network()
    module = SpikingModule(net, mode=mode, device="cpu", chips=chips)
    ref = neuropart.Trainable(net, mode=mode, device="cpu", chips=chips)
    # 40 samples: three 16-sample chunks of the backward pass's fixed summation tree.
    x, y = batch(40, 1)
    seed = ref.noise_seed(0)
    scores, counts = module(torch.from_numpy(x), seed=seed, return_counts=True)
    loss = module.loss(scores, y, counts)
    loss.backward()
    want, stats = ref.gradients(x, y, seed=seed)
    assert abs(loss.item() - stats["loss"]) <= 1e-5 * abs(stats["loss"])
    assert stats["hidden_spikes"] > 0
    for name, w, g in zip(module.projections, module.weights, want):
        got = w.grad.numpy()
        assert got.shape == g.shape
        assert np.linalg.norm(g) > 0, name
        assert relative(got, g) <= 1e-5, (name, relative(got, g))


def test_gpu_forward_gives_the_cpu_gradients():
    """device="gpu": the forward pass on the GPU backend (lavapipe in CI), the same backward."""
    net = network()
    x, y = batch(16, 2)
    grads = {}
    for device in ("cpu", "gpu"):
        try:
            module = SpikingModule(net, mode="ideal", device=device)
            scores, counts = module(x, seed=0, return_counts=True)
        except RuntimeError as e:
            if device == "cpu" or os.environ.get("CI"):
                raise
            pytest.skip(f"no GPU adapter: {e}")
        module.loss(scores, y, counts).backward()
        grads[device] = [w.grad.numpy() for w in module.weights]
    for a, b in zip(grads["cpu"], grads["gpu"]):
        assert relative(b, a) <= 1e-5


def test_adam_steps_equal_neuropart_trainer():
    net = network()
    module = SpikingModule(net, mode="emulated", device="cpu")
    ref = neuropart.Trainable(net, mode="emulated", device="cpu")
    cfg = ref.config
    opt = torch.optim.Adam(module.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    for bi in range(2):
        x, y = batch(32, 10 + bi)
        scores, counts = module(x, seed=ref.noise_seed(bi), return_counts=True)
        loss = module.loss(scores, y, counts) + module.weight_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        module.clamp_weights_()
        ref.train_step(x, y, batch_index=bi)
    for name, w, want in zip(module.projections, module.weights, ref.weights()):
        np.testing.assert_allclose(w.detach().numpy(), want, rtol=0, atol=2e-6, err_msg=name)
        assert np.abs(w.detach().numpy() - np.asarray(net.weights(name))).max() > 1e-3


def test_loss_decreases_on_small_data():
    net = network()
    module = SpikingModule(net, mode="emulated", device="cpu")
    opt = torch.optim.Adam(module.parameters(), lr=5e-3)
    x, y = batch(64, 3)
    losses = []
    for _ in range(8):
        scores, counts = module(x, return_counts=True)
        loss = module.loss(scores, y, counts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_any_loss_on_scores_and_counts():
    """A loss on the spike counts alone (the scores unused) still reaches the weights, and
    a loss that is a multiple of another gives that multiple of its gradients."""
    net = network()
    module = SpikingModule(net, mode="ideal", device="cpu")
    x, y = batch(16, 4)
    _, counts = module(x, seed=1, return_counts=True)
    counts["hidden"].sum().backward()
    assert module.weights[0].grad.abs().sum() > 0
    assert module.weights[1].grad.abs().sum() == 0  # the readout's weights do not move spikes
    grads = []
    for k in (1.0, 3.0):
        module.zero_grad()
        (k * module.loss(module(x, seed=1), y)).backward()
        grads.append([w.grad.clone() for w in module.weights])
    for a, b in zip(*grads):
        assert relative(3 * a.numpy(), b.numpy()) <= 1e-6


def test_nir_round_trip_through_the_module():
    net = network()
    module = SpikingModule(net, mode="ideal", device="cpu")
    with torch.no_grad():
        module.weights[0].mul_(1.5)
    graph = module.to_nir()
    again = SpikingModule.from_nir(graph, mode="ideal", device="cpu")
    assert again.projections == module.projections or len(again.weights) == len(module.weights)
    for a, b in zip(again.weights, module.weights):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)
    x, _ = batch(8, 5)
    np.testing.assert_allclose(again(x, seed=0).detach().numpy(),
                               module(x, seed=0).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_errors_name_what_is_wrong():
    net = network()
    module = SpikingModule(net, mode="ideal", device="cpu")
    with pytest.raises(ValueError, match=r"\[batch, 30, 784\]"):
        module(np.zeros((2, 20, 784), bool))
    with pytest.raises(ValueError, match="0 or 1"):
        module(np.full((2, 30, 784), 0.5, np.float32))
    with pytest.raises(ValueError, match="lr"):
        SpikingModule(net, lr=-1.0)
    with pytest.raises(ValueError, match="unknown field"):
        SpikingModule(net, learning_rate=0.1)
    with pytest.raises(KeyError, match="no projection"):
        module.weight("nope")
    x, _ = batch(2, 6)
    scores, _, trace = module.trainable.forward(x)
    small = neuropart.Network.from_str(json.dumps({
        "name": "small", "steps": 30,
        "populations": [{"name": "input", "size": 784, "kind": "input"},
                        {"name": "out", "size": 10, "kind": "readout"}],
        "projections": [{"source": "input", "target": "out"}]}), "json")
    with pytest.raises(ValueError, match="another network"):
        neuropart.Trainable(small, mode="ideal", device="cpu").backward(trace, scores)
    with pytest.raises(ValueError, match=r"dscores has shape \[2, 3\]"):
        module.trainable.backward(trace, np.zeros((2, 3), np.float32))


def test_import_neuropart_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import neuropart\n"
            "try:\n"
            "    import neuropart.torch\n"
            "except ImportError as e:\n"
            "    assert 'neuropart[torch]' in str(e), e\n"
            "else:\n"
            "    raise SystemExit('neuropart.torch imported without torch')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
