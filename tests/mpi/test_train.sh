#!/usr/bin/env bash
# A short CPU run of the small preset on the built-in tasks learns: held-out accuracy on the
# memorised facts (asked in unseen contexts) goes from chance (1/48 objects) to well above
# it, MQAR recall (8 pairs, 16 values: chance 1/16) already beats chance clearly, the eval
# loss falls, and `eval` / `sample` work on the checkpoint it leaves.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
need_python
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run="$work/run"

run_mpi 2 "$bin" --steps 300 --eval_every 100 --eval_batches 4 --log_every 50 --ckpt_every 100 \
    --run_dir "$run" | tee "$work/train.log" | grep -E '^step|^eval|^checkpoint'

"$HSPMN_PYTHON" - "$run/metrics.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    step, loss = f["step"][:], f["loss"][:]
    evals = ~np.isnan(f["eval_loss"][:])
    eval_steps = step[evals]
    eval_loss = f["eval_loss"][:][evals]
    facts = f["eval_acc_facts"][:][evals]
    mqar = f["eval_acc_mqar"][:][evals]
    hit = f["slot_hit_fraction"][:]
print("eval steps", eval_steps, "loss", np.round(eval_loss, 4))
print("held-out accuracy facts", np.round(facts, 3), "(chance 0.021), mqar", np.round(mqar, 3),
      "(chance 0.0625)")
ok = True
if list(step) != list(range(1, 301)): print("FAIL: steps", step[:5], len(step)); ok = False
if not loss[-20:].mean() < loss[:20].mean() - 1.0: print("FAIL: training loss did not fall"); ok = False
if not eval_loss[-1] < eval_loss[0]: print("FAIL: eval loss did not fall"); ok = False
if not facts[-1] > 0.5: print("FAIL: facts accuracy not well above chance"); ok = False
# 300 steps give about 0.15-0.2 on MQAR (the full default run goes further); 0.11 is
# clearly above chance and well below that.
if not mqar[-1] > 0.11: print("FAIL: MQAR accuracy not above chance"); ok = False
if not np.all(np.isfinite(hit[~np.isnan(hit[:, 0])])): print("FAIL: slot usage missing"); ok = False
sys.exit(0 if ok else 1)
PY

# eval mode on the newest checkpoint reproduces the in-training eval of the same step.
in_training=$(grep '^eval step 300:' "$work/train.log" | sed 's/^eval step 300: //')
run_mpi 2 "$bin" eval --run_dir "$run" --eval_batches 4 | tee "$work/eval.log" | grep '^eval'
standalone=$(grep '^eval step 300:' "$work/eval.log" | sed 's/^eval step 300: //')
[[ -n "$standalone" && "$standalone" == "$in_training" ]] ||
    { echo "FAIL: eval mode gave '$standalone', training printed '$in_training'"; exit 1; }

# sample mode: 8 new tokens after a prompt, on 1 rank and on 2 (same tokens: greedy).
for np in 1 2; do
    run_mpi "$np" "$bin" sample --run_dir "$run" --prompt_ids 2,18,3,19 --max_new_tokens 8 \
        --temperature 0 | grep '_ids' | tee "$work/sample$np.log"
    [[ $(grep '^generated_ids:' "$work/sample$np.log" | wc -w) -eq 9 ]] ||
        { echo "FAIL: sample did not produce 8 tokens"; exit 1; }
done
cmp "$work/sample1.log" "$work/sample2.log" || { echo "FAIL: sampling differs with 2 ranks"; exit 1; }
echo "train, eval, sample: ok"
