// The communication interface of dist/comm.h over MPI, and the dispatch to NCCL.
//
// Buffers live on the backend of the Ops given at comm_create. On the cpu backend they are
// host memory and go straight to MPI. On the cuda backend the MPI path stages them through
// host buffers (ops->copy_to_host / copy_from_host, which wait for the stream); the NCCL
// path (dist/comm_nccl.h) works on device memory directly.
//
// MPI counts are int. Byte transfers are sent as contiguous blocks of the largest unit
// (64, 8, 4 or 1 bytes) that divides every count and displacement, which moves the limit
// from 2 GiB to up to 128 GiB per call; past that we stop with a clear message. The
// all-reduce and broadcast, whose buffers can be the whole model, are split into chunks.
#include "dist/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dist/mpi_check.h"
#include "kernels/error.h"
#ifdef HSPMN_HAVE_CUDA
#include "dist/comm_nccl.h"
#endif

struct Comm {
    CommKind kind;
    const Ops *ops;
    MPI_Comm mpi; // a duplicate of MPI_COMM_WORLD, errors returned to us
    int rank, world;
    int staged; // 1: buffers are device memory and MPI goes through the host copies below
    char *stage_send, *stage_recv; // host staging, grown on demand
    size_t stage_send_bytes, stage_recv_bytes;
#ifdef HSPMN_HAVE_CUDA
    CommNccl *nccl; // COMM_NCCL only
#endif
};

// ---- creation ------------------------------------------------------------------------

Comm *comm_create(CommKind kind, const Ops *ops) {
    int initialized = 0;
    mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized)
        hs_fatal("comm_create: MPI is not initialised; call dist_init first");
    if (kind != COMM_MPI && kind != COMM_NCCL)
        hs_fatal("comm_create: unknown communicator kind %d", (int)kind);
#ifndef HSPMN_HAVE_CUDA
    if (kind == COMM_NCCL)
        hs_fatal("--comm nccl needs the CUDA build (this build has no CUDA backend)");
#endif
    if (kind == COMM_NCCL && ops->kind != BACKEND_CUDA)
        hs_fatal("--comm nccl needs the cuda backend (the backend is %s)", ops->name);

    Comm *comm = hs_calloc(1, sizeof(Comm));
    comm->kind = kind;
    comm->ops = ops;
    mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &comm->mpi), "MPI_Comm_dup(MPI_COMM_WORLD)");
    mpi_check(MPI_Comm_set_errhandler(comm->mpi, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(comm->mpi, &comm->rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(comm->mpi, &comm->world), "MPI_Comm_size");
    // Device buffers go through host staging buffers. HSPMN_COMM_STAGE=1 stages host
    // buffers too, so the staging code (used on GPUs) is tested on machines without one.
    const char *force_stage = getenv("HSPMN_COMM_STAGE");
    comm->staged = ops->kind == BACKEND_CUDA || (force_stage && strcmp(force_stage, "1") == 0);
#ifdef HSPMN_HAVE_CUDA
    if (kind == COMM_NCCL)
        comm->nccl = comm_nccl_create(ops, comm->mpi);
#endif
    return comm;
}

void comm_destroy(Comm *comm) {
    if (!comm)
        return;
#ifdef HSPMN_HAVE_CUDA
    if (comm->nccl)
        comm_nccl_destroy(comm->nccl);
#endif
    mpi_check(MPI_Comm_free(&comm->mpi), "MPI_Comm_free");
    free(comm->stage_send);
    free(comm->stage_recv);
    free(comm);
}

int comm_rank(const Comm *comm) {
    return comm->rank;
}

int comm_world(const Comm *comm) {
    return comm->world;
}

// ---- host staging (cuda backend over MPI) ----------------------------------------------

static char *grow(char *buf, size_t *have, size_t need) {
    if (need <= *have)
        return buf;
    free(buf);
    *have = need;
    return hs_malloc(need);
}

// The host pointer MPI sends from: the buffer itself, or a host copy of it.
static const void *send_view(Comm *comm, const void *buf, size_t bytes) {
    if (!comm->staged)
        return buf;
    comm->stage_send = grow(comm->stage_send, &comm->stage_send_bytes, bytes);
    if (bytes)
        comm->ops->copy_to_host(comm->stage_send, buf, bytes);
    return comm->stage_send;
}

// The host pointer MPI receives into: the buffer itself, or the staging buffer.
static void *recv_view(Comm *comm, void *buf, size_t bytes) {
    if (!comm->staged)
        return buf;
    comm->stage_recv = grow(comm->stage_recv, &comm->stage_recv_bytes, bytes);
    return comm->stage_recv;
}

// After MPI has received into recv_view's pointer: move the bytes to the device.
static void recv_done(Comm *comm, void *buf, size_t bytes) {
    if (comm->staged && bytes)
        comm->ops->copy_from_host(buf, comm->stage_recv, bytes);
}

// Variable-size receives: move only the received blocks to the device, so the bytes
// between blocks (which MPI does not write) keep their device contents.
static void recv_done_blocks(Comm *comm, void *buf, const size_t *counts, const size_t *displs) {
    if (!comm->staged)
        return;
    for (int j = 0; j < comm->world; j++)
        if (counts[j])
            comm->ops->copy_from_host((char *)buf + displs[j],
                                      (const char *)comm->stage_recv + displs[j], counts[j]);
}

// ---- counts ----------------------------------------------------------------------------

static int to_int_count(size_t n, const char *what) {
    if (n > (size_t)INT_MAX)
        hs_fatal("%s: %zu elements exceed MPI's int count limit (%d)", what, n, INT_MAX);
    return (int)n;
}

// The largest of 64, 8, 4, 1 bytes that divides all n values.
static size_t byte_unit(const size_t *vals, int n) {
    static const size_t units[] = {64, 8, 4};
    for (int u = 0; u < 3; u++) {
        int divides = 1;
        for (int i = 0; i < n && divides; i++)
            divides = vals[i] % units[u] == 0;
        if (divides)
            return units[u];
    }
    return 1;
}

// A contiguous MPI type of `unit` bytes; free with MPI_Type_free.
static MPI_Datatype unit_type(size_t unit) {
    MPI_Datatype type;
    mpi_check(MPI_Type_contiguous((int)unit, MPI_BYTE, &type), "MPI_Type_contiguous");
    mpi_check(MPI_Type_commit(&type), "MPI_Type_commit");
    return type;
}

// ---- collectives on backend buffers ----------------------------------------------------

void comm_allreduce_sum(Comm *comm, float *buf, size_t n) {
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_allreduce_sum(comm->nccl, buf, n);
        return;
    }
#endif
    size_t bytes = n * sizeof(float);
    float *host = recv_view(comm, buf, bytes);
    if (comm->staged && bytes)
        comm->ops->copy_to_host(host, buf, bytes);
    for (size_t begin = 0; begin < n; begin += (size_t)INT_MAX) {
        size_t count = n - begin < (size_t)INT_MAX ? n - begin : (size_t)INT_MAX;
        mpi_check(
            MPI_Allreduce(MPI_IN_PLACE, host + begin, (int)count, MPI_FLOAT, MPI_SUM, comm->mpi),
            "MPI_Allreduce(sum, float)");
    }
    recv_done(comm, buf, bytes);
}

void comm_allgather(Comm *comm, const void *send, void *recv, size_t bytes) {
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_allgather(comm->nccl, send, recv, bytes);
        return;
    }
#endif
    size_t total = bytes * (size_t)comm->world;
    const void *host_send = send_view(comm, send, bytes);
    void *host_recv = recv_view(comm, recv, total);
    size_t unit = byte_unit(&bytes, 1);
    int count = to_int_count(bytes / unit, "comm_allgather");
    MPI_Datatype type = unit_type(unit);
    mpi_check(MPI_Allgather(host_send, count, type, host_recv, count, type, comm->mpi),
              "MPI_Allgather");
    mpi_check(MPI_Type_free(&type), "MPI_Type_free");
    recv_done(comm, recv, total);
}

void comm_reduce_scatter_sum(Comm *comm, const float *send, float *recv, size_t n) {
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_reduce_scatter_sum(comm->nccl, send, recv, n);
        return;
    }
#endif
    size_t bytes = n * sizeof(float);
    const void *host_send = send_view(comm, send, bytes * (size_t)comm->world);
    void *host_recv = recv_view(comm, recv, bytes);
    int count = to_int_count(n, "comm_reduce_scatter_sum");
    mpi_check(MPI_Reduce_scatter_block(host_send, host_recv, count, MPI_FLOAT, MPI_SUM, comm->mpi),
              "MPI_Reduce_scatter_block(sum, float)");
    recv_done(comm, recv, bytes);
}

void comm_alltoall(Comm *comm, const void *send, void *recv, size_t bytes) {
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_alltoall(comm->nccl, send, recv, bytes);
        return;
    }
#endif
    size_t total = bytes * (size_t)comm->world;
    const void *host_send = send_view(comm, send, total);
    void *host_recv = recv_view(comm, recv, total);
    size_t unit = byte_unit(&bytes, 1);
    int count = to_int_count(bytes / unit, "comm_alltoall");
    MPI_Datatype type = unit_type(unit);
    mpi_check(MPI_Alltoall(host_send, count, type, host_recv, count, type, comm->mpi),
              "MPI_Alltoall");
    mpi_check(MPI_Type_free(&type), "MPI_Type_free");
    recv_done(comm, recv, total);
}

// End of the furthest block: the extent of a variable-size buffer.
static size_t extent(const size_t *counts, const size_t *displs, int world) {
    size_t end = 0;
    for (int j = 0; j < world; j++)
        if (counts[j] && displs[j] + counts[j] > end)
            end = displs[j] + counts[j];
    return end;
}

// counts/displs in bytes -> MPI ints in `unit`s.
static void to_units(int *out, const size_t *in, int world, size_t unit, const char *what) {
    for (int j = 0; j < world; j++)
        out[j] = to_int_count(in[j] / unit, what);
}

void comm_allgatherv(Comm *comm, const void *send, size_t send_bytes, void *recv,
                     const size_t *recv_counts, const size_t *recv_displs) {
    int world = comm->world;
    if (send_bytes != recv_counts[comm->rank])
        hs_fatal("comm_allgatherv: rank %d sends %zu bytes but recv_counts[%d] = %zu", comm->rank,
                 send_bytes, comm->rank, recv_counts[comm->rank]);
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_allgatherv(comm->nccl, send, recv, recv_counts, recv_displs);
        return;
    }
#endif
    size_t recv_bytes = extent(recv_counts, recv_displs, world);
    const void *host_send = send_view(comm, send, send_bytes);
    void *host_recv = recv_view(comm, recv, recv_bytes);
    // One unit for counts and displacements, so they stay in step.
    size_t *all = hs_malloc(2 * (size_t)world * sizeof(size_t));
    memcpy(all, recv_counts, world * sizeof(size_t));
    memcpy(all + world, recv_displs, world * sizeof(size_t));
    size_t unit = byte_unit(all, 2 * world);
    free(all);
    int *ints = hs_malloc(2 * (size_t)world * sizeof(int));
    to_units(ints, recv_counts, world, unit, "comm_allgatherv receive count");
    to_units(ints + world, recv_displs, world, unit, "comm_allgatherv receive displacement");
    MPI_Datatype type = unit_type(unit);
    mpi_check(MPI_Allgatherv(host_send, ints[comm->rank], type, host_recv, ints, ints + world, type,
                             comm->mpi),
              "MPI_Allgatherv");
    mpi_check(MPI_Type_free(&type), "MPI_Type_free");
    free(ints);
    recv_done_blocks(comm, recv, recv_counts, recv_displs);
}

void comm_alltoallv(Comm *comm, const void *send, const size_t *send_counts,
                    const size_t *send_displs, void *recv, const size_t *recv_counts,
                    const size_t *recv_displs) {
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_alltoallv(comm->nccl, send, send_counts, send_displs, recv, recv_counts,
                            recv_displs);
        return;
    }
#endif
    int world = comm->world;
    size_t send_bytes = extent(send_counts, send_displs, world);
    size_t recv_bytes = extent(recv_counts, recv_displs, world);
    const void *host_send = send_view(comm, send, send_bytes);
    void *host_recv = recv_view(comm, recv, recv_bytes);

    // One unit for all four arrays, so counts and displacements stay in step.
    size_t *all = hs_malloc(4 * (size_t)world * sizeof(size_t));
    memcpy(all, send_counts, world * sizeof(size_t));
    memcpy(all + world, send_displs, world * sizeof(size_t));
    memcpy(all + 2 * world, recv_counts, world * sizeof(size_t));
    memcpy(all + 3 * world, recv_displs, world * sizeof(size_t));
    size_t unit = byte_unit(all, 4 * world);
    free(all);
    int *ints = hs_malloc(4 * (size_t)world * sizeof(int));
    to_units(ints, send_counts, world, unit, "comm_alltoallv send count");
    to_units(ints + world, send_displs, world, unit, "comm_alltoallv send displacement");
    to_units(ints + 2 * world, recv_counts, world, unit, "comm_alltoallv receive count");
    to_units(ints + 3 * world, recv_displs, world, unit, "comm_alltoallv receive displacement");

    MPI_Datatype type = unit_type(unit);
    mpi_check(MPI_Alltoallv(host_send, ints, ints + world, type, host_recv, ints + 2 * world,
                            ints + 3 * world, type, comm->mpi),
              "MPI_Alltoallv");
    mpi_check(MPI_Type_free(&type), "MPI_Type_free");
    free(ints);
    recv_done_blocks(comm, recv, recv_counts, recv_displs);
}

void comm_broadcast(Comm *comm, void *buf, size_t bytes, int root) {
    if (root < 0 || root >= comm->world)
        hs_fatal("comm_broadcast: root %d is not a rank of this world of %d", root, comm->world);
#ifdef HSPMN_HAVE_CUDA
    if (comm->kind == COMM_NCCL) {
        comm_nccl_broadcast(comm->nccl, buf, bytes, root);
        return;
    }
#endif
    char *host = recv_view(comm, buf, bytes);
    if (comm->staged && comm->rank == root && bytes)
        comm->ops->copy_to_host(host, buf, bytes);
    for (size_t begin = 0; begin < bytes; begin += (size_t)INT_MAX) {
        size_t count = bytes - begin < (size_t)INT_MAX ? bytes - begin : (size_t)INT_MAX;
        mpi_check(MPI_Bcast(host + begin, (int)count, MPI_BYTE, root, comm->mpi), "MPI_Bcast");
    }
    if (comm->rank != root)
        recv_done(comm, buf, bytes);
}

void comm_barrier(Comm *comm) {
    // Work queued on the device counts as not done yet.
    comm->ops->synchronize();
    mpi_check(MPI_Barrier(comm->mpi), "MPI_Barrier");
}

// ---- host scalars ------------------------------------------------------------------------

void comm_host_sum_f64(Comm *comm, double *vals, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_SUM, comm->mpi),
              "MPI_Allreduce(sum, double)");
}

void comm_host_max_i64(Comm *comm, int64_t *vals, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_INT64_T, MPI_MAX, comm->mpi),
              "MPI_Allreduce(max, int64)");
}

void comm_host_min_i64(Comm *comm, int64_t *vals, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_INT64_T, MPI_MIN, comm->mpi),
              "MPI_Allreduce(min, int64)");
}

void comm_host_alltoall(Comm *comm, const void *send, void *recv, size_t bytes) {
    size_t unit = byte_unit(&bytes, 1);
    int count = to_int_count(bytes / unit, "comm_host_alltoall");
    MPI_Datatype type = unit_type(unit);
    mpi_check(MPI_Alltoall(send, count, type, recv, count, type, comm->mpi), "MPI_Alltoall(host)");
    mpi_check(MPI_Type_free(&type), "MPI_Type_free");
}
