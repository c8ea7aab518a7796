// NCCL collectives on device buffers, for Comm of kind COMM_NCCL (dist/comm.c calls them
// only under HSPMN_HAVE_CUDA). Implemented in dist/cuda/comm_nccl.c by the CUDA backend:
// every call is enqueued on the cuda backend's stream and is checked (ncclGetErrorString).
// Sizes are size_t; the implementation splits or checks counts that NCCL cannot take.
#pragma once
#include <mpi.h>
#include <stddef.h>

#include "kernels/ops.h"

typedef struct CommNccl CommNccl;

// Rank 0 creates the ncclUniqueId and broadcasts it over `mpi_comm`; every rank then joins
// the NCCL communicator with the rank and size of `mpi_comm`. ops is the cuda backend.
CommNccl *comm_nccl_create(const Ops *ops, MPI_Comm mpi_comm);
void comm_nccl_destroy(CommNccl *nccl);

// The same contracts as the comm_* functions of dist/comm.h, on device buffers.
// In place: buf [n] fp32 summed over ranks.
void comm_nccl_allreduce_sum(CommNccl *nccl, float *buf, size_t n);
// recv [world * bytes] = every rank's send [bytes], in rank order.
void comm_nccl_allgather(CommNccl *nccl, const void *send, void *recv, size_t bytes);
// Rank i's send [recv_counts[i]] lands at recv + recv_displs[i] (one grouped broadcast per
// rank). Counts and displacements are host arrays of world entries.
void comm_nccl_allgatherv(CommNccl *nccl, const void *send, void *recv, const size_t *recv_counts,
                          const size_t *recv_displs);
// recv [n] = sum over ranks of block `rank` of send [world * n].
void comm_nccl_reduce_scatter_sum(CommNccl *nccl, const float *send, float *recv, size_t n);
// Block j of send (bytes each) goes to rank j (grouped ncclSend/ncclRecv).
void comm_nccl_alltoall(CommNccl *nccl, const void *send, void *recv, size_t bytes);
// send_counts[j] bytes at send + send_displs[j] go to rank j; recv_counts[i] bytes from rank i
// land at recv + recv_displs[i]. Counts and displacements are host arrays of world entries.
void comm_nccl_alltoallv(CommNccl *nccl, const void *send, const size_t *send_counts,
                         const size_t *send_displs, void *recv, const size_t *recv_counts,
                         const size_t *recv_displs);
void comm_nccl_broadcast(CommNccl *nccl, void *buf, size_t bytes, int root);
