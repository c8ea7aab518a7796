// The slot exchange (see slot_exchange.h): expert-parallel top-K slot memory.
//
// Rank r owns global slots [r*S/P, (r+1)*S/P). The forward of one layer, for P > 1:
//   1. all-gather the pointers p of every rank:          all_p [P*N, R]
//   2. score all P*N pointers against the local shard and keep the local top-K; block j of
//      the candidates belongs to rank j's tokens:         cand_local [P*N, K]
//   3. all-to-all: every rank gets the P candidate lists of its own tokens, and merges them
//      into the global top-K (ops->slot_topk_merge).     top_s, top_i [N, K]
//   4. group the N*K chosen slots by owner rank, send the slot ids to their owners, which
//      gather the key and value rows and send them back; unpermute the key rows into krows.
//      The value rows stay in the order they arrived in: the slot read reads them there,
//      through route->inv (token order -> arrival order), which saves a pass over them.
// The backward sends the row gradients to the owners along the same routes in reverse and
// the owners scatter-add them into their shard gradients (the slot read's backward has put
// the value rows' gradients in request order already). A backward that did not keep the
// rows may fetch them again along the saved route first (slot_exchange_refetch: step 4's
// rows, without its ids).
//
// Exactness: the candidate scores of step 2 are the same dot products, in the same order,
// as a single rank scoring the whole table, and the merge keeps the same ties, so top_s,
// top_i, krows and the value rows read are bitwise identical to the single-rank result.
#include "dist/slot_exchange.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"

// The routing of one layer, saved by the forward for the backward.
typedef struct LayerRoute {
    // Slot ids whose gradients this rank adds into its shard: with P = 1 the N*K chosen
    // slots in token order; with P > 1 the ids the other ranks asked us for, grouped by
    // requesting rank.
    int32_t *ids; // backend [ids_cap]
    size_t ids_cap, n_ids;
    // P > 1 only.
    int32_t *perm;        // backend [N*K]: request position m (grouped by owner) -> entry n*K+k
    int32_t *inv;         // backend [N*K]: entry -> request position (the inverse of perm)
    size_t *req_counts;   // host [P]: entries this rank asked of each owner
    size_t *serve_counts; // host [P]: entries each rank asked of us
} LayerRoute;

struct SlotExchange {
    Comm *comm; // NULL: a single rank
    const Ops *ops;
    int N, R, H, K, S, n_layers;
    int rank, world;
    int rows_local;     // S / world slots held here
    int row_offset;     // rank * rows_local: first global slot held here
    LayerRoute *routes; // [n_layers]

    // Scratch of the multi-rank path, shared by the layers (backend unless said host).
    float *all_p;          // [P*N, R] every rank's pointers
    float *cand_s_local;   // [P*N, K] local shard's best scores for every rank's tokens
    int32_t *cand_i_local; // [P*N, K]
    float *cand_s;         // [P, N, K] candidates of our tokens from every rank
    int32_t *cand_i;       // [P, N, K]
    int32_t *req_ids;      // [N*K] chosen slot ids grouped by owner
    float *rows_k;         // [N*K, R] key rows (or their gradients) in request order
    float *rows_v;         // [N*K, H] value row gradients in request order
    float *serve_k;        // [serve_cap, R] rows served to (or gradients from) other ranks
    float *serve_v;        // [serve_cap, H]
    size_t serve_cap;
    int32_t *host_top_i;                                         // host [N*K]
    int32_t *host_req_ids;                                       // host [N*K]
    int32_t *host_perm;                                          // host [N*K]
    int32_t *host_inv;                                           // host [N*K]
    size_t *send_bytes, *send_displs, *recv_bytes, *recv_displs; // host [P] each

    double bytes_sent, bytes_received;
};

// ---- creation --------------------------------------------------------------------------

static void alloc_multi_rank_scratch(SlotExchange *x) {
    const Ops *ops = x->ops;
    size_t P = (size_t)x->world, N = (size_t)x->N, K = (size_t)x->K;
    size_t NK = N * K;
    x->all_p = ops->alloc(P * N * x->R * sizeof(float));
    x->cand_s_local = ops->alloc(P * NK * sizeof(float));
    x->cand_i_local = ops->alloc(P * NK * sizeof(int32_t));
    x->cand_s = ops->alloc(P * NK * sizeof(float));
    x->cand_i = ops->alloc(P * NK * sizeof(int32_t));
    x->req_ids = ops->alloc(NK * sizeof(int32_t));
    x->rows_k = ops->alloc(NK * x->R * sizeof(float));
    x->rows_v = ops->alloc(NK * x->H * sizeof(float));
    x->host_top_i = hs_malloc(NK * sizeof(int32_t));
    x->host_req_ids = hs_malloc(NK * sizeof(int32_t));
    x->host_perm = hs_malloc(NK * sizeof(int32_t));
    x->host_inv = hs_malloc(NK * sizeof(int32_t));
    x->send_bytes = hs_calloc(P, sizeof(size_t));
    x->send_displs = hs_calloc(P, sizeof(size_t));
    x->recv_bytes = hs_calloc(P, sizeof(size_t));
    x->recv_displs = hs_calloc(P, sizeof(size_t));
    for (int l = 0; l < x->n_layers; l++) {
        x->routes[l].perm = ops->alloc(NK * sizeof(int32_t));
        x->routes[l].inv = ops->alloc(NK * sizeof(int32_t));
        x->routes[l].req_counts = hs_calloc(P, sizeof(size_t));
        x->routes[l].serve_counts = hs_calloc(P, sizeof(size_t));
    }
}

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
    x->row_offset = x->rank * x->rows_local;
    // A shard may hold fewer than K slots (slot_topk pads its list), the whole table may not.
    if (S < K)
        hs_fatal("slot exchange: n_slots=%d is smaller than top_k=%d", S, K);
    x->routes = hs_calloc((size_t)n_layers, sizeof(LayerRoute));
    if (x->world == 1) {
        for (int l = 0; l < n_layers; l++) {
            x->routes[l].ids_cap = (size_t)N * K;
            x->routes[l].ids = ops->alloc((size_t)N * K * sizeof(int32_t));
        }
    } else {
        alloc_multi_rank_scratch(x);
    }
    return x;
}

void slot_exchange_destroy(SlotExchange *x) {
    if (!x)
        return;
    const Ops *ops = x->ops;
    for (int l = 0; l < x->n_layers; l++) {
        LayerRoute *route = &x->routes[l];
        if (route->ids)
            ops->free(route->ids);
        if (route->perm)
            ops->free(route->perm);
        if (route->inv)
            ops->free(route->inv);
        free(route->req_counts);
        free(route->serve_counts);
    }
    free(x->routes);
    void *backend[] = {x->all_p,   x->cand_s_local, x->cand_i_local, x->cand_s,  x->cand_i,
                       x->req_ids, x->rows_k,       x->rows_v,       x->serve_k, x->serve_v};
    for (size_t i = 0; i < sizeof(backend) / sizeof(backend[0]); i++)
        if (backend[i])
            ops->free(backend[i]);
    free(x->host_top_i);
    free(x->host_req_ids);
    free(x->host_perm);
    free(x->host_inv);
    free(x->send_bytes);
    free(x->send_displs);
    free(x->recv_bytes);
    free(x->recv_displs);
    free(x);
}

static void check_layer(const SlotExchange *x, int layer) {
    if (layer < 0 || layer >= x->n_layers)
        hs_fatal("slot exchange: layer %d out of range [0, %d)", layer, x->n_layers);
}

// ---- helpers of the multi-rank path ------------------------------------------------------

// Byte counts and displacements of `counts` entries of `entry_bytes` each, into out/displs.
static void byte_layout(size_t *out, size_t *displs, const size_t *counts, int P,
                        size_t entry_bytes) {
    size_t at = 0;
    for (int j = 0; j < P; j++) {
        out[j] = counts[j] * entry_bytes;
        displs[j] = at;
        at += out[j];
    }
}

// An alltoallv of entries of entry_bytes each: send_counts[j] entries to rank j,
// recv_counts[i] entries from rank i, both packed by rank. Counts the bytes that leave and
// reach this rank (the block to ourselves does not travel).
static void exchange_entries(SlotExchange *x, const void *send, const size_t *send_counts,
                             void *recv, const size_t *recv_counts, size_t entry_bytes) {
    int P = x->world;
    byte_layout(x->send_bytes, x->send_displs, send_counts, P, entry_bytes);
    byte_layout(x->recv_bytes, x->recv_displs, recv_counts, P, entry_bytes);
    comm_alltoallv(x->comm, send, x->send_bytes, x->send_displs, recv, x->recv_bytes,
                   x->recv_displs);
    for (int j = 0; j < P; j++) {
        if (j == x->rank)
            continue;
        x->bytes_sent += (double)x->send_bytes[j];
        x->bytes_received += (double)x->recv_bytes[j];
    }
}

// Make room for n served entries (ids of this layer, shared row buffers).
static void reserve_served(SlotExchange *x, LayerRoute *route, size_t n) {
    const Ops *ops = x->ops;
    size_t want = n ? n : 1;
    if (route->ids_cap < want) {
        if (route->ids)
            ops->free(route->ids);
        route->ids = ops->alloc(want * sizeof(int32_t));
        route->ids_cap = want;
    }
    if (x->serve_cap < want) {
        if (x->serve_k)
            ops->free(x->serve_k);
        if (x->serve_v)
            ops->free(x->serve_v);
        x->serve_k = ops->alloc(want * x->R * sizeof(float));
        x->serve_v = ops->alloc(want * x->H * sizeof(float));
        x->serve_cap = want;
    }
}

// Steps 1-3: global top-K of our tokens from every shard's candidates.
static void global_topk(SlotExchange *x, const float *p, const float *keys, float *top_s,
                        int32_t *top_i) {
    const Ops *ops = x->ops;
    int P = x->world, N = x->N, K = x->K, R = x->R;
    size_t p_bytes = (size_t)N * R * sizeof(float);
    comm_allgather(x->comm, p, x->all_p, p_bytes);
    ops->slot_topk(x->cand_s_local, x->cand_i_local, x->all_p, keys, P * N, R, x->rows_local,
                   x->row_offset, K);
    size_t block = (size_t)N * K * sizeof(float); // = N*K int32 as well
    comm_alltoall(x->comm, x->cand_s_local, x->cand_s, block);
    comm_alltoall(x->comm, x->cand_i_local, x->cand_i, block);
    ops->slot_topk_merge(top_s, top_i, x->cand_s, x->cand_i, P, N, K);
    double others = (double)(P - 1);
    x->bytes_sent += others * ((double)p_bytes + 2.0 * (double)block);
    x->bytes_received += others * ((double)p_bytes + 2.0 * (double)block);
}

// Group the chosen entries by owner rank (a stable counting sort, so requests to one owner
// stay in token order): host_req_ids, host_perm (position -> entry), host_inv, counts.
static void group_by_owner(SlotExchange *x, size_t *req_counts) {
    int P = x->world;
    int NK = x->N * x->K;
    memset(req_counts, 0, (size_t)P * sizeof(size_t));
    for (int e = 0; e < NK; e++) {
        int32_t id = x->host_top_i[e];
        if (id < 0 || id >= x->S)
            hs_fatal("slot exchange: slot id %d out of range [0, %d)", id, x->S);
        req_counts[id / x->rows_local]++;
    }
    size_t *next = x->send_displs; // host scratch [P]: next free position per owner
    size_t at = 0;
    for (int j = 0; j < P; j++) {
        next[j] = at;
        at += req_counts[j];
    }
    for (int e = 0; e < NK; e++) {
        int32_t id = x->host_top_i[e];
        size_t m = next[id / x->rows_local]++;
        x->host_req_ids[m] = id;
        x->host_perm[m] = e;
        x->host_inv[e] = (int32_t)m;
    }
}

// The rows of this layer's route: the key rows in token order, krows [N*K, R], and where
// the value rows are. One rank gathers the key rows from its table (route->ids are the
// chosen slots in token order) and reads the value rows in its table. With several, the
// owners gather the rows the route asked them for (route->ids, grouped by requesting rank)
// and send them back; the key rows are put back in token order, the value rows stay in
// `received` [N*K, H] in request order.
static SlotValueRows fetch_rows(SlotExchange *x, const LayerRoute *route, const float *keys,
                                const float *values, float *krows, float *received) {
    const Ops *ops = x->ops;
    int NK = x->N * x->K, R = x->R, H = x->H;
    if (x->world == 1) {
        ops->gather_rows(krows, keys, route->ids, NK, R, 0);
        return (SlotValueRows){values, route->ids};
    }
    if (!received)
        hs_fatal("slot exchange: %d ranks need a buffer for the value rows received", x->world);
    ops->gather_rows(x->serve_k, keys, route->ids, (int)route->n_ids, R, x->row_offset);
    ops->gather_rows(x->serve_v, values, route->ids, (int)route->n_ids, H, x->row_offset);
    exchange_entries(x, x->serve_k, route->serve_counts, x->rows_k, route->req_counts,
                     (size_t)R * sizeof(float));
    exchange_entries(x, x->serve_v, route->serve_counts, received, route->req_counts,
                     (size_t)H * sizeof(float));
    // Back from request order to token order: krows[e] = rows_k[inv[e]].
    ops->gather_rows(krows, x->rows_k, route->inv, NK, R, 0);
    return (SlotValueRows){received, route->inv};
}

static SlotValueRows forward_multi_rank(SlotExchange *x, LayerRoute *route, const float *p,
                                        const float *keys, const float *values, float *top_s,
                                        int32_t *top_i, float *krows, float *received) {
    const Ops *ops = x->ops;
    int NK = x->N * x->K;
    size_t nk_ints = (size_t)NK * sizeof(int32_t);
    global_topk(x, p, keys, top_s, top_i);

    // Who owns which chosen slot decides how many bytes go where, and MPI needs those
    // counts on the host: this copy waits for the device, a sync no variable-size exchange
    // can avoid.
    ops->copy_to_host(x->host_top_i, top_i, nk_ints);
    group_by_owner(x, route->req_counts);
    comm_host_alltoall(x->comm, route->req_counts, route->serve_counts, sizeof(size_t));
    size_t n_served = 0;
    for (int j = 0; j < x->world; j++)
        n_served += route->serve_counts[j];
    reserve_served(x, route, n_served);
    route->n_ids = n_served;
    ops->copy_from_host(x->req_ids, x->host_req_ids, nk_ints);
    ops->copy_from_host(route->perm, x->host_perm, nk_ints);
    ops->copy_from_host(route->inv, x->host_inv, nk_ints);

    // Ask the owners for the rows; fetch_rows has them gathered and sent back.
    exchange_entries(x, x->req_ids, route->req_counts, route->ids, route->serve_counts,
                     sizeof(int32_t));
    return fetch_rows(x, route, keys, values, krows, received);
}

// The value rows' gradients are in rows_v already, in request order (slot_exchange_value_grads).
static void backward_multi_rank(SlotExchange *x, LayerRoute *route, const float *dkrows,
                                float *dkeys, float *dvalues) {
    const Ops *ops = x->ops;
    int NK = x->N * x->K, R = x->R, H = x->H;
    // Token order to request order: rows_k[m] = dkrows[perm[m]].
    ops->gather_rows(x->rows_k, dkrows, route->perm, NK, R, 0);
    // The other ranks' buffers are sized by this layer's served count; reserve_served
    // made them large enough when the forward of this layer ran.
    exchange_entries(x, x->rows_k, route->req_counts, x->serve_k, route->serve_counts,
                     (size_t)R * sizeof(float));
    exchange_entries(x, x->rows_v, route->req_counts, x->serve_v, route->serve_counts,
                     (size_t)H * sizeof(float));
    ops->scatter_add_rows(dkeys, x->serve_k, route->ids, (int)route->n_ids, R, x->row_offset);
    ops->scatter_add_rows(dvalues, x->serve_v, route->ids, (int)route->n_ids, H, x->row_offset);
}

// ---- the interface -------------------------------------------------------------------------

SlotValueRows slot_exchange_forward(SlotExchange *x, int layer, const float *p, const float *keys,
                                    const float *values, float *top_s, int32_t *top_i, float *krows,
                                    float *received) {
    check_layer(x, layer);
    if (layer == 0)
        x->bytes_sent = x->bytes_received = 0;
    LayerRoute *route = &x->routes[layer];
    if (x->world > 1)
        return forward_multi_rank(x, route, p, keys, values, top_s, top_i, krows, received);
    const Ops *ops = x->ops;
    int NK = x->N * x->K;
    ops->slot_topk(top_s, top_i, p, keys, x->N, x->R, x->rows_local, 0, x->K);
    ops->copy(route->ids, top_i, (size_t)NK * sizeof(int32_t));
    route->n_ids = (size_t)NK;
    return fetch_rows(x, route, keys, values, krows, received);
}

SlotValueRows slot_exchange_refetch(SlotExchange *x, int layer, const float *keys,
                                    const float *values, float *krows, float *received) {
    check_layer(x, layer);
    return fetch_rows(x, &x->routes[layer], keys, values, krows, received);
}

float *slot_exchange_value_grads(SlotExchange *x, int layer, float *dvalues) {
    check_layer(x, layer);
    if (x->world == 1)
        return dvalues;
    // Each request position is one token's entry (inv is a permutation): the read-out's
    // backward adds into every row of rows_v once, onto zeros.
    x->ops->zero(x->rows_v, (size_t)x->N * x->K * x->H * sizeof(float));
    return x->rows_v;
}

void slot_exchange_backward(SlotExchange *x, int layer, const float *dkrows, float *dkeys,
                            float *dvalues) {
    check_layer(x, layer);
    LayerRoute *route = &x->routes[layer];
    if (x->world > 1) {
        backward_multi_rank(x, route, dkrows, dkeys, dvalues);
        return;
    }
    // The value rows' gradients are in dvalues already (slot_exchange_value_grads).
    x->ops->scatter_add_rows(dkeys, dkrows, route->ids, x->N * x->K, x->R, 0);
}

void slot_exchange_bytes(const SlotExchange *x, double *sent, double *received) {
    *sent = x->bytes_sent;
    *received = x->bytes_received;
}
