#!/usr/bin/env bash
# Every test: the Rust suite (`cargo test --release`), then the Python package built into a
# local virtual environment (.venv, created and filled on first use: maturin, numpy, nir,
# pytest, hypothesis from PyPI; PyTorch from Debian where python3-torch is installed) and its
# pytest suite, then data-parallel training under MPI (scripts/mpi-test.sh) where mpirun is
# installed (required when CI is set). What CI runs (.ci/run) and what the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
# Where Debian's CPU-only PyTorch is installed (python3-torch, which .ci/run installs), the venv
# is made from Debian's python3 with its system packages, so that the PyTorch bridge's test
# runs (torch, and the numpy it was built against, come from Debian); otherwise from python3,
# and that test skips (it fails under CI). A venv made the other way is made anew.
py=python3
venv_flags=()
system=false
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  py=/usr/bin/python3
  venv_flags=(--system-site-packages)
  system=true
fi
home=$(dirname "$("$py" -c 'import sys; print(sys._base_executable)')")
if [ -f .venv/pyvenv.cfg ] && ! { grep -qx "home = $home" .venv/pyvenv.cfg &&
  grep -qx "include-system-site-packages = $system" .venv/pyvenv.cfg; }; then
  echo "making .venv anew from $py (system packages: $system)"
  rm -rf .venv
fi
"$py" -m venv "${venv_flags[@]}" .venv >/dev/null 2>&1 || { echo "$py -m venv failed: install python3-venv" >&2; exit 1; }
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
