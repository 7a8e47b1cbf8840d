#!/usr/bin/env bash
# One prepared check on a machine with a real GPU: the GPU tests (inference and training)
# against the CPU reference, `neuropart bench` at batch 4096 and 65536, and
# `neuropart bench --train` at batch 1000 and 4000. Run from the repository root.
#
#   With a Rust toolchain:   scripts/gpu-check.sh
#   Without one (prebuilt):  GPU_CHECK_BIN=dir scripts/gpu-check.sh, where dir holds the
#                            `neuropart` binary and the `gpu-*` and `gpu_train-*` test
#                            binaries built with `cargo test --release --no-run`.
set -uo pipefail
out=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt" || true
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  bin="$GPU_CHECK_BIN/neuropart"
  tests=$(ls "$GPU_CHECK_BIN"/gpu-* | grep -v '\.d$' | head -n 1)
  train_tests=$(ls "$GPU_CHECK_BIN"/gpu_train-* | grep -v '\.d$' | head -n 1)
else
  cargo build --release && cargo test --release --no-run || exit 1
  bin=target/release/neuropart
  tests=$(ls -t target/release/deps/gpu-* | grep -v '\.d$' | head -n 1)
  train_tests=$(ls -t target/release/deps/gpu_train-* | grep -v '\.d$' | head -n 1)
fi
CI=1 "$tests" --test-threads 1 2>&1 | tee "$out/gpu-tests.txt"
CI=1 "$train_tests" --test-threads 1 2>&1 | tee -a "$out/gpu-tests.txt"
"$bin" bench --device gpu --batch 4096,65536 --steps 100 --seconds 3 2>&1 | tee "$out/bench-gpu.txt"
"$bin" bench --device gpu --batch 4096,65536 --steps 30 --seconds 3 2>&1 | tee -a "$out/bench-gpu.txt"
"$bin" bench --train --device gpu --batch 1000,4000 --steps 30 --batches 20 2>&1 | tee "$out/bench-train-gpu.txt"
"$bin" bench --device cpu --batch 4096 --steps 100 --seconds 3 2>&1 | tee "$out/bench-cpu.txt"
"$bin" bench --train --device cpu --batch 100 --steps 30 2>&1 | tee -a "$out/bench-cpu.txt"
