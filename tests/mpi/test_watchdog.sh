#!/usr/bin/env bash
# A hung rank (the hidden test flags --debug_hang_rank/--debug_hang_step make rank 1 sleep
# for ever at the start of step 7, as a hung GPU or peer would; rank 0 then waits in the
# gradient all-reduce for ever) must not hang the job: with --step_timeout 3 the watchdog
# aborts it, every rank exits, the exit status is non-zero, the message names the step and
# the flag, the checkpoint of step 4 stays complete and the run resumes from it to the end.
# Malformed --step_timeout values are refused.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--preset tiny --batch 4 --micro_batch 2 --steps 10 --warmup 2 --log_every 2
        --eval_every 0 --eval_batches 0 --ckpt_every 4 --keep 2 --seed 3)

echo "== run whose rank 1 hangs at the start of step 7 (--step_timeout 3)"
start=$(date +%s)
rc=0
# timeout(1) runs a program, not a shell function: a child bash sources run_mpi again.
timeout 120 bash -c 'source "$0"; run_mpi 2 "$@"' "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh" \
    "$bin" "${common[@]}" --run_dir "$work/run" --step_timeout 3 --debug_hang_rank 1 \
    --debug_hang_step 7 >"$work/hung.log" 2>&1 || rc=$?
elapsed=$(($(date +%s) - start))
grep -E '^step|debug:|error:' "$work/hung.log" || true
echo "exit code $rc after $elapsed s"
[[ $rc -ne 0 ]] || { echo "FAIL: the hung run exited 0"; exit 1; }
[[ $rc -ne 124 ]] || { echo "FAIL: the job was still hanging after 120 s"; exit 1; }
grep -q "debug: rank 1 hangs at the start of step 7" "$work/hung.log" ||
    { echo "FAIL: the debug hang did not happen"; exit 1; }
grep -qE "error: rank [01]: no progress for [0-9]+ s since the start of step 7 \(--step_timeout 3\)" \
    "$work/hung.log" || { echo "FAIL: no watchdog message naming step 7 and the flag"; exit 1; }
[[ -f "$work/run/ckpt_4.h5" ]] || { echo "FAIL: ckpt_4.h5 is gone"; exit 1; }

echo "== --resume auto from the step-4 checkpoint"
run_mpi 2 "$bin" "${common[@]}" --run_dir "$work/run" | tee "$work/resumed.log" |
    grep -E '^step|^resumed'
grep -q "resumed from $work/run/ckpt_4.h5 at step 4" "$work/resumed.log" ||
    { echo "FAIL: did not resume from ckpt_4.h5"; exit 1; }
grep -q "^step    10/10" "$work/resumed.log" || { echo "FAIL: the resumed run did not finish"; exit 1; }

echo "== malformed --step_timeout"
for bad in -1 abc 1e99; do
    rc=0
    out=$("$bin" --preset tiny --steps 1 --run_dir "$work/bad" --step_timeout "$bad" 2>&1) || rc=$?
    [[ $rc -eq 2 ]] || { echo "FAIL: --step_timeout $bad exited $rc"; exit 1; }
    grep -q "step_timeout" <<<"$out" || { echo "FAIL: --step_timeout $bad not named: $out"; exit 1; }
done
echo "watchdog: a hung rank ends the job in $elapsed s, the run resumes: ok"
