#!/usr/bin/env bash
# Run directories: a long path (Open MPI's lockedfile component used to overflow on paths of
# 231+ characters at the first checkpoint) trains, checkpoints and resumes; --resume none
# into a directory holding a run is refused and leaves it intact; resuming from an older
# checkpoint keeps the checkpoint it writes (pruning never deletes it for newer ones); eval
# and resume without --data read the data the checkpoint was trained on.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--preset tiny --micro_batch 2 --batch 8 --eval_every 0 --eval_batches 0 --log_every 5)
fail() { echo "FAIL: $*"; exit 1; }

echo "== a 250-character run dir"
long="$work/$(printf 'r%.0s' $(seq 1 $((250 - ${#work} - 1))))"
[[ ${#long} -eq 250 ]] || fail "long path is ${#long} characters"
run_mpi 2 "$bin" "${common[@]}" --steps 4 --ckpt_every 2 --run_dir "$long" >"$work/long1.log" 2>&1 ||
    { cat "$work/long1.log"; fail "training into a 250-character run dir"; }
run_mpi 2 "$bin" "${common[@]}" --steps 6 --ckpt_every 2 --run_dir "$long" >"$work/long2.log" 2>&1 ||
    { cat "$work/long2.log"; fail "resuming in a 250-character run dir"; }
grep -q "resumed from $long/ckpt_4.h5 at step 4" "$work/long2.log" || fail "no resume from ckpt_4"
[[ -f "$long/ckpt_6.h5" ]] || fail "no ckpt_6.h5 in the long run dir"

echo "== --resume none into an existing run"
run_mpi 2 "$bin" "${common[@]}" --steps 20 --ckpt_every 10 --run_dir "$work/run" >/dev/null 2>&1
rc=0
run_mpi 2 "$bin" "${common[@]}" --steps 5 --ckpt_every 5 --resume none --run_dir "$work/run" \
    >"$work/none.log" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "--resume none into a run exited $rc, want 2"
grep -q "already holds a run (ckpt_20.h5)" "$work/none.log" || { cat "$work/none.log"; fail "message"; }
[[ -f "$work/run/ckpt_10.h5" && -f "$work/run/ckpt_20.h5" && ! -f "$work/run/ckpt_5.h5" ]] ||
    fail "the existing run's checkpoints changed: $(ls "$work/run")"
echo "ok: refused, $(ls "$work/run" | tr '\n' ' ')"

echo "== resume from an older checkpoint, keep 1"
run_mpi 2 "$bin" "${common[@]}" --steps 15 --ckpt_every 5 --keep 1 \
    --resume "$work/run/ckpt_10.h5" --run_dir "$work/run" >"$work/old.log" 2>&1 ||
    { cat "$work/old.log"; fail "resume from ckpt_10"; }
# keep 1 counts from the checkpoint just written: ckpt_15 stays, ckpt_10 goes, and the newer
# ckpt_20 (of the run this one branched from) is not ours to delete.
[[ -f "$work/run/ckpt_15.h5" ]] || fail "the checkpoint just written was pruned: $(ls "$work/run")"
[[ -f "$work/run/ckpt_20.h5" && ! -f "$work/run/ckpt_10.h5" ]] || fail "pruning: $(ls "$work/run")"
echo "ok: $(ls "$work/run" | tr '\n' ' ')"
echo "== eval and resume without --data use the checkpoint's data"
for i in $(seq 1 200); do echo "line $i of a small text corpus for hspmn_dist"; done >"$work/corpus.txt"
run_mpi 2 "$bin" "${common[@]}" --data "text:$work/corpus.txt" --steps 4 --ckpt_every 4 \
    --run_dir "$work/text" >/dev/null 2>&1 || fail "training on text"
run_mpi 1 "$bin" eval --micro_batch 2 --eval_batches 1 --run_dir "$work/text" >"$work/eval.log" 2>&1 ||
    { cat "$work/eval.log"; fail "eval"; }
grep -q "data: text:$work/corpus.txt, as the checkpoint was trained on" "$work/eval.log" ||
    { cat "$work/eval.log"; fail "eval did not take the checkpoint's data"; }
run_mpi 2 "$bin" "${common[@]}" --steps 6 --ckpt_every 2 --run_dir "$work/text" >"$work/resume.log" 2>&1 ||
    { cat "$work/resume.log"; fail "resume"; }
grep -q "data: text:$work/corpus.txt, as the checkpoint" "$work/resume.log" || fail "resume data"
echo "ok: eval and resume read text:$work/corpus.txt"
echo "test_run_dir: passed"
