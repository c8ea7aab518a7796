# Sourced (not run) by launch/quickstart.sh and tests/mpi/run_mpi.sh: the environment that
# lets Open MPI run here.
# - Open MPI refuses to start as root unless both ALLOW_RUN_AS_ROOT variables are set
#   (CI machines and containers run as root).
# - A 2-core machine needs oversubscription to start more ranks than cores.
# - The vader shared-memory transport's single-copy mechanism (CMA) is not permitted in
#   many containers; plain copies always work.
# - PMIx's shared-memory data store fails in some sandboxes; the hash store does not.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PMIX_MCA_gds=hash

# run_mpi NP program args...: mpirun with NP ranks, oversubscribing when needed.
run_mpi() {
    local np=$1
    shift
    "${MPIEXEC:-mpirun}" --oversubscribe -np "$np" "$@"
}
