#!/usr/bin/env bash
# Runs the peers and neuropart one after another on the same machine (one sitting), MNIST
# 784-256-10, random TTFS input. Usage: peers/run.sh PYTHON NEUROPART [infer|train] T BATCH
#   PYTHON: an interpreter with torch, snntorch and jax (pip install torch snntorch jax)
set -euo pipefail
py=$1; np=$2; mode=${3:-infer}; steps=${4:-100}; batch=${5:-256}
cd "$(dirname "$0")"
"$py" snntorch_mnist.py --mode "$mode" --steps "$steps" --batch "$batch"
"$py" jax_mnist.py --mode "$mode" --steps "$steps" --batch "$batch"
if [ "$mode" = infer ]; then
  "$np" bench --device cpu --steps "$steps" --batch "$batch" --seconds 3 | grep '^| cpu'
else
  "$np" bench --train --device cpu --mode emulated --steps "$steps" --batch "$batch" | grep '^| cpu'
fi
