#!/usr/bin/env bash
# Bad files give a clear error naming the file and a non-zero exit, never a crash or a hang:
# a checkpoint that is not HDF5, a truncated checkpoint, a missing one, and data files with a
# bad header or no content.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
tiny=(--preset tiny --batch 4 --micro_batch 2 --steps 2 --eval_batches 0 --log_every 1)

# expect_error NP PATTERN args...: non-zero exit and PATTERN (fixed string) in the output.
expect_error() {
    local np=$1 pattern=$2
    shift 2
    local rc=0
    timeout 120 "${MPIEXEC:-mpirun}" --oversubscribe -np "$np" "$bin" "$@" >"$work/out" 2>&1 || rc=$?
    if [[ $rc -eq 0 || $rc -eq 124 ]] || ! grep -qF -- "$pattern" "$work/out"; then
        echo "FAIL: np=$np '$*': exit $rc, output should contain '$pattern':"
        grep -v -- '-----' "$work/out" | head -12 | sed 's/^/    /'
        failures=$((failures + 1))
    else
        echo "ok: exit $rc: $(grep -m1 -F -- "$pattern" "$work/out" | cut -c1-200)"
    fi
}

# A good checkpoint to damage.
run_mpi 2 "$bin" "${tiny[@]}" --run_dir "$work/good" >/dev/null
[[ -f "$work/good/ckpt_2.h5" ]] || { echo "FAIL: no checkpoint written"; exit 1; }

echo "this is not an HDF5 file" >"$work/junk.h5"
expect_error 2 "$work/junk.h5" "${tiny[@]}" --steps 4 --run_dir "$work/r1" --resume "$work/junk.h5"

size=$(stat -c %s "$work/good/ckpt_2.h5")
head -c $((size / 2)) "$work/good/ckpt_2.h5" >"$work/truncated.h5"
expect_error 2 "$work/truncated.h5" "${tiny[@]}" --steps 4 --run_dir "$work/r2" \
    --resume "$work/truncated.h5"
expect_error 1 "$work/truncated.h5" eval --resume "$work/truncated.h5"

expect_error 1 "--resume $work/missing.h5: cannot read that file" "${tiny[@]}" \
    --run_dir "$work/r3" --resume "$work/missing.h5"

# A checkpoint of another model shape: the mismatch is named.
expect_error 1 "d_model" "${tiny[@]}" --d_model 64 --steps 4 --run_dir "$work/r4" \
    --resume "$work/good/ckpt_2.h5"

# llm.c .bin shard with a wrong magic number, an empty text file.
"$HSPMN_PYTHON" -c "
import numpy as np
h = np.zeros(256, np.int32); h[0] = 12345; h[1] = 1; h[2] = 1000
open('$work/bad.bin', 'wb').write(h.tobytes() + np.arange(1000, dtype=np.uint16).tobytes())"
expect_error 2 "$work/bad.bin" "${tiny[@]}" --run_dir "$work/r5" --data "bin:$work/bad.bin" \
    --vocab_size 1000
: >"$work/empty.txt"
expect_error 1 "$work/empty.txt" "${tiny[@]}" --run_dir "$work/r6" --data "text:$work/empty.txt"
expect_error 1 "$work/nofile.txt" "${tiny[@]}" --run_dir "$work/r7" --data "text:$work/nofile.txt"

if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "bad-file checks passed"
