#!/usr/bin/env bash
# One prepared check on a machine with a real GPU: the GPU tests against the CPU reference and
# `neuropart bench` at batch 4096 and 65536. Run from the repository root.
#
#   With a Rust toolchain:   scripts/gpu-check.sh
#   Without one (prebuilt):  GPU_CHECK_BIN=dir scripts/gpu-check.sh, where dir holds the
#                            `neuropart` binary and the `gpu-*` test binary built with
#                            `cargo test --release --no-run`.
set -uo pipefail
out=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt" || true
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  bin="$GPU_CHECK_BIN/neuropart"
  tests=$(ls "$GPU_CHECK_BIN"/gpu-* | head -n 1)
else
  cargo build --release && cargo test --release --no-run || exit 1
  bin=target/release/neuropart
  tests=$(ls -t target/release/deps/gpu-* | grep -v '\.d$' | head -n 1)
fi
CI=1 "$tests" --test-threads 1 2>&1 | tee "$out/gpu-tests.txt"
"$bin" bench --device gpu --batch 4096,65536 --steps 100 --seconds 3 2>&1 | tee "$out/bench-gpu.txt"
"$bin" bench --device gpu --batch 4096,65536 --steps 30 --seconds 3 2>&1 | tee -a "$out/bench-gpu.txt"
"$bin" bench --device cpu --batch 4096 --steps 100 --seconds 3 2>&1 | tee "$out/bench-cpu.txt"
