// Every collective of dist/comm.h over MPI, with known-answer data, at whatever world size
// mpirun gives. The data is prepared on the host and moved to buffers of the backend, so on
// the cuda backend the MPI path's host staging is what is tested. Exits 1 with a message
// naming the collective, the rank and the first wrong element on any mismatch.
//
//   prog_comm            every check on the cpu backend
//   prog_comm cuda       every check on the cuda backend (exit 77 where there is none)
//   prog_comm nccl       ask for a NCCL communicator on the cpu backend (must be refused)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm.h"
#include "kernels/error.h"
#include "kernels/ops.h"
#include "optim/adamw.h"

static int failures = 0;
static int rank, world;
static const Ops *ops; // the backend whose buffers the collectives get

// A backend buffer holding a copy of host[bytes].
static void *on_backend(const void *host, size_t bytes) {
    void *buf = ops->alloc(bytes ? bytes : 1);
    if (bytes)
        ops->copy_from_host(buf, host, bytes);
    return buf;
}

// host[bytes] = the backend buffer's contents, and the buffer is freed.
static void back_to_host(void *host, void *buf, size_t bytes) {
    if (bytes)
        ops->copy_to_host(host, buf, bytes);
    ops->free(buf);
}

static void fail(const char *what, size_t index, double got, double expected) {
    fprintf(stderr, "prog_comm: rank %d of %d: %s: element %zu is %.17g, expected %.17g\n", rank,
            world, what, index, got, expected);
    failures++;
}

static void check_allreduce(Comm *comm) {
    size_t n = 1000;
    float *buf = hs_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)rank + 0.5f * (float)i; // small halves: every sum is exact
    float *dev = on_backend(buf, n * sizeof(float));
    comm_allreduce_sum(comm, dev, n);
    comm_allreduce_sum(comm, dev, 0); // an empty reduction is allowed and changes nothing
    back_to_host(buf, dev, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        double expected = world * (world - 1) / 2.0 + world * 0.5 * (double)i;
        if (buf[i] != expected) {
            fail("comm_allreduce_sum", i, buf[i], expected);
            break;
        }
    }
    free(buf);
}

// Odd sizes go as single bytes, multiples of 64 as blocks: check both.
static void check_allgather(Comm *comm, size_t bytes) {
    unsigned char *send = hs_malloc(bytes);
    unsigned char *recv = hs_malloc(bytes * world);
    for (size_t b = 0; b < bytes; b++)
        send[b] = (unsigned char)(rank * 31 + b);
    void *dev_send = on_backend(send, bytes);
    void *dev_recv = on_backend(recv, bytes * world);
    comm_allgather(comm, dev_send, dev_recv, bytes);
    ops->free(dev_send);
    back_to_host(recv, dev_recv, bytes * world);
    for (int r = 0; r < world; r++)
        for (size_t b = 0; b < bytes; b++) {
            unsigned char expected = (unsigned char)(r * 31 + b);
            if (recv[r * bytes + b] != expected) {
                fail("comm_allgather", r * bytes + b, recv[r * bytes + b], expected);
                r = world;
                break;
            }
        }
    free(send);
    free(recv);
}

// Rank r contributes 5r + 3 bytes (rank 0 also sends some), placed in reverse rank order
// with a gap, so counts, displacements and the send size all matter.
static void check_allgatherv(Comm *comm) {
    size_t *counts = hs_malloc((size_t)world * sizeof(size_t)); // [world]
    size_t *displs = hs_malloc((size_t)world * sizeof(size_t)); // [world]
    size_t total = 0;
    for (int r = world - 1; r >= 0; r--) {
        counts[r] = (size_t)(5 * r + 3);
        displs[r] = total + 2; // a 2-byte gap before each block
        total = displs[r] + counts[r];
    }
    unsigned char *send = hs_malloc(counts[rank]);
    for (size_t b = 0; b < counts[rank]; b++)
        send[b] = (unsigned char)(rank * 17 + b + 1);
    unsigned char *recv = hs_calloc(total, 1);
    void *dev_send = on_backend(send, counts[rank]);
    void *dev_recv = on_backend(recv, total);
    comm_allgatherv(comm, dev_send, counts[rank], dev_recv, counts, displs);
    ops->free(dev_send);
    back_to_host(recv, dev_recv, total);
    for (int r = 0; r < world; r++)
        for (size_t b = 0; b < counts[r]; b++) {
            unsigned char expected = (unsigned char)(r * 17 + b + 1);
            if (recv[displs[r] + b] != expected) {
                fail("comm_allgatherv", displs[r] + b, recv[displs[r] + b], expected);
                r = world;
                break;
            }
        }
    for (int r = 0; r < world; r++) // the gaps stay untouched
        if (recv[displs[r] - 1] != 0 || recv[displs[r] - 2] != 0)
            fail("comm_allgatherv gap", displs[r] - 1, recv[displs[r] - 1], 0);
    free(send), free(recv), free(counts), free(displs);
}

static void check_reduce_scatter(Comm *comm) {
    size_t n = 37;
    float *send = hs_malloc(n * world * sizeof(float));
    float *recv = hs_malloc(n * sizeof(float));
    for (int j = 0; j < world; j++)
        for (size_t i = 0; i < n; i++)
            send[j * n + i] = (float)(rank * 100 + j * 10) + (float)i;
    float *dev_send = on_backend(send, n * world * sizeof(float));
    float *dev_recv = on_backend(recv, n * sizeof(float));
    comm_reduce_scatter_sum(comm, dev_send, dev_recv, n);
    ops->free(dev_send);
    back_to_host(recv, dev_recv, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        // sum over r of (100 r + 10 rank + i)
        double expected = 100.0 * world * (world - 1) / 2.0 + world * (10.0 * rank + (double)i);
        if (recv[i] != expected) {
            fail("comm_reduce_scatter_sum", i, recv[i], expected);
            break;
        }
    }
    free(send);
    free(recv);
}

static void check_alltoall(Comm *comm) {
    size_t ints = 5, bytes = ints * sizeof(int32_t);
    int32_t *send = hs_malloc(bytes * world);
    int32_t *recv = hs_malloc(bytes * world);
    for (int j = 0; j < world; j++)
        for (size_t k = 0; k < ints; k++)
            send[j * ints + k] = rank * 10000 + j * 100 + (int32_t)k; // from rank to j
    void *dev_send = on_backend(send, bytes * world);
    void *dev_recv = on_backend(recv, bytes * world);
    comm_alltoall(comm, dev_send, dev_recv, bytes);
    ops->free(dev_send);
    back_to_host(recv, dev_recv, bytes * world);
    for (int i = 0; i < world; i++)
        for (size_t k = 0; k < ints; k++) {
            int32_t expected = i * 10000 + rank * 100 + (int32_t)k;
            if (recv[i * ints + k] != expected) {
                fail("comm_alltoall", i * ints + k, recv[i * ints + k], expected);
                i = world;
                break;
            }
        }
    free(send);
    free(recv);
}

// Entries rank `from` sends to rank `to`: uneven, and zero for some pairs (and always zero
// from rank 1 to rank 0).
static size_t pair_count(int from, int to) {
    if (from == 1 && to == 0)
        return 0;
    return (size_t)((from + 2 * to) % 3) * 3 + (size_t)(from == to);
}

static void check_alltoallv(Comm *comm) {
    size_t *send_counts = hs_calloc(world, sizeof(size_t));
    size_t *send_displs = hs_calloc(world, sizeof(size_t));
    size_t *recv_counts = hs_calloc(world, sizeof(size_t));
    size_t *recv_displs = hs_calloc(world, sizeof(size_t));
    // The send blocks are laid out in reverse rank order with a gap of one entry between
    // them, so the displacements matter; the receive side is in rank order with a one-entry
    // gap after each block, which must keep its contents (-7).
    size_t at = 0;
    for (int j = world - 1; j >= 0; j--) {
        send_counts[j] = pair_count(rank, j) * sizeof(int32_t);
        send_displs[j] = at;
        at += send_counts[j] + sizeof(int32_t);
    }
    size_t send_total = at;
    at = 0;
    for (int i = 0; i < world; i++) {
        recv_counts[i] = pair_count(i, rank) * sizeof(int32_t);
        recv_displs[i] = at;
        at += recv_counts[i] + sizeof(int32_t);
    }
    size_t recv_total = at;
    int32_t *send = hs_calloc(send_total / sizeof(int32_t) + 1, sizeof(int32_t));
    int32_t *recv = hs_calloc(recv_total / sizeof(int32_t) + 1, sizeof(int32_t));
    for (size_t e = 0; e < recv_total / sizeof(int32_t); e++)
        recv[e] = -7;
    for (int j = 0; j < world; j++)
        for (size_t k = 0; k < pair_count(rank, j); k++)
            send[send_displs[j] / sizeof(int32_t) + k] = rank * 10000 + j * 100 + (int32_t)k;
    void *dev_send = on_backend(send, send_total);
    void *dev_recv = on_backend(recv, recv_total);
    comm_alltoallv(comm, dev_send, send_counts, send_displs, dev_recv, recv_counts, recv_displs);
    ops->free(dev_send);
    back_to_host(recv, dev_recv, recv_total);
    for (int i = 0; i < world; i++)
        for (size_t k = 0; k < pair_count(i, rank); k++) {
            size_t e = recv_displs[i] / sizeof(int32_t) + k;
            int32_t expected = i * 10000 + rank * 100 + (int32_t)k;
            if (recv[e] != expected) {
                fail("comm_alltoallv", e, recv[e], expected);
                i = world;
                break;
            }
        }
    for (int i = 0; i < world; i++) {
        size_t gap = (recv_displs[i] + recv_counts[i]) / sizeof(int32_t);
        if (recv[gap] != -7)
            fail("comm_alltoallv gap", gap, recv[gap], -7);
    }
    free(send);
    free(recv);
    free(send_counts);
    free(send_displs);
    free(recv_counts);
    free(recv_displs);
}

static void check_broadcast(Comm *comm) {
    size_t bytes = 37;
    int root = world - 1;
    unsigned char buf[37];
    for (size_t b = 0; b < bytes; b++)
        buf[b] = (unsigned char)(rank == root ? 200 - b : 0);
    void *dev = on_backend(buf, bytes);
    comm_broadcast(comm, dev, bytes, root);
    back_to_host(buf, dev, bytes);
    for (size_t b = 0; b < bytes; b++)
        if (buf[b] != (unsigned char)(200 - b)) {
            fail("comm_broadcast", b, buf[b], 200 - b);
            break;
        }
}

static void check_host_scalars(Comm *comm) {
    double sums[2] = {1.5 * rank, 1.0};
    comm_host_sum_f64(comm, sums, 2);
    if (sums[0] != 1.5 * world * (world - 1) / 2.0)
        fail("comm_host_sum_f64", 0, sums[0], 1.5 * world * (world - 1) / 2.0);
    if (sums[1] != world)
        fail("comm_host_sum_f64", 1, sums[1], world);
    // Values beyond 2^32, so a 32-bit reduction would show.
    int64_t big = (int64_t)1 << 40;
    int64_t maxes[2] = {big + rank, -rank};
    comm_host_max_i64(comm, maxes, 2);
    if (maxes[0] != big + world - 1)
        fail("comm_host_max_i64", 0, (double)maxes[0], (double)(big + world - 1));
    if (maxes[1] != 0)
        fail("comm_host_max_i64", 1, (double)maxes[1], 0);
    int64_t mins[2] = {big + rank, -rank};
    comm_host_min_i64(comm, mins, 2);
    if (mins[0] != big)
        fail("comm_host_min_i64", 0, (double)mins[0], (double)big);
    if (mins[1] != -(world - 1))
        fail("comm_host_min_i64", 1, (double)mins[1], -(world - 1));

    size_t *send = hs_malloc(world * sizeof(size_t));
    size_t *recv = hs_malloc(world * sizeof(size_t));
    for (int j = 0; j < world; j++)
        send[j] = (size_t)(rank * 1000 + j);
    comm_host_alltoall(comm, send, recv, sizeof(size_t));
    for (int i = 0; i < world; i++)
        if (recv[i] != (size_t)(i * 1000 + rank)) {
            fail("comm_host_alltoall", i, (double)recv[i], i * 1000 + rank);
            break;
        }
    free(send);
    free(recv);
}

// The optimizer's global norm over ranks: a replicated dense span plus per-rank shards.
static void check_grad_norm(Comm *comm) {
    ParamTensor tensors[2] = {0};
    tensors[0] = (ParamTensor){.ndim = 1, .offset = 0, .numel = 3, .group = GROUP_DECAY};
    tensors[1] = (ParamTensor){.ndim = 1, .offset = 3, .numel = 2, .group = GROUP_SLOT_VALUES};
    ParamLayout layout = {.tensors = tensors,
                          .n_tensors = 2,
                          .n_dense = 3,
                          .n_local = 5,
                          .rank = rank,
                          .world = world};
    // Every rank holds a partial dense gradient of 1 per element: after the sum over ranks
    // each element is `world`. Shard elements are rank + 1.
    float grads[5] = {1, 1, 1, (float)(rank + 1), (float)(rank + 1)};
    float *dev_grads = on_backend(grads, sizeof(grads));
    grads_allreduce(comm, dev_grads, layout.n_dense);
    ops->copy_to_host(grads, dev_grads, sizeof(grads));
    for (int i = 0; i < 3; i++)
        if (grads[i] != world)
            fail("grads_allreduce", i, grads[i], world);
    if (grads[3] != rank + 1)
        fail("grads_allreduce touched the shard span", 3, grads[3], rank + 1);
    OptimConfig cfg = optim_config_default();
    Optimizer opt;
    optimizer_init(&opt, &cfg, ops, &layout);
    double norm = optimizer_grad_norm(&opt, dev_grads, comm);
    ops->free(dev_grads);
    double shard = 0;
    for (int r = 1; r <= world; r++)
        shard += 2.0 * r * r;
    double expected = sqrt(3.0 * world * world + shard);
    if (fabs(norm - expected) > 1e-6 * expected)
        fail("optimizer_grad_norm", 0, norm, expected);
    optimizer_free(&opt);
}

int main(int argc, char **argv) {
    CommInfo info;
    dist_init(&argc, &argv, &info);
    rank = info.rank;
    world = info.world;
    if (info.local_rank < 0 || info.local_rank >= info.local_world ||
        info.local_world > info.world) {
        fprintf(stderr, "prog_comm: bad local rank %d of %d (world %d)\n", info.local_rank,
                info.local_world, info.world);
        failures++;
    }
    const char *mode = argc > 1 ? argv[1] : "cpu";
    ops = ops_cpu();
    if (strcmp(mode, "cuda") == 0) {
        ops = ops_cuda();
        if (!ops) {
            if (rank == 0)
                printf("prog_comm: no cuda backend or no GPU here: skipped\n");
            dist_finalize();
            return 77;
        }
        ops->init(info.local_rank % ops_cuda_device_count());
    }
    if (strcmp(mode, "nccl") == 0) {
        Comm *nccl = comm_create(COMM_NCCL, ops_cpu()); // must end the job with a message
        comm_destroy(nccl);
        dist_finalize();
        return 0;
    }
    Comm *comm = comm_create(COMM_MPI, ops);
    if (comm_rank(comm) != rank || comm_world(comm) != world) {
        fprintf(stderr, "prog_comm: comm says rank %d of %d, MPI says %d of %d\n", comm_rank(comm),
                comm_world(comm), rank, world);
        failures++;
    }
    check_allreduce(comm);
    check_allgather(comm, 13);
    check_allgather(comm, 128);
    check_allgatherv(comm);
    check_reduce_scatter(comm);
    check_alltoall(comm);
    check_alltoallv(comm);
    check_broadcast(comm);
    check_host_scalars(comm);
    check_grad_norm(comm);
    comm_barrier(comm);

    // Every rank must pass: a failure on one rank fails the run.
    double total_failures = failures;
    comm_host_sum_f64(comm, &total_failures, 1);
    comm_destroy(comm);
    if (rank == 0)
        printf("prog_comm: %s backend, world %d: %s (%g failures)\n", ops->name, world,
               total_failures == 0 ? "all collectives correct" : "FAILED", total_failures);
    dist_finalize();
    return total_failures == 0 ? 0 : 1;
}
