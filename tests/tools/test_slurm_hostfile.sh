#!/usr/bin/env bash
# launch/slurm/mpirun_hostfile.sh, the no-Slurm recipe, with a one-host hostfile
# ("localhost slots=2"), the CPU backend and a tiny model: a first run leaves its
# checkpoint in RUN_DIR, the same command with more steps resumes from it, and bad
# hostfiles are refused with a message.
set -euo pipefail

src=${HSPMN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${HSPMN_BUILD:-$src/build}
script=$src/launch/slurm/mpirun_hostfile.sh

if [[ ! -x $build/hspmn_dist ]]; then
    echo "FAIL: $build/hspmn_dist is not built"
    exit 1
fi
source "$src/tests/mpi/run_mpi.sh" # mpirun as root, oversubscription, OMP_NUM_THREADS=1
[[ -n ${MPIEXEC:-} ]] && export MPIRUN=$MPIEXEC

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "FAIL: $*"
    [[ -f $work/run.log ]] && tail -n 30 "$work/run.log"
    exit 1
}

printf '# the test machine\nlocalhost slots=2\n' >"$work/hosts"
export HSPMN_BIN=$build/hspmn_dist HSPMN_DEVICE=cpu RUN_DIR=$work/run
args=(--preset tiny --warmup 2 --ckpt_every 5 --keep 0 --eval_every 0 --log_every 1)

echo "== first run: 10 steps on 2 ranks"
bash "$script" "$work/hosts" "${args[@]}" --steps 10 >"$work/run.log" 2>&1 || fail "first run failed"
grep -q "mpirun_hostfile: .* --hostfile $work/hosts -np 2 --map-by ppr:2:node" "$work/run.log" ||
    fail "unexpected mpirun command: $(grep mpirun_hostfile: "$work/run.log")"
grep -q "ranks .*2 (2 on this node)" "$work/run.log" || fail "not 2 ranks"
[[ -f $RUN_DIR/ckpt_10.h5 ]] || fail "no ckpt_10.h5 in $RUN_DIR"

echo "== same command, 15 steps: resumes at step 10"
bash "$script" "$work/hosts" "${args[@]}" --steps 15 >"$work/run.log" 2>&1 || fail "second run failed"
grep -q "resumed from $RUN_DIR/ckpt_10.h5 at step 10" "$work/run.log" || fail "did not resume"
grep -q "^step    11/15" "$work/run.log" || fail "first step after the resume is not 11"
[[ -f $RUN_DIR/ckpt_15.h5 ]] || fail "no ckpt_15.h5 in $RUN_DIR"

echo "== bad input is refused"
: >"$work/empty"
status=0
bash "$script" "$work/empty" >"$work/run.log" 2>&1 || status=$?
((status == 2)) && grep -q "lists no hosts" "$work/run.log" || fail "empty hostfile: exit $status"
status=0
bash "$script" "$work/missing" >"$work/run.log" 2>&1 || status=$?
((status == 2)) && grep -q "cannot read hostfile" "$work/run.log" || fail "missing hostfile: exit $status"
status=0
GPUS_PER_NODE=x bash "$script" "$work/hosts" >"$work/run.log" 2>&1 || status=$?
((status == 2)) && grep -q "GPUS_PER_NODE='x'" "$work/run.log" || fail "GPUS_PER_NODE=x: exit $status"

echo "PASS: test_slurm_hostfile"
