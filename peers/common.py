"""Shared set-up of the peer benchmarks: the MNIST topology (784-256-10), random
time-to-first-spike input like `neuropart bench` (19 % of pixels on, uniform brightness, one
spike per pixel at step T - round(T * x)), the published neuron constants, timing."""
import argparse
import time

import numpy as np

TAU_SYN, TAU_MEM = 5.7, 6.0
A_SYN, K_MEM = 1.0 - 1.0 / TAU_SYN, 1.0 / TAU_MEM


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def ttfs_input(batch, steps, seed=7, density=0.19, n=784):
    """Dense spikes [T, B, n] (float32 0/1)."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((batch, n)) < density, rng.random((batch, n)), 0.0)
    step = steps - np.round(steps * x).astype(int)
    spikes = np.zeros((steps, batch, n), np.float32)
    b, n = np.nonzero(step < steps)
    spikes[step[b, n], b, n] = 1.0
    return spikes


def labels(batch, seed=8):
    return np.random.default_rng(seed).integers(0, 10, batch)


def timed(step, seconds):
    """Run `step()` once to warm up, then repeatedly for at least `seconds`; calls per s."""
    step()
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def report(name, a, calls_per_s):
    print(f"{name} {a.mode} T={a.steps} batch={a.batch} threads={a.threads}: "
          f"{calls_per_s * a.batch:.0f} samples/s")
