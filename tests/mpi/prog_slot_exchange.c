// The slot exchange at any world size against a single-rank computation on the whole table.
//
// Every rank builds the same global keys [S, R] and values [S, H] (same seed) and keeps its
// shard; each rank draws its own pointers. Forward: top_s, top_i, krows and the value rows
// as the slot read reads them (vrows: row n*K + k is table[idx[n*K + k]] of the returned
// SlotValueRows) of the distributed exchange must be bitwise equal to slot_exchange on one
// rank holding the whole table (computed locally on every rank). Backward: row gradients
// added where slot_exchange_value_grads says (as the slot read's backward adds them), then
// slot_exchange_backward; the gathered shard gradients must equal the sum over ranks of the
// single-rank ones (within 1e-6: only the order of the sums differs). Refetch:
// slot_exchange_refetch of each layer, run after both forwards, must return that layer's
// krows and vrows bitwise. Two layers with different pointers check that each layer keeps
// its own routing.
//
//   prog_slot_exchange                 the checks above on the cpu backend
//   prog_slot_exchange cuda            the same with the exchange on the cuda backend (device
//                                      buffers, MPI staged through the host); 77: no GPU
//   prog_slot_exchange bad-slots S     slot_exchange_create with S slots (must fail clearly
//                                      when the world does not divide S)
//   prog_slot_exchange bad-layout S    param_layout_build of the tiny model with S slots
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm.h"
#include "dist/slot_exchange.h"
#include "kernels/error.h"
#include "kernels/ops.h"
#include "model/params.h"
#include "tests/testutil.h"

enum { N = 7, R = 8, H = 12, K = 4, S = 64, LAYERS = 2 };

static int rank, world;
static int failures = 0;
static const Ops *ops; // the backend the exchange runs on; the checks run on the host

// The value rows a SlotValueRows points at, in token order, on the host: vrows [N*K, H].
// Returns the view's indices (the exchange's, valid until it is destroyed).
static const int32_t *value_rows_to_host(SlotValueRows view, float *vrows) {
    size_t nk = (size_t)N * K;
    float *d_vrows = ops->alloc(nk * H * sizeof(float));
    ops->gather_rows(d_vrows, view.table, view.idx, (int)nk, H, 0);
    ops->copy_to_host(vrows, d_vrows, nk * H * sizeof(float));
    ops->free(d_vrows);
    return view.idx;
}

// slot_exchange_forward on backend copies of the host inputs, the outputs back on the host.
// keys [rows, R], values [rows, H] host. Returns the layer's value row indices.
static const int32_t *forward_on_backend(SlotExchange *x, int layer, const float *p,
                                         const float *keys, const float *values, int rows,
                                         float *top_s, int32_t *top_i, float *krows, float *vrows) {
    size_t nk = (size_t)N * K;
    float *d_p = ops->alloc((size_t)N * R * sizeof(float));
    float *d_keys = ops->alloc((size_t)rows * R * sizeof(float));
    float *d_values = ops->alloc((size_t)rows * H * sizeof(float));
    float *d_top_s = ops->alloc(nk * sizeof(float));
    int32_t *d_top_i = ops->alloc(nk * sizeof(int32_t));
    float *d_krows = ops->alloc(nk * R * sizeof(float));
    float *d_received = ops->alloc(nk * H * sizeof(float));
    ops->copy_from_host(d_p, p, (size_t)N * R * sizeof(float));
    ops->copy_from_host(d_keys, keys, (size_t)rows * R * sizeof(float));
    ops->copy_from_host(d_values, values, (size_t)rows * H * sizeof(float));
    SlotValueRows view = slot_exchange_forward(x, layer, d_p, d_keys, d_values, d_top_s, d_top_i,
                                               d_krows, d_received);
    ops->copy_to_host(top_s, d_top_s, nk * sizeof(float));
    ops->copy_to_host(top_i, d_top_i, nk * sizeof(int32_t));
    ops->copy_to_host(krows, d_krows, nk * R * sizeof(float));
    const int32_t *idx = value_rows_to_host(view, vrows);
    void *all[] = {d_p, d_keys, d_values, d_top_s, d_top_i, d_krows, d_received};
    for (int i = 0; i < 7; i++)
        ops->free(all[i]);
    return idx;
}

// slot_exchange_refetch on backend copies of the shard; krows [N*K, R], vrows [N*K, H] host.
static void refetch_on_backend(SlotExchange *x, int layer, const float *keys, const float *values,
                               int rows, float *krows, float *vrows) {
    size_t nk = (size_t)N * K;
    float *d_keys = ops->alloc((size_t)rows * R * sizeof(float));
    float *d_values = ops->alloc((size_t)rows * H * sizeof(float));
    float *d_krows = ops->alloc(nk * R * sizeof(float));
    float *d_received = ops->alloc(nk * H * sizeof(float));
    ops->copy_from_host(d_keys, keys, (size_t)rows * R * sizeof(float));
    ops->copy_from_host(d_values, values, (size_t)rows * H * sizeof(float));
    SlotValueRows view = slot_exchange_refetch(x, layer, d_keys, d_values, d_krows, d_received);
    ops->copy_to_host(krows, d_krows, nk * R * sizeof(float));
    value_rows_to_host(view, vrows);
    void *all[] = {d_keys, d_values, d_krows, d_received};
    for (int i = 0; i < 4; i++)
        ops->free(all[i]);
}

// The backward on backend copies, as the model runs it: the value rows' gradients dvrows
// [N*K, H] (token order) added where slot_exchange_value_grads says, at the layer's value
// row indices idx (what ops->slot_read_backward does), then slot_exchange_backward.
// dkeys [rows, R], dvalues [rows, H] host, added to.
static void backward_on_backend(SlotExchange *x, int layer, const int32_t *idx, const float *dkrows,
                                const float *dvrows, float *dkeys, float *dvalues, int rows) {
    size_t nk = (size_t)N * K;
    float *d_dkrows = ops->alloc(nk * R * sizeof(float));
    float *d_dvrows = ops->alloc(nk * H * sizeof(float));
    float *d_dkeys = ops->alloc((size_t)rows * R * sizeof(float));
    float *d_dvalues = ops->alloc((size_t)rows * H * sizeof(float));
    ops->copy_from_host(d_dkrows, dkrows, nk * R * sizeof(float));
    ops->copy_from_host(d_dvrows, dvrows, nk * H * sizeof(float));
    ops->copy_from_host(d_dkeys, dkeys, (size_t)rows * R * sizeof(float));
    ops->copy_from_host(d_dvalues, dvalues, (size_t)rows * H * sizeof(float));
    float *dvalue_rows = slot_exchange_value_grads(x, layer, d_dvalues);
    ops->scatter_add_rows(dvalue_rows, d_dvrows, idx, N * K, H, 0);
    slot_exchange_backward(x, layer, d_dkrows, d_dkeys, d_dvalues);
    ops->copy_to_host(dkeys, d_dkeys, (size_t)rows * R * sizeof(float));
    ops->copy_to_host(dvalues, d_dvalues, (size_t)rows * H * sizeof(float));
    void *all[] = {d_dkrows, d_dvrows, d_dkeys, d_dvalues};
    for (int i = 0; i < 4; i++)
        ops->free(all[i]);
}

// Bitwise comparison of two buffers of `count` elements of `size` bytes.
static void expect_identical(const char *what, int layer, const void *got, const void *want,
                             size_t count, size_t size) {
    const unsigned char *a = got, *b = want;
    for (size_t i = 0; i < count; i++)
        if (memcmp(a + i * size, b + i * size, size) != 0) {
            fprintf(stderr,
                    "prog_slot_exchange: rank %d of %d, layer %d: %s differs at element %zu\n",
                    rank, world, layer, what, i);
            failures++;
            return;
        }
}

static void expect_close(const char *what, int layer, const float *got, const float *want,
                         size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-6f + 1e-6f * fabsf(want[i]))) {
            fprintf(stderr,
                    "prog_slot_exchange: rank %d of %d, layer %d: %s[%zu] = %.9g, expected %.9g\n",
                    rank, world, layer, what, i, got[i], want[i]);
            failures++;
            return;
        }
}

// One layer's global table: keys [S, R], values [S, H]. The last four key rows repeat the
// first four, so equal scores from different shards must resolve to the lower slot.
static void build_table(int layer, float *keys, float *values) {
    TestRng rng = test_rng(1000 + layer);
    test_fill_normal(&rng, keys, (size_t)S * R, 1.0f);
    test_fill_normal(&rng, values, (size_t)S * H, 1.0f);
    memcpy(keys + (size_t)(S - 4) * R, keys, 4 * R * sizeof(float));
}

// This rank's pointers for one layer: random, plus one all-zero token whose scores tie
// everywhere (its top-K is slots 0..K-1, all on rank 0: an uneven request pattern).
static void build_pointers(int layer, float *p) {
    TestRng rng = test_rng(2000 + 10 * rank + layer);
    test_fill_normal(&rng, p, (size_t)N * R, 1.0f);
    memset(p + (size_t)(N - 1) * R, 0, R * sizeof(float));
}

// comm: the exchange's communicator (on `ops`); host_comm: a cpu one for the checks.
static void run_checks(Comm *comm, Comm *host_comm) {
    int rows = S / world, first = rank * rows;
    float *keys = hs_malloc((size_t)LAYERS * S * R * sizeof(float));   // [L, S, R]
    float *values = hs_malloc((size_t)LAYERS * S * H * sizeof(float)); // [L, S, H]
    float *p = hs_malloc((size_t)LAYERS * N * R * sizeof(float));      // [L, N, R]
    for (int l = 0; l < LAYERS; l++) {
        build_table(l, keys + (size_t)l * S * R, values + (size_t)l * S * H);
        build_pointers(l, p + (size_t)l * N * R);
    }
    // Outputs of the distributed exchange (d) and of the single-rank reference (s), per layer.
    size_t nk = (size_t)N * K;
    float *top_s_d = hs_malloc(LAYERS * nk * sizeof(float)),
          *top_s_s = hs_malloc(LAYERS * nk * sizeof(float));
    int32_t *top_i_d = hs_malloc(LAYERS * nk * sizeof(int32_t)),
            *top_i_s = hs_malloc(LAYERS * nk * sizeof(int32_t));
    float *krows_d = hs_malloc(LAYERS * nk * R * sizeof(float)),
          *krows_s = hs_malloc(LAYERS * nk * R * sizeof(float));
    float *vrows_d = hs_malloc(LAYERS * nk * H * sizeof(float)),
          *vrows_s = hs_malloc(LAYERS * nk * H * sizeof(float));

    SlotExchange *dist = slot_exchange_create(comm, ops, N, R, H, K, S, LAYERS);
    SlotExchange *single = slot_exchange_create(NULL, ops, N, R, H, K, S, LAYERS);
    const int32_t *idx_d[LAYERS], *idx_s[LAYERS]; // each layer's value row indices
    for (int l = 0; l < LAYERS; l++) {
        const float *k_l = keys + (size_t)l * S * R, *v_l = values + (size_t)l * S * H;
        const float *p_l = p + (size_t)l * N * R;
        idx_d[l] = forward_on_backend(dist, l, p_l, k_l + (size_t)first * R,
                                      v_l + (size_t)first * H, rows, top_s_d + l * nk,
                                      top_i_d + l * nk, krows_d + l * nk * R, vrows_d + l * nk * H);
        idx_s[l] = forward_on_backend(single, l, p_l, k_l, v_l, S, top_s_s + l * nk,
                                      top_i_s + l * nk, krows_s + l * nk * R, vrows_s + l * nk * H);
    }
    for (int l = 0; l < LAYERS; l++) {
        expect_identical("top_s", l, top_s_d + l * nk, top_s_s + l * nk, nk, sizeof(float));
        expect_identical("top_i", l, top_i_d + l * nk, top_i_s + l * nk, nk, sizeof(int32_t));
        expect_identical("krows", l, krows_d + l * nk * R, krows_s + l * nk * R, nk * R,
                         sizeof(float));
        expect_identical("vrows", l, vrows_d + l * nk * H, vrows_s + l * nk * H, nk * H,
                         sizeof(float));
        // The all-zero token ties on every slot: the lowest K slots win.
        for (int k = 0; k < K; k++)
            if (top_i_d[l * nk + (N - 1) * K + k] != k) {
                fprintf(stderr,
                        "prog_slot_exchange: rank %d: tie order broken for the zero token\n", rank);
                failures++;
                break;
            }
    }

    // Refetch in the backward's order (last layer first): every layer's rows come back bit
    // for bit, whichever layer's route the exchange last used.
    float *krows_again = hs_malloc(nk * R * sizeof(float));
    float *vrows_again = hs_malloc(nk * H * sizeof(float));
    for (int l = LAYERS - 1; l >= 0; l--) {
        const float *k_l = keys + (size_t)l * S * R, *v_l = values + (size_t)l * S * H;
        refetch_on_backend(dist, l, k_l + (size_t)first * R, v_l + (size_t)first * H, rows,
                           krows_again, vrows_again);
        expect_identical("refetched krows", l, krows_again, krows_d + l * nk * R, nk * R,
                         sizeof(float));
        expect_identical("refetched vrows", l, vrows_again, vrows_d + l * nk * H, nk * H,
                         sizeof(float));
        refetch_on_backend(single, l, k_l, v_l, S, krows_again, vrows_again);
        expect_identical("refetched krows, one rank", l, krows_again, krows_s + l * nk * R, nk * R,
                         sizeof(float));
        expect_identical("refetched vrows, one rank", l, vrows_again, vrows_s + l * nk * H, nk * H,
                         sizeof(float));
    }
    free(krows_again);
    free(vrows_again);

    // Backward, in the model's order (last layer first), into gradients that start non-zero
    // (the exchange adds).
    float *dkrows = hs_malloc(nk * R * sizeof(float)), *dvrows = hs_malloc(nk * H * sizeof(float));
    float *dkeys_shard = hs_malloc((size_t)rows * R * sizeof(float));
    float *dvalues_shard = hs_malloc((size_t)rows * H * sizeof(float));
    float *dkeys_full = hs_malloc((size_t)S * R * sizeof(float));
    float *dvalues_full = hs_malloc((size_t)S * H * sizeof(float));
    float *dkeys_gathered = hs_malloc((size_t)S * R * sizeof(float));
    float *dvalues_gathered = hs_malloc((size_t)S * H * sizeof(float));
    for (int l = LAYERS - 1; l >= 0; l--) {
        TestRng rng = test_rng(3000 + 10 * rank + l);
        test_fill_normal(&rng, dkrows, nk * R, 1.0f);
        test_fill_normal(&rng, dvrows, nk * H, 1.0f);
        for (int i = 0; i < rows * R; i++)
            dkeys_shard[i] = 0.25f;
        for (int i = 0; i < rows * H; i++)
            dvalues_shard[i] = 0.25f;
        memset(dkeys_full, 0, (size_t)S * R * sizeof(float));
        memset(dvalues_full, 0, (size_t)S * H * sizeof(float));
        backward_on_backend(dist, l, idx_d[l], dkrows, dvrows, dkeys_shard, dvalues_shard, rows);
        backward_on_backend(single, l, idx_s[l], dkrows, dvrows, dkeys_full, dvalues_full, S);
        // Expected: 0.25 + the sum over ranks of each rank's single-rank gradient.
        comm_allreduce_sum(host_comm, dkeys_full, (size_t)S * R);
        comm_allreduce_sum(host_comm, dvalues_full, (size_t)S * H);
        for (int i = 0; i < S * R; i++)
            dkeys_full[i] += 0.25f;
        for (int i = 0; i < S * H; i++)
            dvalues_full[i] += 0.25f;
        comm_allgather(host_comm, dkeys_shard, dkeys_gathered, (size_t)rows * R * sizeof(float));
        comm_allgather(host_comm, dvalues_shard, dvalues_gathered,
                       (size_t)rows * H * sizeof(float));
        expect_close("dkeys", l, dkeys_gathered, dkeys_full, (size_t)S * R);
        expect_close("dvalues", l, dvalues_gathered, dvalues_full, (size_t)S * H);
    }

    // Traffic: nothing with one rank; otherwise what leaves the ranks arrives at the ranks.
    double sent, received;
    slot_exchange_bytes(dist, &sent, &received);
    double totals[2] = {sent, received};
    comm_host_sum_f64(host_comm, totals, 2);
    if (world == 1 && (sent != 0 || received != 0)) {
        fprintf(stderr, "prog_slot_exchange: one rank moved %g/%g bytes\n", sent, received);
        failures++;
    }
    if (world > 1 && (sent <= 0 || totals[0] != totals[1])) {
        fprintf(stderr,
                "prog_slot_exchange: rank %d sent %g bytes; all ranks sent %g, received %g\n", rank,
                sent, totals[0], totals[1]);
        failures++;
    }
    slot_exchange_destroy(dist);
    slot_exchange_destroy(single);
    free(keys), free(values), free(p);
    free(top_s_d), free(top_s_s), free(top_i_d), free(top_i_s);
    free(krows_d), free(krows_s), free(vrows_d), free(vrows_s);
    free(dkrows), free(dvrows), free(dkeys_shard), free(dvalues_shard);
    free(dkeys_full), free(dvalues_full), free(dkeys_gathered), free(dvalues_gathered);
}

int main(int argc, char **argv) {
    CommInfo info;
    dist_init(&argc, &argv, &info);
    rank = info.rank;
    world = info.world;
    ops = ops_cpu();
    if (argc == 2 && strcmp(argv[1], "cuda") == 0) {
        ops = ops_cuda();
        if (!ops) {
            if (rank == 0)
                printf("prog_slot_exchange: no cuda backend or no GPU here: skipped\n");
            dist_finalize();
            return 77;
        }
        ops->init(info.local_rank % ops_cuda_device_count());
    }
    Comm *comm = comm_create(COMM_MPI, ops_cpu());
    Comm *exchange_comm = ops == ops_cpu() ? comm : comm_create(COMM_MPI, ops);
    if (argc == 3 && strcmp(argv[1], "bad-slots") == 0) {
        SlotExchange *x = slot_exchange_create(comm, ops_cpu(), N, R, H, K, atoi(argv[2]), 1);
        slot_exchange_destroy(x);
    } else if (argc == 3 && strcmp(argv[1], "bad-layout") == 0) {
        ModelConfig cfg = model_config_tiny();
        cfg.n_slots = atoi(argv[2]);
        ParamLayout layout;
        param_layout_build(&layout, &cfg, rank, world);
        param_layout_free(&layout);
    } else if (argc == 1 || (argc == 2 && strcmp(argv[1], "cuda") == 0)) {
        run_checks(exchange_comm, comm);
    } else {
        hs_fatal("usage: prog_slot_exchange [bad-slots S | bad-layout S]");
    }
    double total_failures = failures;
    comm_host_sum_f64(comm, &total_failures, 1);
    if (exchange_comm != comm)
        comm_destroy(exchange_comm);
    comm_destroy(comm);
    if (rank == 0)
        printf("prog_slot_exchange: %s backend, world %d: %s\n", ops->name, world,
               total_failures == 0 ? "distributed exchange equals the single-rank one" : "FAILED");
    dist_finalize();
    return total_failures == 0 ? 0 : 1;
}
