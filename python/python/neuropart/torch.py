"""neuropart.torch: train a neuropart network from a PyTorch loop with the emulator in the loop.

    import torch, neuropart
    from neuropart.torch import SpikingModule

    model = SpikingModule(neuropart.Network.from_toml("mnist.toml"), mode="emulated")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for x, y in batches:                        # x: input spikes bool [batch, T, inputs]
        scores, counts = model(x, return_counts=True)
        loss = model.loss(scores, y, counts)    # or any loss on the scores / counts
        opt.zero_grad(); loss.backward(); opt.step()

The forward pass runs on neuropart (any device, mode and number of chips, partitioned as
``Network.run`` partitions); the backward pass is neuropart's own (surrogate gradients from
the recorded spikes and membranes, ``src/train/backward.rs``), started from the gradient that
PyTorch computed for the scores (and spike counts), and lands in one ``torch.nn.Parameter``
per projection. This module never runs a neuron itself. Needs PyTorch (``pip install
'neuropart[torch]'``); ``import neuropart`` works without it.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "neuropart.torch needs PyTorch: pip install 'neuropart[torch]' (or Debian's "
        "python3-torch in a venv made with --system-site-packages)"
    ) from e

from ._neuropart import Network, Trainable, encode_images
from ._nir import from_nir as _from_nir

__all__ = ["SpikingModule", "encode_images"]


def _spikes(x: Any) -> np.ndarray:
    """Input spikes as a numpy array (a tensor leaves autograd and the GPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class _Emulate(torch.autograd.Function):
    """scores, *counts = neuropart(x; weights): forward on the emulator, backward by
    neuropart's backward pass from dL/dscores and dL/dcounts."""

    @staticmethod
    def forward(ctx, trainable, x, seed, spiking, *weights):  # type: ignore[override]
        trainable.set_weights([w.detach().cpu().numpy() for w in weights])
        scores, counts, trace = trainable.forward(x, seed)
        ctx.trainable, ctx.trace, ctx.spiking = trainable, trace, spiking
        ctx.like = [(w.shape, w.dtype, w.device) for w in weights]
        ctx.scores_shape = scores.shape
        ctx.set_materialize_grads(False)
        out = [torch.from_numpy(scores)] + [torch.from_numpy(counts[n]) for n in spiking]
        return tuple(out)

    @staticmethod
    def backward(ctx, dscores, *dcounts):  # type: ignore[override]
        def host(g):
            return g.detach().to("cpu", torch.float32).contiguous().numpy()

        # A None gradient (an output the loss did not use) is 0.
        ds = host(dscores) if dscores is not None else np.zeros(ctx.scores_shape, np.float32)
        dc = {n: host(g) for n, g in zip(ctx.spiking, dcounts) if g is not None}
        grads = ctx.trainable.backward(ctx.trace, ds, dc or None)
        out = [
            torch.from_numpy(g).reshape(shape).to(device=device, dtype=dtype)
            for g, (shape, dtype, device) in zip(grads, ctx.like)
        ]
        return (None, None, None, None, *out)


class SpikingModule(torch.nn.Module):
    """A neuropart network as a ``torch.nn.Module``: one ``torch.nn.Parameter`` per projection
    (``float32``, flat, in the projection's weight layout as ``Network.weights`` gives it:
    dense ``[target][source]``), in the order of ``projections``.

    ``forward(x)`` takes input spikes ``[batch, T, inputs]`` (bool or 0/1; a tensor or an
    array; T must be the network's ``steps``) and returns the readout scores ``float32
    [batch, classes]`` that neuropart's trainer scores (``readout_scale`` × the readout's
    maximum over time); with ``return_counts=True`` also ``{population: float32 [batch,
    neurons]}`` spike counts of each spiking population, differentiable too. The parameters
    are written into the emulator before each forward pass; with ``clamp=True`` (default) they
    are first clamped in place to the chip's range (``weight_limit``, as neuropart's trainer
    clamps after each step; no limit in ideal mode).

    ``mode`` (``"emulated"``, ``"ideal"``, ``"mixed"``), ``device`` (``"cpu"``, ``"gpu"``,
    ``"auto"``), ``chips`` and ``substrate`` are those of ``Network.run``; ``config`` holds the
    trainer's hyper-parameters by name (``readout_scale``, ``surrogate_alpha``, and for
    :meth:`loss`, ``reg_readout``, ``reg_spikes``, ``reg_spikes_decay``, ``reg_weights``).
    """

    def __init__(self, network: Network, mode: str = "emulated", device: str = "auto",
                 chips: int = 1, substrate: Any = None, clamp: bool = True,
                 config: Optional[Dict[str, Any]] = None, **kwargs: Any):
        super().__init__()
        cfg = dict(config or {})
        cfg.update(kwargs)
        self.trainable = Trainable(network, mode=mode, device=device, chips=chips,
                                   substrate=substrate, config=cfg)
        self.mode, self.device_name, self.chips = mode, device, chips
        self.clamp = clamp
        self.projections: List[str] = list(self.trainable.projections)
        self.spiking: List[str] = list(self.trainable.spiking)
        self.config: Dict[str, Any] = dict(self.trainable.config)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(np.array(w, np.float32)))
             for w in self.trainable.weights()]
        )
        self._forwards = 0

    @property
    def weight_limit(self) -> float:
        """Largest weight magnitude of the chip (``inf`` in ideal mode)."""
        return float(self.trainable.weight_limit)

    def weight(self, name: str) -> torch.nn.Parameter:
        """The parameter of projection ``name``."""
        try:
            return self.weights[self.projections.index(name)]
        except ValueError:
            raise KeyError(f"no projection '{name}' (the network has {self.projections})") from None

    @torch.no_grad()
    def clamp_weights_(self) -> None:
        """Clamp every parameter in place to ±``weight_limit``."""
        limit = self.weight_limit
        if np.isfinite(limit):
            for w in self.weights:
                w.clamp_(-limit, limit)

    def forward(self, x: Any, seed: Optional[int] = None,
                return_counts: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        """Scores ``[batch, classes]`` (and spike counts with ``return_counts``) of input
        spikes ``x``; ``seed`` sets the temporal noise of an emulated run (default: a new seed
        per call, as the trainer's batches get)."""
        if self.clamp:
            self.clamp_weights_()
        if seed is None:
            seed = self.trainable.noise_seed(self._forwards)
            self._forwards += 1
        spikes = _spikes(x)
        out = _Emulate.apply(self.trainable, spikes, int(seed), tuple(self.spiking),
                             *self.weights)
        scores = out[0]
        if not return_counts:
            return scores
        return scores, dict(zip(self.spiking, out[1:]))

    def loss(self, scores: torch.Tensor, y: Any,
             counts: Optional[Dict[str, torch.Tensor]] = None,
             epoch: int = 0) -> torch.Tensor:
        """neuropart's training loss in torch: the batch mean of the cross-entropy of
        ``scores`` against labels ``y``, ``reg_readout`` × mean(score⁴) and, with ``counts``,
        ``reg_spikes`` × ``reg_spikes_decay``^epoch × mean(count⁴) per spiking population.
        Its gradients are those of ``Trainable.gradients``; add :meth:`weight_loss` for the
        trainer's whole objective."""
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        cfg = self.config
        loss = torch.nn.functional.cross_entropy(scores, y)
        loss = loss + cfg["reg_readout"] * scores.pow(4).mean()
        if counts:
            lam = cfg["reg_spikes"] * cfg["reg_spikes_decay"] ** epoch
            for k in counts.values():
                loss = loss + lam * k.pow(4).mean()
        return loss

    def weight_loss(self) -> torch.Tensor:
        """The trainer's weight regulariser: ``reg_weights`` × mean(w⁴) per projection,
        summed."""
        return sum(self.config["reg_weights"] * w.pow(4).mean() for w in self.weights)

    def to_network(self) -> Network:
        """The network with the parameters' weights (clamped as ``forward`` would)."""
        net = self.trainable.network
        limit = self.weight_limit if self.clamp else float("inf")
        for name, w in zip(self.projections, self.weights):
            net.set_weights(name, np.clip(w.detach().cpu().numpy(), -limit, limit))
        return net

    def to_nir(self, path: Any = None, dt: Optional[float] = None, convention: str = "nir"):
        """``Network.to_nir`` of :meth:`to_network`."""
        return self.to_network().to_nir(path, dt, convention)

    @classmethod
    def from_nir(cls, graph_or_path: Any, dt: Optional[float] = None, steps: int = 30,
                 update: Optional[str] = None, name: Optional[str] = None,
                 convention: Optional[str] = None, type_check: bool = True,
                 notes: Optional[List[str]] = None, **kwargs: Any) -> "SpikingModule":
        """A module of ``neuropart.from_nir(graph_or_path, dt, steps, update, name,
        convention, type_check, notes)``; the other keyword arguments are the module's."""
        net = _from_nir(graph_or_path, dt=dt, steps=steps, update=update, name=name,
                        convention=convention, type_check=type_check, notes=notes)
        return cls(net, **kwargs)

    def extra_repr(self) -> str:
        return (f"'{self.trainable.network.name}', projections={self.projections}, "
                f"mode='{self.mode}', device='{self.device_name}', chips={self.chips}")
