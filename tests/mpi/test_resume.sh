#!/usr/bin/env bash
# Resuming: train 8 steps with checkpoints, stop, resume to 16 (constant learning rate, so
# the 8-step and the 16-step runs follow the same schedule). The resumed losses must equal
# the uninterrupted run's (same rank count: relative 1e-6), also after resharding: saved at
# -np 4 and resumed at -np 2 and at -np 1 (relative 1e-4, fp32 summation order only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--preset tiny --batch 8 --micro_batch 2 --lr 3e-3 --warmup 0 --min_lr_frac 1
        --log_every 4 --eval_every 0 --eval_batches 0 --ckpt_every 4 --keep 0 --seed 11
        --matmul fp32) # on a GPU machine: fp32, the precision the tolerances are set for

echo "== reference: -np 2, 16 steps without a stop"
run_mpi 2 "$bin" "${common[@]}" --steps 16 --run_dir "$work/ref" | grep -E '^step'

echo "== -np 2: 8 steps, then resume to 16"
run_mpi 2 "$bin" "${common[@]}" --steps 8 --run_dir "$work/same" | grep -E '^step'
run_mpi 2 "$bin" "${common[@]}" --steps 16 --run_dir "$work/same" | tee "$work/same.log" |
    grep -E '^step|^resumed'
grep -q "resumed from $work/same/ckpt_8.h5 at step 8" "$work/same.log"

echo "== -np 4: 8 steps; resume at -np 2 and at -np 1"
run_mpi 4 "$bin" "${common[@]}" --steps 8 --run_dir "$work/np4" | grep -E '^step'
for np in 2 1; do
    cp -r "$work/np4" "$work/np4to$np"
    run_mpi "$np" "$bin" "${common[@]}" --steps 16 --run_dir "$work/np4to$np" |
        tee "$work/np4to$np.log" | grep -E '^step|^resumed'
    grep -q "resumed from $work/np4to$np/ckpt_8.h5 at step 8" "$work/np4to$np.log"
done

"$HSPMN_PYTHON" - "$work" <<'PY'
import sys, h5py, numpy as np
work = sys.argv[1]
def series(run):
    with h5py.File(f"{work}/{run}/metrics.h5", "r") as f:
        return f["step"][:], f["loss"][:]
ref_steps, ref = series("ref")
assert list(ref_steps) == list(range(1, 17)), ref_steps
ok = True
for run, tol in (("same", 1e-6), ("np4to2", 1e-4), ("np4to1", 1e-4)):
    steps, loss = series(run)
    # The metrics file continues across the resume: steps 1..16 once each.
    if list(steps) != list(range(1, 17)):
        print(f"FAIL {run}: metrics steps {steps}"); ok = False; continue
    rel = np.abs(loss - ref) / np.abs(ref)
    print(f"{run}: steps 9-16 max relative difference {rel[8:].max():.2e} (tolerance {tol:g});"
          f" loss at 16: {loss[-1]:.6f} vs {ref[-1]:.6f}")
    if rel.max() > tol:
        print(f"FAIL {run}: {loss} vs {ref}"); ok = False
# The final checkpoints agree too.
with h5py.File(f"{work}/ref/ckpt_16.h5") as a, h5py.File(f"{work}/same/ckpt_16.h5") as b:
    for name in ("model/embed/weight", "model/layers/01/memory/values"):
        d = np.max(np.abs(a[name][()] - b[name][()]))
        print(f"ckpt_16 {name}: max |difference| {d:.2e}")
        if d > 1e-6: ok = False
    if a["state/data_cursor"][()] != b["state/data_cursor"][()] or a["state/data_cursor"][()] != 16 * 8:
        print("FAIL: data cursor", a["state/data_cursor"][()], b["state/data_cursor"][()]); ok = False
sys.exit(0 if ok else 1)
PY
echo "resume: ok"
