#!/usr/bin/env bash
# Data-parallel training across processes equals one process: builds neuropart with the `mpi`
# feature (needs OpenMPI and libclang: apt-get install openmpi-bin libopenmpi-dev libclang-dev
# pkg-config), trains the MNIST network on 2 000 images for one epoch in one process and in 2
# processes under mpirun, and compares the checkpoints' weights (identical expected; at most
# 1e-6 of the largest weight allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features mpi --bin neuropart
bin=target/release/neuropart
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(train examples/networks/mnist.toml --train-samples 2000 --test-samples 500 --epochs 1
      --device cpu --mode emulated)
"$bin" "${args[@]}" --out "$out/one" 2>&1 | tail -n 1
# CI runs as root on 2 cores: allow both.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  mpirun --oversubscribe -n 2 "$bin" "${args[@]}" --out "$out/two" 2>&1 | tail -n 1
python3 - "$out/one/checkpoint.json" "$out/two/checkpoint.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["weights"]
b = json.load(open(sys.argv[2]))["weights"]
largest = max(abs(x) for p in a for x in p)
worst = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))
n = sum(len(p) for p in a)
ok = len(a) == len(b) and worst <= 1e-6 * largest
print(f"{'1 passed, 0 failed' if ok else '0 passed, 1 failed'}: 2-process training vs 1 process, "
      f"{n} weights, largest difference {worst:g} (largest weight {largest:g})")
sys.exit(0 if ok else 1)
PY
