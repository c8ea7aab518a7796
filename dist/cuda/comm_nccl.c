// NCCL collectives on device buffers (dist/comm_nccl.h). One communicator over the ranks of
// an MPI communicator; every call is enqueued on the cuda backend's stream, so it is ordered
// with the ops before and after it and needs no extra synchronization. Every NCCL call is
// checked: a failure names the call and NCCL's reason and ends the job on every rank.
#include <mpi.h>
#include <nccl.h>
#include <stdint.h>
#include <stdlib.h>

#include "dist/comm_nccl.h"
#include "dist/mpi_check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/error.h"

struct CommNccl {
    ncclComm_t comm;
    cudaStream_t stream; // the cuda backend's stream (ops_cuda_stream)
    int rank, world;
};

static void nccl_check_at(const char *file, int line, ncclResult_t result, const char *what,
                          ncclComm_t comm) {
    if (result == ncclSuccess)
        return;
    const char *detail = comm ? ncclGetLastError(comm) : NULL;
    hs_fatal_at(file, line, "%s failed: %s%s%s", what, ncclGetErrorString(result),
                detail && detail[0] ? ": " : "", detail ? detail : "");
}
#define nccl_check(call, comm) nccl_check_at(__FILE__, __LINE__, (call), #call, (comm))

CommNccl *comm_nccl_create(const Ops *ops, MPI_Comm mpi_comm) {
    if (!ops || ops->kind != BACKEND_CUDA)
        hs_fatal("comm_nccl_create: NCCL needs the cuda backend, got '%s'",
                 ops ? ops->name : "(none)");
    CommNccl *nccl = hs_calloc(1, sizeof(CommNccl));
    mpi_check(MPI_Comm_rank(mpi_comm, &nccl->rank), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(mpi_comm, &nccl->world), "MPI_Comm_size");
    // Rank 0 draws the id; everyone joins with it.
    ncclUniqueId id;
    if (nccl->rank == 0)
        nccl_check(ncclGetUniqueId(&id), NULL);
    mpi_check(MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, mpi_comm), "MPI_Bcast(ncclUniqueId)");
    nccl_check(ncclCommInitRank(&nccl->comm, nccl->world, id, nccl->rank), NULL);
    nccl->stream = (cudaStream_t)ops_cuda_stream();
    return nccl;
}

void comm_nccl_destroy(CommNccl *nccl) {
    if (!nccl)
        return;
    nccl_check(ncclCommDestroy(nccl->comm), NULL);
    free(nccl);
}

void comm_nccl_allreduce_sum(CommNccl *nccl, float *buf, size_t n) {
    if (n == 0)
        return;
    nccl_check(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, nccl->comm, nccl->stream),
               nccl->comm);
}

void comm_nccl_allgather(CommNccl *nccl, const void *send, void *recv, size_t bytes) {
    if (bytes == 0)
        return;
    nccl_check(ncclAllGather(send, recv, bytes, ncclUint8, nccl->comm, nccl->stream), nccl->comm);
}

void comm_nccl_allgatherv(CommNccl *nccl, const void *send, void *recv, const size_t *recv_counts,
                          const size_t *recv_displs) {
    uint8_t *recv_bytes = recv;
    nccl_check(ncclGroupStart(), nccl->comm);
    for (int root = 0; root < nccl->world; root++) {
        if (recv_counts[root] == 0)
            continue;
        // Only the root's send buffer is read; every rank receives into its slot of recv.
        nccl_check(ncclBroadcast(root == nccl->rank ? send : NULL, recv_bytes + recv_displs[root],
                                 recv_counts[root], ncclUint8, root, nccl->comm, nccl->stream),
                   nccl->comm);
    }
    nccl_check(ncclGroupEnd(), nccl->comm);
}

void comm_nccl_reduce_scatter_sum(CommNccl *nccl, const float *send, float *recv, size_t n) {
    if (n == 0)
        return;
    nccl_check(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, nccl->comm, nccl->stream),
               nccl->comm);
}

// One grouped round of point-to-point calls: block j of send to rank j, block i of recv from
// rank i. Zero-byte blocks are skipped on both sides (the counts agree by contract).
static void exchange_blocks(CommNccl *nccl, const void *send, const size_t *send_counts,
                            const size_t *send_displs, void *recv, const size_t *recv_counts,
                            const size_t *recv_displs) {
    const uint8_t *send_bytes = send;
    uint8_t *recv_bytes = recv;
    nccl_check(ncclGroupStart(), nccl->comm);
    for (int peer = 0; peer < nccl->world; peer++) {
        if (send_counts[peer] > 0)
            nccl_check(ncclSend(send_bytes + send_displs[peer], send_counts[peer], ncclUint8, peer,
                                nccl->comm, nccl->stream),
                       nccl->comm);
        if (recv_counts[peer] > 0)
            nccl_check(ncclRecv(recv_bytes + recv_displs[peer], recv_counts[peer], ncclUint8, peer,
                                nccl->comm, nccl->stream),
                       nccl->comm);
    }
    nccl_check(ncclGroupEnd(), nccl->comm);
}

void comm_nccl_alltoall(CommNccl *nccl, const void *send, void *recv, size_t bytes) {
    size_t *counts = hs_malloc((size_t)nccl->world * sizeof(size_t)); // [world]
    size_t *displs = hs_malloc((size_t)nccl->world * sizeof(size_t)); // [world]
    for (int peer = 0; peer < nccl->world; peer++) {
        counts[peer] = bytes;
        displs[peer] = (size_t)peer * bytes;
    }
    exchange_blocks(nccl, send, counts, displs, recv, counts, displs);
    free(counts);
    free(displs);
}

void comm_nccl_alltoallv(CommNccl *nccl, const void *send, const size_t *send_counts,
                         const size_t *send_displs, void *recv, const size_t *recv_counts,
                         const size_t *recv_displs) {
    exchange_blocks(nccl, send, send_counts, send_displs, recv, recv_counts, recv_displs);
}

void comm_nccl_broadcast(CommNccl *nccl, void *buf, size_t bytes, int root) {
    if (bytes == 0)
        return;
    if (root < 0 || root >= nccl->world)
        hs_fatal("comm_nccl_broadcast: root %d outside [0, %d)", root, nccl->world);
    nccl_check(ncclBroadcast(buf, buf, bytes, ncclUint8, root, nccl->comm, nccl->stream),
               nccl->comm);
}
