# Sourced by the mpi tests: mpirun that works as root and with more ranks than cores.
# Open MPI refuses root without these two variables, and a 2-core machine needs
# --oversubscribe for 4 ranks.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PMIX_MCA_gds=hash
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# run_mpi NP program args...
run_mpi() {
    local np=$1
    shift
    "${MPIEXEC:-mpirun}" --oversubscribe -np "$np" "$@"
}
