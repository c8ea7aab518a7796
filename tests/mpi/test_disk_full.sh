#!/usr/bin/env bash
# A full disk at checkpoint time: training into a 2 MiB tmpfs with a checkpoint every 2
# steps stops with a clear message naming the sizes before it writes anything, every rank
# exits non-zero, the checkpoints already there stay complete, and once there is room the
# run resumes from the newest of them. Needs root (mount); skipped otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
small="$work/small"
mkdir -p "$small"
if [[ $(id -u) -ne 0 ]] || ! mount -t tmpfs -o size=2M tmpfs "$small" 2>/dev/null; then
    rm -rf "$work"
    echo "SKIP: cannot mount a small tmpfs here (needs root)"
    exit 77
fi
trap 'umount "$small" 2>/dev/null; rm -rf "$work"' EXIT
common=(--preset tiny --micro_batch 2 --batch 8 --eval_every 0 --eval_batches 0 --log_every 100
        --ckpt_every 2 --keep 0)

rc=0
run_mpi 2 "$bin" "${common[@]}" --steps 60 --run_dir "$small/run" >"$work/full.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || { echo "FAIL: a run into a full disk exited 0"; exit 1; }
grep -q "needs about .* MiB but $small/run has .* MiB free" "$work/full.log" ||
    { cat "$work/full.log"; echo "FAIL: no clear full-disk message"; exit 1; }
grep -m1 "needs about" "$work/full.log"
ls "$small/run"
newest=$(ls "$small/run" | sed -n 's/^ckpt_\([0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
[[ -n "$newest" ]] || { echo "FAIL: no checkpoint survived"; exit 1; }

# Every surviving checkpoint is complete; then, with room, the run resumes from the newest.
cp -r "$small/run" "$work/roomy"
"$HSPMN_PYTHON" - "$work/roomy" <<'PY'
import glob, sys, h5py
for path in sorted(glob.glob(sys.argv[1] + "/ckpt_*.h5")):
    with h5py.File(path, "r") as f:
        assert f["/model/embed/weight"].shape[0] > 0 and "state" in f, path
print("all surviving checkpoints open and hold their tensors")
PY
run_mpi 2 "$bin" "${common[@]}" --steps $((newest + 4)) --run_dir "$work/roomy" >"$work/resume.log" 2>&1 ||
    { cat "$work/resume.log"; echo "FAIL: resume after freeing space"; exit 1; }
grep -q "resumed from $work/roomy/ckpt_$newest.h5 at step $newest" "$work/resume.log" ||
    { cat "$work/resume.log"; echo "FAIL: did not resume from ckpt_$newest"; exit 1; }
echo "test_disk_full: passed (stopped cleanly, resumed from ckpt_$newest)"
