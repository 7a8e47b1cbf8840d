"""neuropart: an emulator of analog, accelerated neuromorphic hardware (a BrainScaleS-2 class
chip) that runs and trains spiking networks larger than the chip by partitioning them.

    import neuropart
    net = neuropart.from_nir("model.nir")          # or Network.from_toml("net.toml")
    plan = net.plan(chips=1)                       # how it partitions onto BrainScaleS-2
    out = net.run({"input": spikes}, device="gpu", mode="emulated")

Arrays are numpy: spikes ``bool [batch, T, neurons]``, membranes ``float32 [batch, T,
neurons]``, weights ``float32`` in each projection's layout (dense: ``[target][source]``).
``neuropart.torch`` (needs PyTorch: ``pip install 'neuropart[torch]'``) wraps a network as a
``torch.nn.Module`` trained from a PyTorch loop with the emulator in the loop.
Bad networks, inputs and options raise ``ValueError``; device, file and divergence failures
``RuntimeError``; both carry the library's message.
"""

from ._neuropart import (
    Network,
    Plan,
    Substrate,
    Trainable,
    __version__,
    encode_images,
    load_mnist,
    set_memory_limit,
    spikes_to_dense,
)
from ._nir import from_nir, to_nir, weight_report

__all__ = [
    "Network",
    "Plan",
    "Substrate",
    "Trainable",
    "encode_images",
    "load_mnist",
    "from_nir",
    "to_nir",
    "weight_report",
    "spikes_to_dense",
    "set_memory_limit",
    "__version__",
]
