#!/usr/bin/env bash
# Checkpoints end to end (prog_ckpt): save at -np 4 and load at -np 1, 2 and 4 with exact
# comparison (resharding), save at -np 1 and load at -np 4, keep-last-K pruning, a config
# mismatch named in the refusal, a truncated file refused clearly (no hang), *.tmp ignored by
# find_latest.
set -u
source "${HSPMN_SRC:?}/tests/mpi/run_mpi.sh"
prog="${HSPMN_BUILD:?}/tests/prog_ckpt"
[ -x "$prog" ] || { echo "test_ckpt: $prog is not built"; exit 1; }
dir=$(mktemp -d /tmp/hspmn_test_ckpt_XXXXXX)
trap 'rm -rf "$dir"' EXIT

fail() {
    echo "test_ckpt: FAILED: $*"
    exit 1
}

# 1. Save at 4 ranks (three checkpoints, keep the last 2), load at 1, 2, 4 ranks.
for step in 10 20 30; do
    run_mpi 4 "$prog" save "$dir/run" "$step" 42 2 || fail "save step $step at -np 4"
done
[ ! -e "$dir/run/ckpt_10.h5" ] || fail "keep_last 2 did not delete ckpt_10.h5"
[ -e "$dir/run/ckpt_20.h5" ] && [ -e "$dir/run/ckpt_30.h5" ] || fail "ckpt_20/30 missing"
ls "$dir/run" | grep -q '\.tmp$' && fail "a .tmp file was left behind"
for np in 1 2 4; do
    run_mpi "$np" "$prog" load "$dir/run/ckpt_30.h5" 30 42 || fail "load at -np $np"
done

# 2. The other way round: save at 1 rank, load at 4.
run_mpi 1 "$prog" save "$dir/one" 7 5 0 || fail "save at -np 1"
run_mpi 4 "$prog" load "$dir/one/ckpt_7.h5" 7 5 || fail "load at -np 4 of a 1-rank save"

# The comparison itself must be able to fail: another seed's values do not match.
if run_mpi 2 "$prog" load "$dir/run/ckpt_30.h5" 30 43 >/dev/null 2>&1; then
    fail "loading with the wrong expected values passed"
fi

# 3. A config mismatch is refused, naming the entry, both values and the file.
out=$(run_mpi 2 "$prog" load "$dir/run/ckpt_30.h5" 30 42 d_model=64 2>&1)
rc=$?
[ "$rc" -ne 0 ] || fail "a d_model mismatch was accepted"
grep -q "config mismatch in d_model" <<<"$out" || fail "mismatch message lacks the entry: $out"
grep -q "has 32, the run has 64" <<<"$out" || fail "mismatch message lacks the values: $out"
grep -q "ckpt_30.h5" <<<"$out" || fail "mismatch message lacks the file: $out"

# 4. A truncated copy is refused clearly (and every rank returns: no hang).
cp "$dir/run/ckpt_30.h5" "$dir/cut.h5"
size=$(stat -c %s "$dir/cut.h5")
truncate -s $((size / 2)) "$dir/cut.h5"
out=$(timeout 60 bash -c "source '$HSPMN_SRC/tests/mpi/run_mpi.sh'; run_mpi 2 '$prog' load '$dir/cut.h5' 30 42" 2>&1)
rc=$?
[ "$rc" -ne 124 ] || fail "loading a truncated checkpoint hung"
[ "$rc" -ne 0 ] || fail "a truncated checkpoint was accepted"
grep -q "cut.h5: cannot open as HDF5 (truncated or corrupt" <<<"$out" ||
    fail "truncated-file message unclear: $out"
out=$(run_mpi 1 "$prog" load "$dir/nope.h5" 30 42 2>&1) && fail "a missing checkpoint was accepted"
grep -q "nope.h5: no such file" <<<"$out" || fail "missing-file message unclear: $out"

# 5. find_latest: the newest complete checkpoint; *.tmp and other names are ignored.
cp "$dir/run/ckpt_20.h5" "$dir/run/ckpt_99.h5.tmp"
touch "$dir/run/ckpt_abc.h5" "$dir/run/notes.txt"
out=$("$prog" latest "$dir/run")
[ "$out" = "30 $dir/run/ckpt_30.h5" ] || fail "find_latest gave '$out'"
out=$("$prog" latest "$dir/none")
[ "$out" = "-1 " ] || fail "find_latest of a missing dir gave '$out'"

echo "test_ckpt: all checks passed"
