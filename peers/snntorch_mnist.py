"""snnTorch peer: MNIST 784-256-10 with `snn.Synaptic` layers, inference or Adam + BPTT
training (loss: cross-entropy of 3 x the readout membrane's maximum over time)."""
import torch
import snntorch as snn

from common import A_SYN, K_MEM, args, labels, report, timed, ttfs_input

a = args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
fc1, fc2 = torch.nn.Linear(784, 256, bias=False), torch.nn.Linear(256, 10, bias=False)
lif1 = snn.Synaptic(alpha=A_SYN, beta=1 - K_MEM, threshold=1.0, reset_mechanism="zero")
out = snn.Synaptic(alpha=A_SYN, beta=1 - K_MEM, threshold=1e9, reset_mechanism="none")
x = torch.from_numpy(ttfs_input(a.batch, a.steps))
y = torch.from_numpy(labels(a.batch))
params = list(fc1.parameters()) + list(fc2.parameters())
opt = torch.optim.Adam(params, lr=0.002)


def forward():
    syn1, mem1 = lif1.init_synaptic()
    syn2, mem2 = out.init_synaptic()
    peak = None
    for t in range(a.steps):
        spk1, syn1, mem1 = lif1(fc1(x[t]), syn1, mem1)
        _, syn2, mem2 = out(fc2(spk1), syn2, mem2)
        peak = mem2 if peak is None else torch.maximum(peak, mem2)
    return 3.0 * peak


def infer():
    with torch.no_grad():
        forward()


def train():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(forward(), y).backward()
    opt.step()


report("snntorch", a, timed(infer if a.mode == "infer" else train, a.seconds))
