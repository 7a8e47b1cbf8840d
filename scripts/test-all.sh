#!/usr/bin/env bash
# Every test: the Rust suite (`cargo test --release`), then the Python package built into a
# local virtual environment (.venv, created and filled on first use: maturin, numpy, nir,
# pytest, hypothesis from PyPI) and its pytest suite, then data-parallel training under MPI
# (scripts/mpi-test.sh) where mpirun is installed (required when CI is set). What CI runs
# (.ci/run) and what the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
python3 -m venv .venv >/dev/null 2>&1 || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
.venv/bin/pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" "numpy>=1.21" "nir>=1.0" "pytest>=7" "hypothesis>=6"
(cd python && VIRTUAL_ENV="$PWD/../.venv" PATH="$PWD/../.venv/bin:$PATH" maturin develop --release -q)
.venv/bin/python -m pytest -q python/tests
if command -v mpirun >/dev/null; then
  scripts/mpi-test.sh
elif [ -n "${CI:-}" ]; then
  echo "CI is set but mpirun is missing (apt-get install openmpi-bin libopenmpi-dev libclang-dev pkg-config)" >&2
  exit 1
else
  echo "skipping the MPI test: no mpirun (apt-get install openmpi-bin libopenmpi-dev libclang-dev pkg-config)"
fi
