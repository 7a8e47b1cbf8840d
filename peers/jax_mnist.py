"""JAX peer (the style of jaxsnn): MNIST 784-256-10, forward Euler as the chip's training
software, `jit` + `lax.scan` over time, SuperSpike surrogate via a custom derivative, Adam;
inference or training (loss: cross-entropy of 3 x the readout membrane's maximum over time)."""
import os

from common import A_SYN, K_MEM, args, labels, report, timed, ttfs_input

a = args()
os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen=true "
                           f"intra_op_parallelism_threads={a.threads}")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platform_name", "cpu")


@jax.custom_vjp
def spike(v):
    return (v >= 1.0).astype(v.dtype)


def spike_fwd(v):
    return spike(v), v


def spike_bwd(v, g):
    return (g / (50.0 * jnp.abs(v - 1.0) + 1.0) ** 2,)


spike.defvjp(spike_fwd, spike_bwd)


def forward(w, x):
    w1, w2 = w
    b = x.shape[1]

    def step(state, xt):
        i1, v1, i2, v2 = state
        i1 = A_SYN * i1 + xt @ w1.T
        v1 = v1 + K_MEM * (-v1 + i1)
        s1 = spike(v1)
        v1 = v1 * (1.0 - jax.lax.stop_gradient(s1))
        i2 = A_SYN * i2 + s1 @ w2.T
        v2 = v2 + K_MEM * (-v2 + i2)
        return (i1, v1, i2, v2), v2

    z1, z2 = jnp.zeros((b, 256)), jnp.zeros((b, 10))
    _, vs = jax.lax.scan(step, (z1, z1, z2, z2), x)
    return 3.0 * vs.max(axis=0)


def loss(w, x, y):
    s = forward(w, x)
    return -jnp.mean(jax.nn.log_softmax(s)[jnp.arange(y.shape[0]), y])


@jax.jit
def train_step(w, m, v, t, x, y):
    g = jax.grad(loss)(w, x, y)
    m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
    w = jax.tree.map(lambda w, m, v: w - 0.002 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), w, m, v)
    return w, m, v


infer_step = jax.jit(forward)
key = jax.random.PRNGKey(0)
k1, k2 = jax.random.split(key)
w = (-0.05 + 0.2 * jax.random.normal(k1, (256, 784)), 0.01 + 0.2 * jax.random.normal(k2, (10, 256)))
x = jnp.asarray(ttfs_input(a.batch, a.steps))
y = jnp.asarray(labels(a.batch))
state = {"w": w, "m": jax.tree.map(jnp.zeros_like, w), "v": jax.tree.map(jnp.zeros_like, w), "t": 0}


def infer():
    infer_step(w, x).block_until_ready()


def train():
    state["t"] += 1
    state["w"], state["m"], state["v"] = train_step(state["w"], state["m"], state["v"],
                                                    state["t"], x, y)
    jax.block_until_ready(state["w"])


report("jax", a, timed(infer if a.mode == "infer" else train, a.seconds))
