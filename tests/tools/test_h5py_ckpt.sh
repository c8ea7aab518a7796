#!/usr/bin/env bash
# h5py reads what we write: a checkpoint saved at 4 ranks (MODEL.md paths, global shapes,
# /config, /state), and metrics.h5 followed by an SWMR reader while the writer appends.
set -u
py=/usr/bin/python3
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

# 40 rows, one every 75 ms: about 3 s during which the reader must see the file grow.
"$prog" metrics "$dir/run" 40 75 -1 >/dev/null &
writer=$!
"$py" "$check" swmr "$dir/run/metrics.h5" "$writer"
status=$?
wait "$writer" || { echo "test_h5py_ckpt: metrics writer failed"; exit 1; }
[ "$status" -eq 0 ] || { echo "test_h5py_ckpt: SWMR check FAILED"; exit 1; }
echo "test_h5py_ckpt: all checks passed"
