"""JAX peer of `examples/smnist.rs` (the style of jaxsnn): row-wise sequential MNIST, 28 input
channels (a row every `--steps-per-row` steps, a pixel x spiking at r*k + floor(k*(1 - x))),
a recurrent hidden layer of `--populations` x `--hidden` LIF neurons (as the example: 3 x 128;
tau_mem 10, tau_syn 5.7, every hidden neuron reads every hidden neuron one step later, initial
weights drawn per population), 10 leaky readouts scored by the sum of their
membrane over time (scale 6/T); forward Euler as the chip's training software, `jit` +
`lax.scan` over time, SuperSpike surrogate (alpha 10) via a custom derivative, Adam, training
(backpropagation through time) or inference on random MNIST-shaped images (19 % of pixels on).
Dense f32 arithmetic: the work does not depend on activity."""
import argparse
import os
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--mode", choices=["infer", "train"], default="train")
p.add_argument("--steps-per-row", type=int, default=2)
p.add_argument("--tail", type=int, default=4)
p.add_argument("--hidden", type=int, default=128, help="neurons per hidden population")
p.add_argument("--populations", type=int, default=3)
p.add_argument("--batch", type=int, default=100)
p.add_argument("--seconds", type=float, default=5.0)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen=true "
                           f"intra_op_parallelism_threads={a.threads}")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platform_name", "cpu")
T = 28 * a.steps_per_row + a.tail
A_SYN, K_MEM, K_OUT = 1.0 - 1.0 / 5.7, 1.0 / 10.0, 1.0 / 10.0
ALPHA = 10.0


@jax.custom_vjp
def spike(v):
    return (v >= 1.0).astype(v.dtype)


def spike_fwd(v):
    return spike(v), v


def spike_bwd(v, g):
    return (g / (ALPHA * jnp.abs(v - 1.0) + 1.0) ** 2,)


spike.defvjp(spike_fwd, spike_bwd)


def forward(w, x):
    w_in, w_rec, w_out = w
    b = x.shape[1]
    n = w_rec.shape[0]

    def step(state, xt):
        i1, v1, s1, i2, v2 = state
        i1 = A_SYN * i1 + xt @ w_in.T + s1 @ w_rec.T
        v1 = v1 + K_MEM * (-v1 + i1)
        s1 = spike(v1)
        v1 = v1 * (1.0 - jax.lax.stop_gradient(s1))
        i2 = A_SYN * i2 + s1 @ w_out.T
        v2 = v2 + K_OUT * (-v2 + i2)
        return (i1, v1, s1, i2, v2), v2

    z1, z2 = jnp.zeros((b, n)), jnp.zeros((b, 10))
    _, vs = jax.lax.scan(step, (z1, z1, z1, z2, z2), x)
    return (6.0 / T) * vs.sum(axis=0)


def loss(w, x, y):
    s = forward(w, x)
    return -jnp.mean(jax.nn.log_softmax(s)[jnp.arange(y.shape[0]), y])


@jax.jit
def train_step(w, m, v, t, x, y):
    g = jax.grad(loss)(w, x, y)
    m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
    w = jax.tree.map(lambda w, m, v: w - 0.005 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), w, m, v)
    return w, m, v


def rows_input(batch, seed=7, density=0.19):
    """Dense spikes [T, B, 28] of random 28 x 28 images fed row by row."""
    rng = np.random.default_rng(seed)
    img = np.where(rng.random((batch, 28, 28)) < density, rng.random((batch, 28, 28)), 0.0)
    k = a.steps_per_row
    x = np.zeros((T, batch, 28), np.float32)
    for r in range(28):
        on = img[:, r, :] > 0
        t = r * k + np.minimum(np.floor(k * (1.0 - img[:, r, :])).astype(int), k - 1)
        bb, cc = np.nonzero(on)
        x[t[bb, cc], bb, cc] = 1.0
    return x


key = jax.random.PRNGKey(0)
k1, k2, k3 = jax.random.split(key, 3)
n = a.hidden * a.populations
w = (0.05 + 0.4 * jax.random.normal(k1, (n, 28)),
     (0.5 / np.sqrt(n / a.populations)) * jax.random.normal(k2, (n, n)),
     (1.0 / np.sqrt(n / a.populations)) * jax.random.normal(k3, (10, n)))
x = jnp.asarray(rows_input(a.batch))
y = jnp.asarray(np.random.default_rng(8).integers(0, 10, a.batch))
state = {"w": w, "m": jax.tree.map(jnp.zeros_like, w), "v": jax.tree.map(jnp.zeros_like, w), "t": 0}
infer_step = jax.jit(forward)


def infer():
    infer_step(w, x).block_until_ready()


def train():
    state["t"] += 1
    state["w"], state["m"], state["v"] = train_step(state["w"], state["m"], state["v"],
                                                    state["t"], x, y)
    jax.block_until_ready(state["w"])


step = infer if a.mode == "infer" else train
step()
calls, t0 = 0, time.perf_counter()
while calls == 0 or time.perf_counter() - t0 < a.seconds:
    step()
    calls += 1
rate = calls / (time.perf_counter() - t0)
print(f"jax smnist {a.mode} T={T} hidden={a.populations}x{a.hidden} batch={a.batch} "
      f"threads={a.threads}: "
      f"{rate * a.batch:.0f} samples/s")
