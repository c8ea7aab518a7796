#!/usr/bin/env bash
# launch/slurm/hspmn.sbatch on a real one-node Slurm started here (tests/tools/slurm_cluster.sh),
# with the CPU backend and 2 ranks of hspmn_dist:
#   1. a 20-step job (srun --mpi=pmix) leaves checkpoints and metrics in runs/<job name>;
#   2. a second job of the same name with --steps 30 (mpirun launcher) resumes at step 20:
#      metrics continue 21..30 without duplicates, and its first loss is close to the last
#      one before the restart (a fresh start would be back at the initial loss);
#   3. a job near its time limit gets SIGUSR1, requeues itself, and its next start resumes
#      from the newest checkpoint of the interrupted start.
# Skips (77) when not root, or when slurm-wlm/munge are missing and cannot be installed.
# The daemons are stopped whatever happens.
set -euo pipefail

src=${HSPMN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${HSPMN_BUILD:-$src/build}
source "$src/tests/python_env.sh"
python=${HSPMN_PYTHON:-/usr/bin/python3}
job_name=hspmn-slurm-test

if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: a test Slurm runs its daemons as root; this is uid $(id -u)"
    exit 77
fi
if ! $python -c 'import h5py, numpy' 2>/dev/null; then
    echo "SKIP: $python cannot import h5py and numpy (apt-get install python3-h5py)"
    exit 77
fi
source "$src/tests/tools/slurm_cluster.sh"
if ! slurm_cluster_install; then
    echo "SKIP: slurm-wlm and munge are not installed and could not be installed"
    exit 77
fi
if [[ ! -x $build/hspmn_dist ]]; then
    echo "FAIL: $build/hspmn_dist is not built"
    exit 1
fi

work=$(mktemp -d)
cluster=$work/cluster
cleanup() {
    # Jobs first (they would be killed with slurmd anyway), then the daemons.
    scancel --quiet --name="$job_name" 2>/dev/null || true
    slurm_cluster_stop "$cluster"
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    for log in "$work"/*.out; do
        [[ -f $log ]] && { echo "---- $log"; tail -n 40 "$log"; }
    done
    [[ -f $cluster/slurmctld.log ]] && { echo "---- slurmctld.log"; tail -n 20 "$cluster/slurmctld.log"; }
    exit 1
}

slurm_cluster_start "$cluster" || fail "could not start the test cluster"

# What the sbatch script reads (sbatch passes this environment to the job).
source "$src/launch/mpi_env.sh" # mpirun as root; PMIx hash store
export HSPMN_BIN=$build/hspmn_dist HSPMN_DEVICE=cpu RUN_ROOT=$work/runs OMP_NUM_THREADS=1
run_dir=$RUN_ROOT/$job_name
gpu_option=()
if ((SLURM_CLUSTER_GPUS == 0)); then
    gpu_option=(--gpus-per-task=0) # the script asks for one GPU per task by default
fi

# submit LAUNCHER ARGS [sbatch options...]: prints the job id.
submit() {
    local launcher=$1 args=$2
    shift 2
    HSPMN_LAUNCHER=$launcher HSPMN_ARGS=$args sbatch --parsable -J "$job_name" \
        --ntasks-per-node=2 --cpus-per-task=1 "${gpu_option[@]}" \
        --output="$work/%x-%j.out" "$@" "$src/launch/slurm/hspmn.sbatch"
}

# finish JOB SECONDS: wait for the job to leave the queue and check that it succeeded.
finish() {
    slurm_wait_job "$1" "$2" || fail "job $1 did not finish in $2 s"
    local state code
    state=$(slurm_job_field "$1" JobState)
    code=$(slurm_job_field "$1" ExitCode)
    [[ $state == COMPLETED && $code == 0:0 ]] || fail "job $1 ended $state, exit code $code"
}

# h5 EXPR...: evaluate Python with h5py/numpy as np, run_dir as R; prints the result.
h5() {
    $python -c "import sys, h5py, numpy as np; R = sys.argv[1]; $1" "$run_dir"
}

common="--preset tiny --warmup 2 --ckpt_every 10 --keep 0 --eval_every 0 --log_every 1"

echo "== job 1: 20 steps with srun --mpi=pmix"
job1=$(submit srun "$common --steps 20" --time=5) || fail "sbatch refused job 1"
finish "$job1" 90
out1=$work/$job_name-$job1.out
grep -q "launch: srun --mpi=pmix" "$out1" || fail "job 1 did not launch with srun"
grep -q "ranks .*2 (2 on this node)" "$out1" || fail "job 1 did not run 2 ranks"
grep -q "checkpoint .*(fresh start)" "$out1" || fail "job 1 did not start fresh"
[[ -f $run_dir/ckpt_10.h5 && -f $run_dir/ckpt_20.h5 ]] ||
    fail "job 1 left no ckpt_10.h5 and ckpt_20.h5 in $run_dir: $(ls "$run_dir")"
step=$(h5 'print(int(h5py.File(R + "/ckpt_20.h5", "r")["/state/step"][()]))')
[[ $step == 20 ]] || fail "ckpt_20.h5 holds step $step"
steps=$(h5 'print(" ".join(str(int(s)) for s in h5py.File(R + "/metrics.h5", "r")["step"][()]))')
[[ $steps == "$(seq -s ' ' 1 20)" ]] || fail "job 1 metrics steps: $steps"
loss20=$(h5 'print(h5py.File(R + "/metrics.h5", "r")["loss"][19])')
loss1=$(h5 'print(h5py.File(R + "/metrics.h5", "r")["loss"][0])')
echo "job 1: loss $loss1 at step 1, $loss20 at step 20"

echo "== job 2: same name, 30 steps, mpirun: resumes at step 20"
job2=$(submit mpirun "$common --steps 30" --time=5) || fail "sbatch refused job 2"
finish "$job2" 90
out2=$work/$job_name-$job2.out
grep -q "launch: mpirun" "$out2" || fail "job 2 did not launch with mpirun"
grep -q "resumed from $run_dir/ckpt_20.h5 at step 20" "$out2" || fail "job 2 did not resume from ckpt_20.h5"
grep -q "^step    21/30" "$out2" || fail "job 2's first step is not 21"
grep -q "^step     1/" "$out2" && fail "job 2 started again at step 1"
step=$(h5 'print(int(h5py.File(R + "/ckpt_30.h5", "r")["/state/step"][()]))')
[[ $step == 30 ]] || fail "ckpt_30.h5 holds step $step"
steps=$(h5 'print(" ".join(str(int(s)) for s in h5py.File(R + "/metrics.h5", "r")["step"][()]))')
[[ $steps == "$(seq -s ' ' 1 30)" ]] || fail "metrics steps after the resume: $steps"
# The first loss after the restart continues the curve: within 0.15 of the last loss before
# it, and well below the fresh-start loss.
h5 "
loss = h5py.File(R + '/metrics.h5', 'r')['loss'][()]
print(f'loss at step 1 {loss[0]:.4f}, 20 {loss[19]:.4f}, 21 (after resume) {loss[20]:.4f}')
sys.exit(0 if abs(loss[20] - loss[19]) < 0.15 and loss[20] < loss[0] - 0.2 else 1)
" || fail "the loss after the resume does not continue the curve"

echo "== job 3: SIGUSR1 before the time limit requeues the job; the next start resumes"
# --time=1 with --signal=B:USR1@55: Slurm signals the script within its first minute
# (when slurmctld next checks time limits), while the 20000 steps are still running (more
# than a minute holds, however fast the machine). The signal may come after a few seconds;
# checkpoints every 2 steps let the first start leave some. Resuming from the newest one,
# whichever it is, is what is checked.
job3=$(submit srun "${common/--ckpt_every 10/--ckpt_every 2} --steps 20000" --time=1 --signal=B:USR1@55) || fail "sbatch refused job 3"
out3=$work/$job_name-$job3.out
deadline=$((SECONDS + 100))
until [[ $(slurm_job_field "$job3" Restarts) -ge 1 ]]; do
    ((SECONDS < deadline)) || fail "job 3 was not requeued within 100 s"
    sleep 1
done
grep -q "time limit near: requeueing job $job3" "$out3" || fail "job 3 requeued, but not by the USR1 trap"
deadline=$((SECONDS + 30))
until [[ $(slurm_job_field "$job3" JobState) == PENDING ]]; do
    ((SECONDS < deadline)) || fail "job 3 is not pending after its requeue"
    sleep 1
done
# The first start has ended: its newest complete checkpoint is the one to resume from.
newest=$(find "$run_dir" -name 'ckpt_*.h5' | sed 's/.*ckpt_\([0-9]*\)\.h5/\1/' | sort -n | tail -1)
echo "job 3: first start stopped; newest checkpoint ckpt_$newest.h5"
# Slurm holds a requeued job back for a while before it may start again; start it now, but
# not within the second of the requeue: the requeue revokes the job's credentials, and
# slurmd compares credential times in whole seconds, so a start in that same second is
# refused ("Job credential revoked") and the job fails instead of resuming (seen once in CI).
sleep 2
scontrol update JobId="$job3" StartTime=now || fail "scontrol update StartTime failed"
# The log is appended to: the second start's lines follow its "start 2" banner (the first
# start also printed a "resumed from" line: from job 2's ckpt_30.h5).
second_start() { sed -n '/, start 2, nodes/,$p' "$out3"; }
# On a loaded machine the scheduler's next pass can take a while (once over 60 s in CI):
# wait up to 180 s, asking again every 20 s, and say where the job stood if it never came.
deadline=$((SECONDS + 180))
next_nudge=$((SECONDS + 20))
until second_start | grep "^resumed from $run_dir/ckpt_" >/dev/null; do
    ((SECONDS < deadline)) ||
        fail "job 3's second start did not resume within 180 s (state" \
            "$(slurm_job_field "$job3" JobState), reason $(slurm_job_field "$job3" Reason))"
    if ((SECONDS >= next_nudge)); then
        scontrol update JobId="$job3" StartTime=now >/dev/null 2>&1 || true
        next_nudge=$((SECONDS + 20))
    fi
    sleep 1
done
resumed=$(second_start | sed -n "s|^resumed from $run_dir/ckpt_\([0-9]*\)\.h5 at step \([0-9]*\).*|\1 \2|p")
read -r ckpt_step at_step <<<"$resumed"
echo "job 3: second start resumed from ckpt_$ckpt_step.h5 at step $at_step"
[[ $ckpt_step == "$at_step" && $at_step == "$newest" ]] && ((at_step >= 30)) ||
    fail "job 3 resumed at step '$at_step' (from ckpt '$ckpt_step'), expected the newest" \
        "checkpoint '$newest' (30 or later)"
scancel "$job3"
slurm_wait_job "$job3" 30 || fail "job 3 did not end after scancel"

echo "PASS: test_slurm"
