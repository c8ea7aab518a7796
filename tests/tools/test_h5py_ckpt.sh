#!/usr/bin/env bash
# h5py reads what we write: a checkpoint saved at 4 ranks (MODEL.md paths, global shapes,
# /config, /state), refusals of h5py-edited copies (missing dataset, wrong shape), and
# metrics.h5 followed by an SWMR reader while the writer appends.
set -u
source "${HSPMN_SRC:?}/tests/python_env.sh"
py=${HSPMN_PYTHON:-/usr/bin/python3}
if ! "$py" -c "import h5py" 2>/dev/null; then
    echo "test_h5py_ckpt: h5py is missing (skipped)"
    exit 77
fi
source "${HSPMN_SRC:?}/tests/mpi/run_mpi.sh"
prog="${HSPMN_BUILD:?}/tests/prog_ckpt"
check="$HSPMN_SRC/tests/tools/h5py_check.py"
[ -x "$prog" ] || { echo "test_h5py_ckpt: $prog is not built"; exit 1; }
dir=$(mktemp -d /tmp/hspmn_test_h5py_XXXXXX)
trap 'rm -rf "$dir"' EXIT

run_mpi 4 "$prog" save "$dir/run" 30 42 0 >/dev/null || { echo "test_h5py_ckpt: save failed"; exit 1; }
"$py" "$check" ckpt "$dir/run/ckpt_30.h5" || { echo "test_h5py_ckpt: checkpoint check FAILED"; exit 1; }

# A checkpoint edited by h5py: a missing dataset and a wrong shape are named in the refusal.
cp "$dir/run/ckpt_30.h5" "$dir/missing.h5"
cp "$dir/run/ckpt_30.h5" "$dir/shape.h5"
"$py" - "$dir" <<'PY' || { echo "test_h5py_ckpt: editing copies failed"; exit 1; }
import sys, h5py, numpy as np
d = sys.argv[1]
with h5py.File(d + "/missing.h5", "r+") as f:
    del f["/optim/v/model/layers/01/attn/wo"]
with h5py.File(d + "/shape.h5", "r+") as f:
    del f["/model/layers/00/memory/keys"]
    f["/model/layers/00/memory/keys"] = np.zeros((32, 8), np.float32)
PY
out=$(run_mpi 2 "$prog" load "$dir/missing.h5" 30 42 2>&1) && { echo "test_h5py_ckpt: missing dataset accepted"; exit 1; }
grep -q "missing.h5: missing dataset /optim/v/model/layers/01/attn/wo" <<<"$out" ||
    { echo "test_h5py_ckpt: missing-dataset message unclear: $out"; exit 1; }
out=$(run_mpi 2 "$prog" load "$dir/shape.h5" 30 42 2>&1) && { echo "test_h5py_ckpt: wrong shape accepted"; exit 1; }
grep -q "dataset /model/layers/00/memory/keys has shape \[32, 8\].*expected \[64, 8\]" <<<"$out" ||
    { echo "test_h5py_ckpt: wrong-shape message unclear: $out"; exit 1; }

# 40 rows, one every 75 ms: about 3 s during which the reader must see the file grow.
"$prog" metrics "$dir/run" 40 75 -1 >/dev/null &
writer=$!
"$py" "$check" swmr "$dir/run/metrics.h5" "$writer"
status=$?
wait "$writer" || { echo "test_h5py_ckpt: metrics writer failed"; exit 1; }
[ "$status" -eq 0 ] || { echo "test_h5py_ckpt: SWMR check FAILED"; exit 1; }
echo "test_h5py_ckpt: all checks passed"
