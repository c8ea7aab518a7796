# Sourced by the mpi tests: mpirun that works as root and with more ranks than cores.
# The settings live in launch/mpi_env.sh (shared with launch/quickstart.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../launch/mpi_env.sh"
# One OpenMP thread per rank unless the caller says otherwise: tests start several ranks
# on a 2-core machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "${BASH_SOURCE[0]}")/../python_env.sh"
