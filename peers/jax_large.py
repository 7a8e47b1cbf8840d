"""JAX peer for the network far larger than the chip (`examples/networks/large.toml`):
2048 -> 8192 -> 8192 -> 10 LIF as dense layers (activity-independent), forward Euler with
the published constants, `jit` + `lax.scan` over time, float32; inference only. Compare with
`neuropart bench --network examples/networks/large.toml --device cpu` in the same sitting."""
import os

from common import A_SYN, K_MEM, args, report, timed, ttfs_input

a = args()
os.environ["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen=true "
                           f"intra_op_parallelism_threads={a.threads}")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_platform_name", "cpu")
SIZES = (2048, 8192, 8192, 10)


def forward(w, x):
    b = x.shape[1]

    def step(state, xt):
        new, s = [], xt
        for k, wk in enumerate(w):
            i, v = state[2 * k], state[2 * k + 1]
            i = A_SYN * i + s @ wk.T
            v = v + K_MEM * (-v + i)
            if k < len(w) - 1:
                s = (v >= 1.0).astype(v.dtype)
                v = v * (1.0 - s)
            new += [i, v]
        return tuple(new), state[-1]

    zeros = tuple(jnp.zeros((b, n)) for n in SIZES[1:] for _ in range(2))
    _, vs = jax.lax.scan(step, zeros, x)
    return vs.max(axis=0)


keys = jax.random.split(jax.random.PRNGKey(0), 3)
# The network file's default initialisation scale (neuropart draws its own weights).
w = tuple(0.2 * jax.random.normal(k, (n_out, n_in)) / jnp.sqrt(n_in / 100)
          for k, n_in, n_out in zip(keys, SIZES[:-1], SIZES[1:]))
x = jnp.asarray(ttfs_input(a.batch, a.steps, n=SIZES[0]))
step = jax.jit(forward)
report("jax-large", a, timed(lambda: step(w, x).block_until_ready(), a.seconds))
