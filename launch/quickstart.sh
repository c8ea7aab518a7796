#!/usr/bin/env bash
# From a fresh Debian machine to a trained model: install, build, then train the default
# (small) model on the built-in tasks with 2 MPI ranks. Extra arguments go to hspmn_dist.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/launch/setup.sh"

source "$repo/launch/mpi_env.sh"
cd "$repo"
echo "quickstart: mpirun -np 2 build/hspmn_dist $*"
run_mpi 2 "$repo/build/hspmn_dist" "$@"
