#!/usr/bin/env bash
# Work shared by processes under MPI equals one process: builds neuropart with the `mpi`
# feature (needs OpenMPI and libclang: apt-get install openmpi-bin libopenmpi-dev libclang-dev
# pkg-config), then with 2 processes under mpirun against one process:
#   1. training the MNIST network on 2 000 images for one epoch (the checkpoints' weights:
#      identical, bit for bit: JSON keeps an f32 exactly);
#   2. resuming that checkpoint for a second epoch (a checkpoint of one process continued by
#      two: the same weights);
#   3. evaluation, a chip-instance sweep and a run with membranes, sharded over the processes
#      and gathered on the first (identical output expected, byte for byte), also a run on a
#      multi-chip system whose recurrent loop spans chips;
#   4. the chips of a system shared out by 2 and 4 processes (--distribute chips: model
#      parallelism, spikes exchanged after every window): the same output as one process, with
#      receive buffers that drop too, the same weights after training across chips, and a
#      network whose synapses do not fit one process's --max-memory refused with the memory
#      each would need, run by 4; and both ways at once (--distribute chips,samples: 2 groups
#      of 2 processes);
#   5. processes given different options or files stop at once with a message naming the
#      difference (no hang, no blend).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features mpi --bin neuropart
bin=$PWD/target/release/neuropart
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# CI runs as root on 2 cores: allow both.
two() {
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe -n 2 "$bin" "$@"
}
passed=0
failed=0
check() { # NAME COMMAND...: count a check that exits 0 as passed
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}
same_weights() { # A B LABEL
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["weights"]
b = json.load(open(sys.argv[2]))["weights"]
largest = max(abs(x) for p in a for x in p)
worst = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))
n = sum(len(p) for p in a)
ok = len(a) == len(b) and all(len(p) == len(q) for p, q in zip(a, b)) and worst == 0
print(f"{sys.argv[3]}: {n} weights, largest difference {worst:g} (largest weight {largest:g})")
sys.exit(0 if ok else 1)
PY
}
same_file() { # A B LABEL
  if cmp -s "$1" "$2"; then
    echo "$3: identical ($(wc -c <"$1") bytes)"
  else
    echo "$3: the files differ"
    return 1
  fi
}

train=(train examples/networks/mnist.toml --train-samples 2000 --test-samples 500 --device cpu
       --mode emulated)
"$bin" "${train[@]}" --epochs 1 --out "$out/one" 2>&1 | tail -n 1
two "${train[@]}" --epochs 1 --out "$out/two" 2>&1 | tail -n 1
check "2-process training" same_weights "$out/one/checkpoint.json" "$out/two/checkpoint.json" \
  "2-process training vs 1 process"

cp -r "$out/one" "$out/one-more"
cp -r "$out/one" "$out/two-more"
"$bin" "${train[@]}" --epochs 2 --resume --out "$out/one-more" 2>&1 | tail -n 1
two "${train[@]}" --epochs 2 --resume --out "$out/two-more" 2>&1 | tail -n 1
check "2-process resume" same_weights "$out/one-more/checkpoint.json" \
  "$out/two-more/checkpoint.json" "a 1-process checkpoint resumed by 2 processes vs by 1"

ck=$out/one/checkpoint.json
ev=(eval examples/networks/mnist.toml --checkpoint "$ck" --test-samples 1000 --device cpu
    --mode emulated)
"$bin" "${ev[@]}" >"$out/eval-one.txt" 2>/dev/null
two "${ev[@]}" >"$out/eval-two.txt" 2>/dev/null
check "2-process evaluation" same_file "$out/eval-one.txt" "$out/eval-two.txt" \
  "2-process evaluation ($(cat "$out/eval-one.txt"))"
"$bin" "${ev[@]}" --chip-instances 3 --out "$out/sweep-one" >/dev/null 2>&1
two "${ev[@]}" --chip-instances 3 --out "$out/sweep-two" >/dev/null 2>&1
check "2-process chip sweep" same_file "$out/sweep-one/chips.csv" "$out/sweep-two/chips.csv" \
  "2-process sweep of 3 chips, chips.csv"

python3 - "$out/input.json" <<'PY'
import json, random, sys
random.seed(3)
samples = [sorted({(random.randrange(30), random.randrange(784)) for _ in range(150)})
           for _ in range(5)]
json.dump({"steps": 30, "populations": {"input": [[list(e) for e in s] for s in samples]}},
          open(sys.argv[1], "w"))
PY
run=(run examples/networks/mnist.toml --checkpoint "$ck" --input "$out/input.json" --mode emulated
     --seed 5 --membranes)
"$bin" "${run[@]}" --output "$out/run-one.json" 2>/dev/null
two "${run[@]}" --output "$out/run-two.json" 2>/dev/null
check "2-process run" same_file "$out/run-one.json" "$out/run-two.json" \
  "2-process run of 5 samples with membranes"

python3 - "$out/in600.json" <<'PY'
import json, random, sys
random.seed(4)
samples = [sorted({(random.randrange(100), n) for n in range(100) if random.random() < 0.2})
           for _ in range(5)]
json.dump({"steps": 100, "populations": {"input": [[list(e) for e in s] for s in samples]}},
          open(sys.argv[1], "w"))
PY
sys=(run examples/networks/recurrent-600.toml --substrate examples/systems/bss2-4chip.toml
     --chips 11 --input "$out/in600.json")
"$bin" "${sys[@]}" --output "$out/sys-one.json" 2>/dev/null
two "${sys[@]}" --output "$out/sys-two.json" 2>/dev/null
check "2-process system run" same_file "$out/sys-one.json" "$out/sys-two.json" \
  "2-process run of a recurrent loop over 10 chips of a system"

# Model parallelism (--distribute chips): each process holds and runs its share of the chips,
# the cross-chip spikes exchanged after every window; the output must be one process's, for 2
# and 4 processes (oversubscribed), and the weights after training too.
four() {
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe -n 4 "$bin" "$@"
}
two "${sys[@]}" --distribute chips --output "$out/sys-chips-two.json" 2>/dev/null
check "2 processes sharing the chips" same_file "$out/sys-one.json" "$out/sys-chips-two.json" \
  "the recurrent loop over 10 chips, chips shared by 2 processes"
four "${sys[@]}" --distribute chips --output "$out/sys-chips-four.json" 2>/dev/null
check "4 processes sharing the chips" same_file "$out/sys-one.json" "$out/sys-chips-four.json" \
  "the recurrent loop over 10 chips, chips shared by 4 processes"
drop=$out/bss2-4chip-drops.toml
sed 's/^receive_buffer = 0/receive_buffer = 3/' examples/systems/bss2-4chip.toml >"$drop"
dsys=(run examples/networks/recurrent-600.toml --substrate "$drop" --chips 11 --input "$out/in600.json")
"$bin" "${dsys[@]}" --output "$out/drop-one.json" 2>"$out/drop-one.txt"
two "${dsys[@]}" --distribute chips --output "$out/drop-two.json" 2>/dev/null
check "2 processes sharing chips whose buffers drop" same_file "$out/drop-one.json" \
  "$out/drop-two.json" "receive buffers of 3 events, chips shared by 2 processes"
drops() { # the receive-buffer drops the run reported must be more than none
  local line
  line=$(grep -m1 -o 'dropped [0-9]* (bandwidth) + [0-9]* (receive buffer)' "$1") || return 1
  echo "$line"
  [ "$(echo "$line" | awk '{print $5}')" -gt 0 ]
}
check "the buffers drop" drops "$out/drop-one.txt"
# A recurrent loop across chips (two populations that read each other over the links, one per
# chip, the readout on a third) trained on MNIST images.
systrain=(train examples/networks/recurrent-2chips.toml --substrate examples/systems/bss2-4chip.toml
          --train-samples 200 --test-samples 100 --device cpu --mode emulated --epochs 1)
"$bin" "${systrain[@]}" --out "$out/systrain-one" 2>&1 | grep "^epoch 1"
two "${systrain[@]}" --distribute chips --out "$out/systrain-two" 2>&1 | tail -n 1
check "training with the chips shared by 2 processes" same_weights \
  "$out/systrain-one/checkpoint.json" "$out/systrain-two/checkpoint.json" \
  "training a recurrent loop across 2 chips (+ readout chip), chips shared by 2 processes vs 1"
four "${systrain[@]}" --distribute chips,samples --chip-ranks 2 --out "$out/systrain-grid" 2>&1 |
  tail -n 1
check "training in 2 groups of 2 processes" same_weights "$out/systrain-one/checkpoint.json" \
  "$out/systrain-grid/checkpoint.json" \
  "training the loop across chips, 2 groups of 2 processes (chips within, samples between) vs 1"
four "${sys[@]}" --distribute chips,samples --chip-ranks 2 --output "$out/sys-grid.json" 2>/dev/null
check "a run in 2 groups of 2 processes" same_file "$out/sys-one.json" "$out/sys-grid.json" \
  "the recurrent loop over 10 chips, 2 groups of 2 processes"
python3 - "$out/in100.json" <<'PY'
import json, random, sys
random.seed(5)
samples = [sorted({(random.randrange(100), n) for n in range(100) if random.random() < 0.5})
           for _ in range(2)]
json.dump({"steps": 100, "populations": {"input": [[list(e) for e in s] for s in samples]}},
          open(sys.argv[1], "w"))
PY
big0=(run examples/networks/recurrent-1024.toml --substrate examples/systems/bss2-4chip.toml
      --chips 40 --input "$out/in100.json")
big=("${big0[@]}" --max-memory 12M)
"$bin" "${big0[@]}" --output "$out/big-one.json" 2>/dev/null
refused() { # LABEL NEEDLE COMMAND...: must exit non-zero saying NEEDLE
  local label=$1 needle=$2 log=$out/refused.log
  shift 2
  if "$@" >"$log" 2>&1; then
    echo "$label: ran"
    return 1
  fi
  if grep -q "$needle" "$log"; then
    echo "$label: refused ($(grep -m1 "$needle" "$log" | cut -c1-240))"
  else
    echo "$label: no message naming '$needle':"
    tail -n 3 "$log"
    return 1
  fi
}
check "weights too large for one process" refused "a network too large for one process" \
  "spread over 3 processes with --distribute chips" "$bin" "${big[@]}"
check "weights too large for two processes" refused "the same network on 2 processes" \
  "3 processes would fit" two "${big[@]}" --distribute chips
four "${big[@]}" --distribute chips --output "$out/big-four.json" 2>/dev/null || true
check "weights spread over four processes" same_file "$out/big-one.json" "$out/big-four.json" \
  "the 1 024-neuron loop on 33 of 40 chips, too large for one process's limit, run by 4 processes"

stops() { # LABEL NEEDLE APP-CONTEXTS...: mpirun with these app contexts must stop with an
  # error (not run to the end, not hang: a time limit) that says NEEDLE
  local label=$1 needle=$2
  shift 2
  local log=$out/stops.log status=0
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 \
    mpirun --oversubscribe "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
    echo "$label: $([ "$status" -eq 0 ] && echo "ran to the end" || echo "hung")"
    return 1
  fi
  if grep -q "$needle" "$log"; then
    echo "$label: stopped ($(grep -m1 "$needle" "$log" | cut -c1-150))"
  else
    echo "$label: no message naming '$needle':"
    tail -n 5 "$log"
    return 1
  fi
}
net=$PWD/examples/networks/mnist.toml
check "different options" stops "processes given different --epochs" "another command line" \
  -n 1 "$bin" "${train[@]}" --epochs 1 --out "$out/d1" : \
  -n 1 "$bin" "${train[@]}" --epochs 2 --out "$out/d1"
# A node with an older copy: the same command line, another file behind the same path.
mkdir -p "$out/p0/mnist" "$out/p1/mnist"
cp "$out/one/checkpoint.json" "$out/p0/ck.json"
cp "$out/two-more/checkpoint.json" "$out/p1/ck.json"
ev0=(eval "$net" --checkpoint ck.json --data "$PWD/data-cache/mnist" --test-samples 1000
     --device cpu)
check "different checkpoints" stops "processes given different checkpoints" "another checkpoint" \
  -n 1 -wdir "$out/p0" "$bin" "${ev0[@]}" : -n 1 -wdir "$out/p1" "$bin" "${ev0[@]}"
cp data-cache/mnist/* "$out/p0/mnist/"
cp data-cache/mnist/* "$out/p1/mnist/"
python3 - "$out/p1/mnist/t10k-labels-idx1-ubyte" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[8] = (b[8] + 1) % 10
open(p, "wb").write(bytes(b))
PY
ev1=(eval "$net" --checkpoint "$out/one/checkpoint.json" --data mnist --test-samples 1000
     --device cpu)
check "different data" stops "processes given different test sets" "another test set" \
  -n 1 -wdir "$out/p0" "$bin" "${ev1[@]}" : -n 1 -wdir "$out/p1" "$bin" "${ev1[@]}"

echo "$passed passed, $failed failed: work shared by 2 MPI processes vs 1 process"
[ "$failed" -eq 0 ]
