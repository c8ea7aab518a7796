#!/usr/bin/env bash
# Checkpoints cross between backends: a checkpoint written by a CUDA run resumes on the CPU
# and one written by a CPU run resumes on the GPU, with the same losses as a run that stays
# on the CPU (relative 1e-3: the backends differ in fp32 summation order, and the CUDA
# backward scatters use atomics). The first 10 steps on the two backends agree too, and
# `eval` of one checkpoint gives the same held-out loss on both. Skipped without a GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! run_mpi 1 "$bin" --device cuda --preset tiny --steps 0 --resume none \
    --run_dir "$work/probe" >"$work/probe.log" 2>&1; then
    echo "SKIP: no CUDA device (or a CPU-only build): $(grep -m1 error "$work/probe.log")"
    exit 77
fi

common=(--preset tiny --batch 8 --micro_batch 4 --lr 3e-3 --warmup 0 --min_lr_frac 1
        --log_every 5 --eval_every 0 --eval_batches 2 --ckpt_every 10 --keep 0 --seed 5
        --matmul fp32) # the cuda default is bf16; the comparison with the cpu wants fp32

echo "== 10 steps on each backend"
run_mpi 1 "$bin" "${common[@]}" --device cuda --steps 10 --run_dir "$work/gpu" | grep -E '^step'
run_mpi 1 "$bin" "${common[@]}" --device cpu --steps 10 --run_dir "$work/cpu" | grep -E '^step'

echo "== resume to 16: cpu -> cpu (reference), gpu -> cpu, cpu -> gpu"
cp -r "$work/cpu" "$work/cpu2cpu"
cp -r "$work/gpu" "$work/gpu2cpu"
cp -r "$work/cpu" "$work/cpu2gpu"
run_mpi 1 "$bin" "${common[@]}" --device cpu --steps 16 --run_dir "$work/cpu2cpu" | grep -E '^resumed'
run_mpi 1 "$bin" "${common[@]}" --device cpu --steps 16 --run_dir "$work/gpu2cpu" | grep -E '^resumed'
run_mpi 1 "$bin" "${common[@]}" --device cuda --steps 16 --run_dir "$work/cpu2gpu" | grep -E '^resumed'

echo "== eval of the GPU checkpoint on both backends"
for device in cpu cuda; do
    run_mpi 1 "$bin" eval "${common[@]}" --device "$device" --resume "$work/gpu/ckpt_10.h5" \
        --run_dir "$work/gpu" | grep -E '^eval' | tee "$work/eval_$device.log"
done

"$HSPMN_PYTHON" - "$work" <<'PY'
import re, sys, h5py, numpy as np
work = sys.argv[1]
def losses(run):
    with h5py.File(f"{work}/{run}/metrics.h5", "r") as f:
        return f["step"][:], f["loss"][:]
ok = True
def close(name, a, b, tol):
    global ok
    rel = float(np.max(np.abs(a - b) / np.abs(b)))
    print(f"{name}: max relative difference {rel:.2e} (tolerance {tol:g})")
    if not rel <= tol:
        print(f"FAIL {name}: {a} vs {b}"); ok = False
_, gpu = losses("gpu"); _, cpu = losses("cpu")
close("steps 1-10, cuda vs cpu", gpu, cpu, 1e-3)
steps, ref = losses("cpu2cpu")
assert list(steps) == list(range(1, 17)), steps
for run in ("gpu2cpu", "cpu2gpu"):
    s, l = losses(run)
    assert list(s) == list(range(1, 17)), (run, s)
    close(f"steps 11-16, {run} vs cpu2cpu", l[10:], ref[10:], 1e-3)
def eval_loss(device):
    text = open(f"{work}/eval_{device}.log").read()
    return float(re.search(r"loss ([0-9.]+)", text).group(1))
close("eval loss of the GPU checkpoint, cuda vs cpu", np.array([eval_loss("cuda")]),
      np.array([eval_loss("cpu")]), 1e-4)
sys.exit(0 if ok else 1)
PY
