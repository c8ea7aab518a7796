#!/usr/bin/env bash
# A rank SIGKILLed in the middle of writing a checkpoint (the hidden test flags
# --debug_die_rank/--debug_die_step make rank 1 kill itself as soon as the checkpoint's
# temporary file exists) must leave the previous checkpoint complete and readable, and
# --resume auto must continue from it with the losses of an uninterrupted run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--preset tiny --batch 8 --micro_batch 2 --steps 12 --lr 3e-3 --warmup 2
        --log_every 4 --eval_every 0 --eval_batches 0 --ckpt_every 4 --keep 2 --seed 5
        --matmul fp32) # on a GPU machine: fp32, the precision the tolerances are set for

echo "== reference run"
run_mpi 2 "$bin" "${common[@]}" --run_dir "$work/ref" | grep -E '^step'

echo "== run whose rank 1 dies while writing the step-8 checkpoint"
rc=0
run_mpi 2 "$bin" "${common[@]}" --run_dir "$work/run" --debug_die_rank 1 --debug_die_step 8 \
    >"$work/killed.log" 2>&1 || rc=$?
grep -E '^step|debug:' "$work/killed.log" || true
echo "exit code $rc; run dir: $(ls "$work/run" | tr '\n' ' ')"
[[ $rc -ne 0 ]] || { echo "FAIL: the killed run exited 0"; exit 1; }
grep -q "debug: rank killing itself during the write of" "$work/killed.log" ||
    { echo "FAIL: the rank did not die during the write"; exit 1; }
[[ -f "$work/run/ckpt_4.h5" ]] || { echo "FAIL: ckpt_4.h5 is gone"; exit 1; }
[[ ! -f "$work/run/ckpt_8.h5" ]] || { echo "FAIL: a torn ckpt_8.h5 was published"; exit 1; }

# The surviving checkpoint is complete: every tensor reads, the state says step 4.
"$HSPMN_PYTHON" - "$work/run/ckpt_4.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    n = 0
    def check(name, obj):
        global n
        if isinstance(obj, h5py.Dataset):
            assert np.all(np.isfinite(obj[()])), name
            n += 1
    f.visititems(check)
    assert int(f["state/step"][()]) == 4, f["state/step"][()]
    print(f"ckpt_4.h5 readable: {n} datasets, state/step 4")
PY

echo "== --resume auto"
run_mpi 2 "$bin" "${common[@]}" --run_dir "$work/run" | tee "$work/resumed.log" |
    grep -E '^step|^resumed'
grep -q "resumed from $work/run/ckpt_4.h5 at step 4" "$work/resumed.log"
"$HSPMN_PYTHON" - "$work" <<'PY'
import sys, h5py, numpy as np
work = sys.argv[1]
def loss(run):
    with h5py.File(f"{work}/{run}/metrics.h5", "r") as f:
        return f["step"][:], f["loss"][:]
s_ref, ref = loss("ref")
s_run, run = loss("run")
assert list(s_run) == list(range(1, 13)), s_run
rel = np.max(np.abs(run - ref) / np.abs(ref))
print(f"losses after the crash and resume vs uninterrupted: max relative difference {rel:.2e}")
sys.exit(0 if rel <= 1e-6 else 1)
PY
echo "kill during checkpoint: ok"
