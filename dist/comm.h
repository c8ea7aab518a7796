// The communication interface: collectives on buffers of the current backend.
// The MPI implementation stages device buffers through host memory; the NCCL one
// (with the CUDA backend) works on device memory directly. Every call is checked: a
// failure prints file:line and the library's reason and ends the job on every rank.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

typedef enum { COMM_MPI = 0, COMM_NCCL = 1 } CommKind;

typedef struct Comm Comm;

// Ranks, from MPI (a shared-memory split gives the local rank, so it works under mpirun
// and srun alike).
typedef struct CommInfo {
    int rank, world;             // this process among all
    int local_rank, local_world; // among the processes of this node
} CommInfo;

// MPI_Init (if not yet), installs the abort hook, fills info. Call once, first.
void dist_init(int *argc, char ***argv, CommInfo *info);
void dist_finalize(void);
// End every rank with exit code `code` (MPI_Abort); used by fatal errors.
_Noreturn void dist_abort(int code);
// 1 when another rank on the same node passed the same `key` (e.g. a GPU's PCI bus id),
// on every rank. Collective over all ranks.
int dist_node_key_shared(const char *key);

// A communicator over all ranks whose buffers live on `ops`'s backend.
Comm *comm_create(CommKind kind, const Ops *ops);
void comm_destroy(Comm *comm);
int comm_rank(const Comm *comm);
int comm_world(const Comm *comm);

// In place sum over ranks: buf [n] fp32.
void comm_allreduce_sum(Comm *comm, float *buf, size_t n);
// recv [world * bytes] = concatenation of every rank's send [bytes].
void comm_allgather(Comm *comm, const void *send, void *recv, size_t bytes);
// Variable sizes, in bytes: rank i's send [recv_counts[i]] lands at recv + recv_displs[i]
// on every rank (send_bytes must equal recv_counts[rank]).
void comm_allgatherv(Comm *comm, const void *send, size_t send_bytes, void *recv,
                     const size_t *recv_counts, const size_t *recv_displs);
// recv [n] = the sum over ranks of block `rank` of send [world * n] (fp32).
void comm_reduce_scatter_sum(Comm *comm, const float *send, float *recv, size_t n);
// Block j of send (bytes each) goes to rank j; block i of recv came from rank i.
void comm_alltoall(Comm *comm, const void *send, void *recv, size_t bytes);
// Variable sizes, in bytes: send_counts[j] bytes at send + send_displs[j] go to rank j.
void comm_alltoallv(Comm *comm, const void *send, const size_t *send_counts,
                    const size_t *send_displs, void *recv, const size_t *recv_counts,
                    const size_t *recv_displs);
void comm_broadcast(Comm *comm, void *buf, size_t bytes, int root);
void comm_barrier(Comm *comm);

// Host-side scalars (no backend buffers): sums, max and min of doubles / int64s across ranks.
void comm_host_sum_f64(Comm *comm, double *vals, int n);
void comm_host_max_i64(Comm *comm, int64_t *vals, int n);
void comm_host_min_i64(Comm *comm, int64_t *vals, int n);
// Host buffers, over MPI whatever the kind: block j of send (bytes each) goes to rank j.
// For the small control messages (counts) of variable-size exchanges.
void comm_host_alltoall(Comm *comm, const void *send, void *recv, size_t bytes);
