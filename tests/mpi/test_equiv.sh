#!/usr/bin/env bash
# Data parallelism changes nothing but fp32 summation order: the same global batch (8
# sequences) at -np 1 (4 micro-batches of 2), -np 2 (2 of 2 per rank) and -np 4 (1 of 2 per
# rank) gives the same loss at every one of 20 steps and the same final parameters; -np 2
# with --refetch_slot_rows 1 --recompute_elementwise 1 gives bitwise the losses and
# parameters of -np 2 without them.
# Tolerances: loss relative 1e-4; parameters |a - b| <= 1e-4 + 1e-3 |b| (AdamW divides by
# sqrt(v), so rounding-level gradient differences move parameters by up to ~lr * 1e-3).
# These runs use the cpu backend, whatever the machine: it sums in a fixed order, so the
# rank counts differ only by the order of the gradient sums.
# Where a GPU is present, -np 1 and -np 2 --comm mpi (two ranks sharing the one GPU) run on
# it too (in fp32 and in bf16), and their losses must agree within 1e-4 (bf16: 3e-3)
# relative. Parameters are not compared there: the GPU's atomic adds and fp32 top-K scores let a rounding-level difference flip a
# near-tie slot selection, which moves that slot's row by a whole update (seen on the H100:
# losses within 4e-5, one values row 23x the element tolerance).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base=(--preset tiny --batch 8 --micro_batch 2 --steps 20 --lr 3e-3 --warmup 5
      --log_every 5 --eval_every 0 --eval_batches 0 --ckpt_every 0 --seed 7)
common=("${base[@]}" --device cpu)
for np in 1 2 4; do
    echo "== -np $np"
    run_mpi "$np" "$bin" "${common[@]}" --run_dir "$work/np$np" | grep -E '^step|batch '
done
# The backward fetching the slot rows again (a second exchange of the rows between the two
# ranks) and recomputing the norms, conv and GELU instead of keeping them: the same
# arithmetic, so the same bits.
echo "== -np 2 --refetch_slot_rows 1 --recompute_elementwise 1"
run_mpi 2 "$bin" "${common[@]}" --refetch_slot_rows 1 --recompute_elementwise 1 \
    --run_dir "$work/np2refetch" | grep -E '^step|batch '

"$HSPMN_PYTHON" - "$work" <<'PY'
import sys, h5py, numpy as np
work = sys.argv[1]
def losses(np_):
    with h5py.File(f"{work}/np{np_}/metrics.h5", "r") as f:
        return f["step"][:], f["loss"][:]
def params(np_):
    out = {}
    with h5py.File(f"{work}/np{np_}/ckpt_20.h5", "r") as f:
        f["model"].visititems(lambda name, obj: out.__setitem__(name, obj[()])
                              if isinstance(obj, h5py.Dataset) else None)
    return out
steps1, loss1 = losses(1)
p1 = params(1)
ok = True
_, loss2 = losses(2)
_, loss2r = losses("2refetch")
p2, p2r = params(2), params("2refetch")
same = np.array_equal(loss2, loss2r) and sorted(p2) == sorted(p2r) and all(
    np.array_equal(p2[k], p2r[k]) for k in p2)
print(f"np2 with refetched slot rows and recomputed activations vs kept: "
      f"{'bitwise equal' if same else 'DIFFERENT'}")
if not same:
    print("  FAIL: --refetch_slot_rows / --recompute_elementwise changed the losses or the "
          "parameters"); ok = False
assert list(steps1) == list(range(1, 21)), f"np1 logged steps {steps1}"
assert np.all(np.isfinite(loss1)) and loss1[-1] < loss1[0], f"np1 did not train: {loss1}"
for n in (2, 4):
    steps, loss = losses(n)
    rel = np.abs(loss - loss1) / np.abs(loss1)
    print(f"np{n} vs np1: {len(loss)} losses, max relative difference {rel.max():.2e}")
    if list(steps) != list(steps1) or rel.max() > 1e-4:
        print("  FAIL: losses differ beyond 1e-4:", loss1, loss); ok = False
    pn = params(n)
    if sorted(pn) != sorted(p1):
        print("  FAIL: different tensors in the checkpoints"); ok = False; continue
    worst, where = 0.0, ""
    for name, a in p1.items():
        b = pn[name]
        if a.shape != b.shape:
            print(f"  FAIL: {name} shape {a.shape} vs {b.shape}"); ok = False; continue
        err = float(np.max(np.abs(b - a) / (1e-4 + 1e-3 * np.abs(a)))) if a.size else 0.0
        if err > worst: worst, where = err, name
    print(f"  final parameters: {len(p1)} tensors, worst error {worst:.3f} of tolerance ({where})")
    if worst > 1.0:
        print("  FAIL: parameters differ beyond tolerance"); ok = False
sys.exit(0 if ok else 1)
PY
echo "equivalence at -np 1, 2, 4 (cpu): ok"

if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
    echo "no GPU: the one-GPU check (-np 2 --comm mpi sharing it) is skipped"
    exit 0
fi
# Twice: --matmul fp32 (held to 1e-4, as the cpu runs) and the cuda default, bf16 (3e-3):
# there the slot tables are searched shard by shard in bf16 at -np 2, so a near tie can pick
# another slot than at -np 1 and the curves drift apart further (5.4e-4 after 20 steps on the
# H100; a broken exchange or all-reduce moves the loss by far more).
for mm in fp32 bf16; do
    for np in 1 2; do
        echo "== cuda -np $np --comm mpi --matmul $mm"
        run_mpi "$np" "$bin" "${base[@]}" --device cuda --comm mpi --matmul "$mm" \
            --run_dir "$work/cuda_${mm}_$np" | grep -E '^step|batch '
    done
done
"$HSPMN_PYTHON" - "$work" <<'PY'
import sys, h5py, numpy as np
work = sys.argv[1]
def losses(name):
    with h5py.File(f"{work}/{name}/metrics.h5", "r") as f:
        return f["step"][:], f["loss"][:]
ok = True
for mm, tol in (("fp32", 1e-4), ("bf16", 3e-3)):
    s1, l1 = losses(f"cuda_{mm}_1")
    s2, l2 = losses(f"cuda_{mm}_2")
    rel = np.abs(l2 - l1) / np.abs(l1)
    print(f"cuda --matmul {mm}: np2 (shared GPU) vs np1: {len(l1)} losses, "
          f"max relative difference {rel.max():.2e} (tolerance {tol:g})")
    ok = ok and list(s1) == list(s2) and len(l1) == 20 and rel.max() <= tol
sys.exit(0 if ok else 1)
PY
echo "equivalence on the GPU, -np 1 and 2 ranks sharing it: ok"
