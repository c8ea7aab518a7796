#!/usr/bin/env bash
# Train with plain mpirun and a hostfile, for machines without Slurm: one rank per GPU.
#
#   launch/slurm/mpirun_hostfile.sh HOSTFILE [hspmn_dist flags...]
#
# HOSTFILE lists one node per line with its number of GPUs as slots (Open MPI format):
#
#   node01 slots=8
#   node02 slots=8
#
# The ranks are spread GPUS_PER_NODE per node (default: the first line's slots), so rank r
# runs on node r / GPUS_PER_NODE and uses the GPU of its local rank. The nodes must reach
# each other by passwordless ssh and see the repository and the run dir at the same path
# (a shared file system): every rank writes its slice of each checkpoint.
#
# Running the same command again resumes from the newest complete checkpoint in RUN_DIR.
#
# Environment (as in hspmn.sbatch):
#   HSPMN_BIN     trainer binary           (default: <repo>/build/hspmn_dist)
#   HSPMN_DEVICE  cuda | cpu               (default: cuda)
#   HSPMN_COMM    mpi | nccl               (default: nccl with cuda, mpi with cpu)
#   RUN_DIR       run directory            (default: <repo>/runs/$RUN_NAME)
#   RUN_NAME      name of the run          (default: hspmn)
#   HSPMN_RESUME  auto | none | PATH       (default: auto)
#   GPUS_PER_NODE ranks per node           (default: the slots of the hostfile's first line)
#   MPIRUN        the mpirun to use        (default: mpirun)
# Variables named NCCL_*, UCX_*, OMPI_MCA_*, HDF5_*, PMIX_MCA_* and OMP_NUM_THREADS that are
# set here are passed on to every rank on every node (mpirun -x); see multinode.sbatch for
# the ones clusters usually need.
set -euo pipefail

usage() {
    echo "usage: $0 HOSTFILE [hspmn_dist flags...]" >&2
    exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
hostfile=${1:-}
[[ -n $hostfile ]] || usage
shift
if [[ ! -r $hostfile ]]; then
    echo "mpirun_hostfile: cannot read hostfile '$hostfile'" >&2
    exit 2
fi

# Total slots and the first line's slots ("host slots=N"; a line without slots= counts 1).
read -r total_slots first_slots < <(awk '
    /^[[:space:]]*(#|$)/ { next }
    { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, kv, "="); n = kv[2] }
      total += n; if (first == "") first = n }
    END { print total + 0, first + 0 }' "$hostfile")
if ((total_slots == 0)); then
    echo "mpirun_hostfile: '$hostfile' lists no hosts" >&2
    exit 2
fi
gpus_per_node=${GPUS_PER_NODE:-$first_slots}
if ! [[ $gpus_per_node =~ ^[1-9][0-9]*$ ]]; then
    echo "mpirun_hostfile: GPUS_PER_NODE='$gpus_per_node' is not a positive integer" >&2
    exit 2
fi

HSPMN_BIN=${HSPMN_BIN:-$repo/build/hspmn_dist}
HSPMN_DEVICE=${HSPMN_DEVICE:-cuda}
if [[ $HSPMN_DEVICE == cpu ]]; then
    HSPMN_COMM=${HSPMN_COMM:-mpi}
else
    HSPMN_COMM=${HSPMN_COMM:-nccl}
fi
RUN_NAME=${RUN_NAME:-hspmn}
RUN_DIR=${RUN_DIR:-$repo/runs/$RUN_NAME}
HSPMN_RESUME=${HSPMN_RESUME:-auto}
if [[ ! -x $HSPMN_BIN ]]; then
    echo "mpirun_hostfile: HSPMN_BIN=$HSPMN_BIN is not an executable file" \
        "(build it with launch/setup.sh, or set HSPMN_BIN)" >&2
    exit 2
fi

# Pass the network, HDF5 and threading settings of this shell on to the remote ranks.
forward=()
while IFS= read -r name; do
    forward+=(-x "$name")
done < <(compgen -e | grep -E '^(NCCL_|UCX_|OMPI_MCA_|HDF5_|PMIX_MCA_|OMP_NUM_THREADS$)' || true)

cmd=("${MPIRUN:-mpirun}" --hostfile "$hostfile" -np "$total_slots"
    --map-by "ppr:$gpus_per_node:node" --bind-to none "${forward[@]}"
    "$HSPMN_BIN" train --device "$HSPMN_DEVICE" --comm "$HSPMN_COMM"
    --run_dir "$RUN_DIR" --resume "$HSPMN_RESUME" "$@")
echo "mpirun_hostfile: ${cmd[*]}"
exec "${cmd[@]}"
