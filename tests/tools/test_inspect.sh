#!/usr/bin/env bash
# hspmn_inspect.py on the checkpoints of a real short run of hspmn_dist (2 ranks, CPU):
# the printed paths, shapes, L2 norms and slot counts match what h5py reads from the file
# and what MODEL.md says the shapes are; --diff passes on a checkpoint against itself,
# fails against the run's other checkpoint, and honours --tol on a one-element change.
set -euo pipefail

src=${HSPMN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${HSPMN_BUILD:-$src/build}
source "$src/tests/python_env.sh"
python=${HSPMN_PYTHON:-/usr/bin/python3}
inspect=$src/launch/tools/hspmn_inspect.py

if ! $python -c 'import h5py, numpy' 2>/dev/null; then
    echo "SKIP: $python cannot import h5py and numpy (apt-get install python3-h5py)"
    exit 77
fi
if [[ ! -x $build/hspmn_dist ]]; then
    echo "FAIL: $build/hspmn_dist is not built"
    exit 1
fi

source "$src/tests/mpi/run_mpi.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

echo "== a short run: 10 steps, checkpoints at 5 and 10"
run_mpi 2 "$build/hspmn_dist" train --device cpu --preset tiny --steps 10 --warmup 2 \
    --ckpt_every 5 --keep 0 --eval_every 0 --log_every 5 --run_dir "$work/run" >"$work/train.log" 2>&1 ||
    {
        cat "$work/train.log"
        fail "hspmn_dist training run failed"
    }
ckpt5=$work/run/ckpt_5.h5
ckpt10=$work/run/ckpt_10.h5
[[ -f $ckpt5 && -f $ckpt10 ]] || fail "expected ckpt_5.h5 and ckpt_10.h5 in $work/run: $(ls "$work/run")"

echo "== inspect ckpt_10.h5"
$python "$inspect" "$ckpt10" >"$work/inspect.txt" || fail "hspmn_inspect.py exited with $?"
head -8 "$work/inspect.txt"

# Check the printout against the file (h5py) and MODEL.md's shape formulas.
$python - "$ckpt10" "$work/inspect.txt" <<'EOF'
import re, sys
import h5py, numpy as np

ckpt, printout = sys.argv[1], open(sys.argv[2]).read()
errors = []

def expect(cond, what):
    if not cond:
        errors.append(what)

with h5py.File(ckpt, "r") as f:
    cfg = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f["config"].attrs.items()}
    V, H, L = int(cfg["vocab_size"]), int(cfg["d_model"]), int(cfg["n_layers"])
    nh, nkv, Kc, m = int(cfg["n_heads"]), int(cfg["n_kv_heads"]), int(cfg["conv_kernel"]), int(cfg["mlp_mult"])
    S, R = int(cfg["n_slots"]), int(cfg["ptr_dim"])
    hd = H // nh
    # MODEL.md parameter table.
    shapes = {"/model/embed/weight": (V, H), "/model/norm_f/weight": (H,), "/model/lm_head/weight": (V, H)}
    for l in range(L):
        p = f"/model/layers/{l:02d}/"
        shapes.update({
            p + "norm_a/weight": (H,), p + "conv/weight": (H, Kc), p + "conv/bias": (H,),
            p + "mlp/w1": (m * H, H), p + "mlp/b1": (m * H,), p + "mlp/w2": (H, m * H), p + "mlp/b2": (H,),
            p + "router/weight": (H,), p + "router/bias": (),
            p + "attn/wq": (H, H), p + "attn/wk": (nkv * hd, H), p + "attn/wv": (nkv * hd, H), p + "attn/wo": (H, H),
            p + "norm_m/weight": (H,), p + "memory/compressor/weight": (R, H), p + "memory/compressor/bias": (R,),
            p + "memory/keys": (S, R), p + "memory/values": (S, H)})

    expect(re.search(r"^format_version\s+1$", printout, re.M), "format_version 1 not printed")
    expect(re.search(r"^step\s+10$", printout, re.M), "step 10 not printed")
    for key in ("d_model", "n_slots", "top_k", "preset"):
        expect(re.search(rf"^\s+{key}\s+{re.escape(cfg[key])}$", printout, re.M), f"config {key} not printed")

    rows = {}
    for line in printout.splitlines():
        match = re.match(r"^(/model/\S+)\s+\[([0-9, ]*)\]\s+(\S+)\s+(\S+)\s*(.*)$", line)
        if match:
            rows[match.group(1)] = match
    expect(set(rows) == set(shapes), f"tensor paths differ from MODEL.md: "
           f"missing {sorted(set(shapes) - set(rows))}, extra {sorted(set(rows) - set(shapes))}")
    for path, shape in shapes.items():
        if path not in rows:
            continue
        match = rows[path]
        printed = tuple(int(n) for n in match.group(2).split(",") if n.strip())
        expect(printed == shape, f"{path}: printed shape {printed}, MODEL.md {shape}")
        expect(f[path].shape == shape, f"{path}: file shape {f[path].shape}, MODEL.md {shape}")
        expect(match.group(3) == "float32", f"{path}: dtype {match.group(3)}")
        norm = float(np.linalg.norm(f[path][()].astype(np.float64).ravel()))
        expect(abs(float(match.group(4)) - norm) <= 1e-3 * norm + 1e-12,
               f"{path}: printed norm {match.group(4)}, h5py {norm}")
        if path.endswith("memory/keys") or path.endswith("memory/values"):
            v = f["/optim/v" + path][()]
            touched = int(np.count_nonzero(np.any(v != 0, axis=1)))
            expect(f"slots with gradient {touched}/{S} " in match.group(5),
                   f"{path}: slot note '{match.group(5)}', expected {touched}/{S} touched")
            expect(0 < touched <= S, f"{path}: {touched} slots touched after 10 steps")

for e in errors:
    print("  mismatch:", e)
print(f"checked {len(shapes)} tensors: {len(errors)} mismatches")
sys.exit(1 if errors else 0)
EOF

echo "== --diff of a checkpoint with itself: equal"
$python "$inspect" --diff "$ckpt10" "$ckpt10" >"$work/diff_self.txt" ||
    fail "diff of ckpt_10 with itself exited $? ($(tail -1 "$work/diff_self.txt"))"
tail -1 "$work/diff_self.txt"
grep -q " 0 differ beyond tol 0 " "$work/diff_self.txt" || fail "self-diff summary wrong"

echo "== --diff of step 5 and step 10: different"
status=0
$python "$inspect" --diff "$ckpt5" "$ckpt10" >"$work/diff_5_10.txt" || status=$?
tail -1 "$work/diff_5_10.txt"
((status == 1)) || fail "diff of ckpt_5 and ckpt_10 exited $status, expected 1"
grep -q "^/model/embed/weight .*DIFFERS" "$work/diff_5_10.txt" || fail "embed not reported as differing"
grep -q "^/state/step .*DIFFERS" "$work/diff_5_10.txt" || fail "/state/step not reported as differing"

echo "== --tol: one element of one tensor moved by 1e-3"
cp "$ckpt10" "$work/changed.h5"
$python - "$work/changed.h5" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["/model/layers/01/memory/values"][3, 5] += 1e-3
EOF
$python "$inspect" --diff "$ckpt10" "$work/changed.h5" --tol 1e-2 >"$work/diff_tol_pass.txt" ||
    fail "a 1e-3 change failed --tol 1e-2"
status=0
$python "$inspect" --diff "$ckpt10" "$work/changed.h5" --tol 1e-4 >"$work/diff_tol_fail.txt" || status=$?
((status == 1)) || fail "a 1e-3 change passed --tol 1e-4 (exit $status)"
differing=$(grep -c "DIFFERS" "$work/diff_tol_fail.txt" || true)
((differing == 1)) || fail "expected exactly 1 differing tensor, got $differing"
grep -q "^/model/layers/01/memory/values .*DIFFERS" "$work/diff_tol_fail.txt" ||
    fail "the changed tensor is not the one reported"
tail -1 "$work/diff_tol_fail.txt"

echo "== unreadable input: exit 2 with a message naming the file"
status=0
$python "$inspect" "$work/missing.h5" 2>"$work/err.txt" || status=$?
((status == 2)) && grep -q "missing.h5" "$work/err.txt" ||
    fail "missing file: exit $status, message '$(cat "$work/err.txt")'"

echo "PASS: test_inspect"
