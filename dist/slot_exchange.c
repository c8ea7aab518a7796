// The slot exchange (see slot_exchange.h): expert-parallel top-K slot memory.
// This file holds the object and the single-rank path; the multi-rank path follows.
#include "dist/slot_exchange.h"

#include <stdlib.h>

#include "kernels/error.h"

struct SlotExchange {
    Comm *comm; // NULL: a single rank
    const Ops *ops;
    int N, R, H, K, S, n_layers;
    int rank, world;
    int rows_local; // S / world slots held here
    // Routing of each layer, saved by the forward for the backward.
    int32_t **layer_top_i; // [n_layers] -> backend [N * K] global slot ids (single rank)
    double bytes_sent, bytes_received;
};

SlotExchange *slot_exchange_create(Comm *comm, const Ops *ops, int N, int R, int H, int K, int S,
                                   int n_layers) {
    if (N <= 0 || R <= 0 || H <= 0 || K <= 0 || S <= 0 || n_layers <= 0)
        hs_fatal("slot exchange: bad sizes N=%d R=%d H=%d K=%d S=%d layers=%d", N, R, H, K, S,
                 n_layers);
    SlotExchange *x = hs_calloc(1, sizeof(SlotExchange));
    x->comm = comm;
    x->ops = ops;
    x->N = N, x->R = R, x->H = H, x->K = K, x->S = S, x->n_layers = n_layers;
    x->rank = comm ? comm_rank(comm) : 0;
    x->world = comm ? comm_world(comm) : 1;
    if (S % x->world != 0)
        hs_fatal("slot exchange: n_slots=%d is not divisible by the number of ranks %d", S,
                 x->world);
    x->rows_local = S / x->world;
    if (x->rows_local < K)
        hs_fatal("slot exchange: each rank holds n_slots/ranks=%d slots, fewer than top_k=%d",
                 x->rows_local, K);
    if (x->world > 1)
        hs_fatal("slot exchange: the multi-rank path is not built yet (ranks=%d)", x->world);
    x->layer_top_i = hs_calloc((size_t)n_layers, sizeof(int32_t *));
    for (int l = 0; l < n_layers; l++)
        x->layer_top_i[l] = ops->alloc((size_t)N * K * sizeof(int32_t));
    return x;
}

void slot_exchange_destroy(SlotExchange *x) {
    if (!x)
        return;
    for (int l = 0; l < x->n_layers; l++)
        x->ops->free(x->layer_top_i[l]);
    free(x->layer_top_i);
    free(x);
}

static void check_layer(const SlotExchange *x, int layer) {
    if (layer < 0 || layer >= x->n_layers)
        hs_fatal("slot exchange: layer %d out of range [0, %d)", layer, x->n_layers);
}

void slot_exchange_forward(SlotExchange *x, int layer, const float *p, const float *keys,
                           const float *values, float *top_s, int32_t *top_i, float *krows,
                           float *vrows) {
    check_layer(x, layer);
    if (layer == 0)
        x->bytes_sent = x->bytes_received = 0;
    const Ops *ops = x->ops;
    int NK = x->N * x->K;
    ops->slot_topk(top_s, top_i, p, keys, x->N, x->R, x->rows_local, 0, x->K);
    ops->gather_rows(krows, keys, top_i, NK, x->R, 0);
    ops->gather_rows(vrows, values, top_i, NK, x->H, 0);
    ops->copy(x->layer_top_i[layer], top_i, (size_t)NK * sizeof(int32_t));
}

void slot_exchange_backward(SlotExchange *x, int layer, const float *dkrows, const float *dvrows,
                            float *dkeys, float *dvalues) {
    check_layer(x, layer);
    const Ops *ops = x->ops;
    int NK = x->N * x->K;
    ops->scatter_add_rows(dkeys, dkrows, x->layer_top_i[layer], NK, x->R, 0);
    ops->scatter_add_rows(dvalues, dvrows, x->layer_top_i[layer], NK, x->H, 0);
}

void slot_exchange_bytes(const SlotExchange *x, double *sent, double *received) {
    *sent = x->bytes_sent;
    *received = x->bytes_received;
}
