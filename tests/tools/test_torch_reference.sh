#!/usr/bin/env bash
# launch/tools/hspmn_torch_reference.py, the plain PyTorch HSPMN-SM of docs/PERFORMANCE.md:
#   bench: a tiny configuration on the cpu for 2 steps prints a positive tokens/s, finite
#          losses and the command to reproduce it (also with attn=dense ffn=dense);
#   --check: on checkpoints of a real hspmn_dist run whose tensors are overwritten with
#          random values at scales where every part of the block moves the loss, the
#          reference's eval-mode CE equals `hspmn_dist eval` on the same held-out sequences
#          (two different weight sets, so a match is not a coincidence of one number);
#   --check_mode train: at capacity 1 (selection independent of the Gumbel noise) the loss
#          terms and gradient norm equal what hspmn_dist logs for one resumed training step.
# Skips (77) when the python of tests/python_env.sh cannot import torch: CI has no torch.
# To run it here: HSPMN_PYTHON=/path/to/venv/bin/python (a venv with torch, h5py, numpy).
set -euo pipefail

src=${HSPMN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${HSPMN_BUILD:-$src/build}
source "$src/tests/python_env.sh"
python=${HSPMN_PYTHON:-python3}
reference=$src/launch/tools/hspmn_torch_reference.py

if ! "$python" -c 'import torch, h5py, numpy' 2>/dev/null; then
    echo "SKIP: $python cannot import torch, h5py and numpy (expected without PyTorch, e.g. in CI;"
    echo "      set HSPMN_PYTHON to a python that has them)"
    exit 77
fi
if [[ ! -x $build/hspmn_dist ]]; then
    echo "FAIL: $build/hspmn_dist is not built"
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

fail() {
    echo "FAIL: $*"
    exit 1
}

tiny=(--vocab_size 256 --d_model 32 --n_layers 2 --n_heads 4 --n_kv_heads 2 --seq_len 32
    --n_slots 128 --ptr_dim 8 --top_k 4 --micro_batch 2 --device cpu --compile 0 --threads 1)

# Checks one bench printout: tokens/s > 0, finite first and last loss, a reproduce line.
check_bench() {
    local out=$1
    "$python" - "$out" <<'EOF'
import math, re, sys
text = open(sys.argv[1]).read()
errors = []
m = re.search(r"^  tokens/s\s+(\S+)$", text, re.M)
if not m or not float(m.group(1)) > 0:
    errors.append("no positive tokens/s line")
m = re.search(r"^  loss\s+first (\S+) last (\S+)$", text, re.M)
if not m or not all(math.isfinite(float(v)) for v in m.groups()):
    errors.append("no finite loss line")
m = re.search(r"^  step ms\s+median (\S+) mean (\S+)$", text, re.M)
if not m or not all(float(v) > 0 for v in m.groups()):
    errors.append("no positive step ms line")
if not re.search(r"^reproduce: .*hspmn_torch_reference.py .*--steps 2", text, re.M):
    errors.append("no reproduce line with the arguments")
if not re.search(r"^  steps\s+2 timed after 1 warmup$", text, re.M):
    errors.append("steps line wrong")
for e in errors:
    print("  mismatch:", e)
sys.exit(1 if errors else 0)
EOF
}

echo "== bench: tiny config, cpu, 2 steps, fp32"
"$python" "$reference" "${tiny[@]}" --steps 2 --warmup 1 --dtype fp32 >"$work/bench.txt" 2>&1 ||
    {
        cat "$work/bench.txt"
        fail "bench exited with an error"
    }
cat "$work/bench.txt"
check_bench "$work/bench.txt" || fail "bench printout"

echo "== bench: attn=dense ffn=dense, bf16 autocast on the cpu"
"$python" "$reference" "${tiny[@]}" --steps 2 --warmup 1 --attn dense --ffn dense \
    >"$work/bench_dense.txt" 2>&1 || {
    cat "$work/bench_dense.txt"
    fail "dense bench exited with an error"
}
grep -E "tokens/s|loss" "$work/bench_dense.txt"
check_bench "$work/bench_dense.txt" || fail "dense bench printout"

echo "== bad flags: a clear error"
status=0
"$python" "$reference" "${tiny[@]}" --n_heads 5 >"$work/bad.txt" 2>&1 || status=$?
((status == 2)) && grep -q "n_heads=5" "$work/bad.txt" ||
    fail "--n_heads 5: exit $status, '$(cat "$work/bad.txt")'"

echo "== --check against hspmn_dist eval"
# A fixed "text" corpus (seeded random bytes) whose eval split (the last 10%) holds a few
# sequences; fixed so the losses below do not move when the repository's files do.
"$python" -c "import numpy as np; np.random.default_rng(3).integers(32, 127, 60000, dtype=np.uint8).tofile('$work/corpus.txt')"
"$build/hspmn_dist" train --device cpu --preset tiny --seq_len 64 --data "text:$work/corpus.txt" \
    --steps 2 --warmup 1 --ckpt_every 2 --eval_every 0 --log_every 2 --run_dir "$work/run" \
    >"$work/train.log" 2>&1 || {
    cat "$work/train.log"
    fail "hspmn_dist train failed"
}
[[ -f $work/run/ckpt_2.h5 ]] || fail "no checkpoint: $(ls "$work/run")"

# The held-out sequences `hspmn_dist eval --micro_batch 3 --eval_batches 1` reads on one rank
# (io/data.h): the eval split is the last n - floor(0.9 n) bytes; sequence g starts at
# (g T) mod (split - T - 1) in it and holds T + 1 tokens.
"$python" - "$work/corpus.txt" "$work/run/ckpt_2.h5" "$work/seqs.npy" <<'EOF'
import sys, h5py, numpy as np
corpus, ckpt, out = sys.argv[1:]
with h5py.File(ckpt, "r") as f:
    raw = f["config"].attrs["seq_len"]
    T = int(raw.decode() if isinstance(raw, bytes) else raw)
data = np.frombuffer(open(corpus, "rb").read(), dtype=np.uint8).astype(np.int64)
n = len(data)
begin = int(n * 0.9)
split = n - begin
starts = [begin + (g * T) % (split - T - 1) for g in range(3)]
np.save(out, np.stack([data[s:s + T + 1] for s in starts]))
EOF

# Every model tensor at random values and scales where each part matters (unit-gain
# matrices, sharp logits, slot scores and gates; norms and biases away from 1 and 0).
randomize() {
    "$python" - "$1" "$2" <<'EOF'
import sys, h5py, numpy as np
rng = np.random.default_rng(int(sys.argv[2]))
gains = {"lm_head/weight": 3.0, "memory/keys": 3.0, "attn/wq": 3.0, "attn/wk": 3.0,
         "attn/wo": 2.0, "router/weight": 3.0}
def visit(name, obj):
    if not (isinstance(obj, h5py.Dataset) and name.startswith("model/")):
        return
    shape = obj.shape
    if name.endswith("norm_a/weight") or name.endswith("norm_m/weight") or name.endswith("norm_f/weight"):
        value = 1.0 + 0.3 * rng.standard_normal(shape)
    elif name.endswith("memory/values") or name.endswith("embed/weight"):
        value = rng.standard_normal(shape)
    elif name.endswith("conv/weight") or len(shape) < 2 and not name.endswith("router/weight"):
        value = 0.5 * rng.standard_normal(shape)  # conv taps, biases
    else:  # matrices and the router: unit gain times the table's factor
        gain = next((v for k, v in gains.items() if name.endswith(k)), 1.0)
        value = gain * rng.standard_normal(shape) / np.sqrt(shape[-1])
    obj[...] = value.astype(np.float32)
with h5py.File(sys.argv[1], "r+") as f:
    f.visititems(visit)
EOF
}

losses=()
for seed in 7 8; do
    ckpt=$work/random_$seed.h5
    cp "$work/run/ckpt_2.h5" "$ckpt"
    randomize "$ckpt" "$seed"
    "$build/hspmn_dist" eval --device cpu --resume "$ckpt" --data "text:$work/corpus.txt" \
        --micro_batch 3 --eval_batches 1 --run_dir "$work/run" >"$work/eval_$seed.txt" 2>&1 || {
        cat "$work/eval_$seed.txt"
        fail "hspmn_dist eval failed"
    }
    ours=$(sed -n 's/^eval step [0-9]*: loss \([0-9.]*\) .*over 192 tokens$/\1/p' "$work/eval_$seed.txt")
    [[ -n $ours ]] || fail "no eval loss over 192 tokens in: $(tail -1 "$work/eval_$seed.txt")"
    "$python" "$reference" --check "$ckpt" --check_tokens "$work/seqs.npy" --device cpu \
        --threads 1 >"$work/check_$seed.txt" 2>&1 || {
        cat "$work/check_$seed.txt"
        fail "--check exited with an error"
    }
    theirs=$(sed -n 's/^  ce *\([0-9.]*\)$/\1/p' "$work/check_$seed.txt")
    [[ -n $theirs ]] || fail "no ce line in: $(cat "$work/check_$seed.txt")"
    grep -q "(39 tensors)" "$work/check_$seed.txt" || fail "--check did not load the 39 tensors"
    echo "  weights seed $seed: hspmn_dist eval CE $ours, reference CE $theirs"
    # eval prints 4 decimals: equal within its rounding plus float noise.
    "$python" -c "import sys; sys.exit(0 if abs($ours - $theirs) <= 1.5e-4 else 1)" ||
        fail "CE differs: hspmn_dist $ours, reference $theirs"
    losses+=("$ours")
done
# Two weight sets must give losses far apart compared with the tolerance above.
"$python" -c "import sys; sys.exit(0 if abs(${losses[0]} - ${losses[1]}) > 0.01 else 1)" ||
    fail "the two weight sets gave nearly the same loss (${losses[*]}): the check cannot tell them apart"

echo "== --check_mode train against one hspmn_dist training step (capacity 1)"
# At capacity 1 every token is a query whatever the Gumbel noise, so the training-mode loss
# terms and the gradient norm the trainer logs before its update must match the reference's.
model=(--preset tiny --seq_len 64 --capacity 1 --data "text:$work/corpus.txt" --batch 4
    --micro_batch 4 --warmup 1 --eval_every 0 --device cpu)
"$build/hspmn_dist" train "${model[@]}" --steps 2 --ckpt_every 2 --log_every 2 \
    --run_dir "$work/run_c1" >"$work/train_c1.log" 2>&1 || {
    cat "$work/train_c1.log"
    fail "hspmn_dist train (capacity 1) failed"
}
mkdir -p "$work/resume"
cp "$work/run_c1/ckpt_2.h5" "$work/resume/ckpt_2.h5"
randomize "$work/resume/ckpt_2.h5" 9
"$build/hspmn_dist" train "${model[@]}" --steps 3 --log_every 1 --ckpt_every 100 \
    --resume "$work/resume/ckpt_2.h5" --run_dir "$work/resume" >"$work/step3.log" 2>&1 || {
    cat "$work/step3.log"
    fail "hspmn_dist resumed step failed"
}
grep "^step     3/3" "$work/step3.log" || fail "no step 3 line: $(tail -3 "$work/step3.log")"
# Step 3 trains on the sequences at the data cursor 8 (2 steps x 4): g = 8 .. 11 of the
# train split (the first floor(0.9 n) bytes), each starting at (g T) mod (split - T - 1).
"$python" - "$work/corpus.txt" "$work/train_seqs.npy" <<'PYEOF'
import sys, numpy as np
data = np.frombuffer(open(sys.argv[1], "rb").read(), dtype=np.uint8).astype(np.int64)
T, split = 64, int(len(data) * 0.9)
starts = [(g * T) % (split - T - 1) for g in range(8, 12)]
np.save(sys.argv[2], np.stack([data[s:s + T + 1] for s in starts]))
PYEOF
"$python" "$reference" --check "$work/resume/ckpt_2.h5" --check_tokens "$work/train_seqs.npy" \
    --check_mode train --device cpu --threads 1 >"$work/check_train.txt" 2>&1 || {
    cat "$work/check_train.txt"
    fail "--check_mode train exited with an error"
}
tail -5 "$work/check_train.txt"
"$python" - "$work/step3.log" "$work/check_train.txt" <<'PYEOF' || fail "training step differs"
import re, sys
log, ref = open(sys.argv[1]).read(), open(sys.argv[2]).read()
m = re.search(r"^step +3/3 \| loss (\S+) \(ce (\S+) route (\S+) ent (\S+)\).*grad_norm (\S+)", log, re.M)
ours = dict(zip(["loss", "ce", "route", "entropy", "grad_norm"], map(float, m.groups())))
errors = []
for key, value in ours.items():
    r = re.search(rf"^  {key} +(\S+)", ref, re.M)
    theirs = float(r.group(1)) if r else float("nan")
    # the log prints 6 decimals for the loss, 4 for the rest
    tol = 2e-5 if key == "loss" else 1.5e-4
    if not abs(theirs - value) <= tol:
        errors.append(f"{key}: hspmn_dist {value}, reference {theirs}")
for e in errors:
    print("  mismatch:", e)
print(f"compared {len(ours)} values: {len(errors)} mismatches")
sys.exit(1 if errors else 0)
PYEOF

echo "PASS: test_torch_reference"
