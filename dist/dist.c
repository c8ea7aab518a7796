// Process-level MPI: start-up, ranks (global and per node), shutdown and the job-wide abort
// that fatal errors use once MPI is up.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm.h"
#include "dist/mpi_check.h"
#include "kernels/error.h"

void mpi_check_at(const char *file, int line, int err, const char *what) {
    if (err == MPI_SUCCESS)
        return;
    char reason[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(err, reason, &length) != MPI_SUCCESS)
        snprintf(reason, sizeof(reason), "MPI error code %d", err);
    hs_fatal_at(file, line, "%s failed: %s", what, reason);
}

// The abort hook of kernels/error.h: a fatal error on one rank takes down every rank
// instead of leaving the others blocked in a collective.
static void abort_hook(int code) {
    dist_abort(code);
}

_Noreturn void dist_abort(int code) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void dist_init(int *argc, char ***argv, CommInfo *info) {
    int initialized = 0;
    mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized) {
        // Open MPI 4.1's "lockedfile" shared-file-pointer component overflows a fixed buffer
        // when HDF5 opens a file whose path is 231 characters or longer, which would kill the
        // job at its first checkpoint. We never use shared file pointers: leave it out, unless
        // the user set the variable themselves. (Read by Open MPI at MPI_Init.)
        setenv("OMPI_MCA_sharedfp", "^lockedfile", 0);
        // Only the main thread calls MPI (OpenMP threads never do).
        int provided = 0;
        mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        if (provided < MPI_THREAD_FUNNELED)
            hs_fatal("MPI_Init_thread: MPI provides thread level %d, we need FUNNELED (%d)",
                     provided, MPI_THREAD_FUNNELED);
    }
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
              "MPI_Comm_set_errhandler(MPI_COMM_WORLD)");
    hs_set_abort_hook(abort_hook);

    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &info->rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &info->world), "MPI_Comm_size");
    // The processes sharing memory with us are the ones on this node: their rank among
    // themselves picks the GPU, under mpirun and srun alike.
    MPI_Comm node;
    mpi_check(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info->rank, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    mpi_check(MPI_Comm_rank(node, &info->local_rank), "MPI_Comm_rank(node)");
    mpi_check(MPI_Comm_size(node, &info->local_world), "MPI_Comm_size(node)");
    mpi_check(MPI_Comm_free(&node), "MPI_Comm_free(node)");
    // A lone process keeps its messages untagged; with several, every line names its rank.
    if (info->world > 1)
        hs_set_log_rank(info->rank);
}

void dist_finalize(void) {
    int initialized = 0, finalized = 0;
    mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
    mpi_check(MPI_Finalized(&finalized), "MPI_Finalized");
    if (!initialized || finalized)
        return;
    // Fatal errors after this point can no longer use MPI_Abort.
    hs_set_abort_hook(NULL);
    mpi_check(MPI_Finalize(), "MPI_Finalize");
}

int dist_node_key_shared(const char *key) {
    // "hostname|key", fixed width, gathered from every rank.
    enum { WIDTH = 192 };
    char mine[WIDTH] = {0};
    char host[MPI_MAX_PROCESSOR_NAME];
    int host_len = 0;
    mpi_check(MPI_Get_processor_name(host, &host_len), "MPI_Get_processor_name");
    snprintf(mine, sizeof(mine), "%.*s|%s", host_len, host, key);
    int rank = 0, world = 1;
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world), "MPI_Comm_size");
    char *all = hs_malloc((size_t)world * WIDTH);
    mpi_check(MPI_Allgather(mine, WIDTH, MPI_CHAR, all, WIDTH, MPI_CHAR, MPI_COMM_WORLD),
              "MPI_Allgather(node keys)");
    int shared = 0;
    for (int r = 0; r < world && !shared; r++)
        shared = r != rank && strncmp(all + (size_t)r * WIDTH, mine, WIDTH) == 0;
    free(all);
    int any = 0;
    mpi_check(MPI_Allreduce(&shared, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce(node keys)");
    return any;
}
