// hspmn_dist bench --bench_kernels 1: the main ops of the op table, one by one, at the
// model's shapes, each against its ceiling.
//
// Shapes come from the resolved configuration and --micro_batch: N = micro_batch * T tokens
// per rank, n_sel = model_n_selected queries per sequence, a slot table shard of S / ranks
// rows, the LM head chunk of model_default_head_chunk. Inputs are random (a splitmix64
// stream, zero-mean uniform values) at the scales the model sees. Each op is called --bench_warmup
// times untimed, then --bench_steps times between backend timer marks recorded back to back
// (cuda events on the backend stream, so the GPU stays busy and launch gaps are not counted;
// the monotonic clock on the cpu); the median call is reported.
//
// Each op's work is a stated simple model: bytes = every input read once and every output
// written once (4 bytes per float or int32; accumulated outputs are read and written), and
// FLOPs = 2 per multiply-add of its matrix products. Compute-bound ops (top-K scores,
// attention, GEMMs) are held to --peak_tflops, the others to --peak_gbps.
#include "launch/lib/bench_kernels.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/mpi_check.h"
#include "kernels/error.h"
#include "model/model.h"
#include "model/params.h"

// The target for the slot lookup's forward, GB/s of effective bandwidth.
#define SLOT_READ_TARGET_GBPS 2500.0

// ---- shapes -----------------------------------------------------------------------------

typedef struct KernelShapes {
    int B, T, N;         // sequences per rank, positions per sequence, tokens N = B * T
    int H, mH, V;        // d_model, MLP width, vocabulary
    int nh, nkv, hd;     // heads, kv heads, head dim
    int n_sel;           // queries per sequence
    int R, K;            // pointer dim, slots read per token
    int rows;            // slot table shard: global rows [row_offset, row_offset + rows)
    int row_offset;      //
    int head_chunk;      // tokens per LM head chunk
    size_t n_dense;      // dense parameters (replicated on every rank)
    size_t n_slot_layer; // one layer's slot table shard: keys and values, rows * (R + H)
} KernelShapes;

static KernelShapes kernel_shapes(const Session *s) {
    const ModelConfig *c = &s->cfg;
    const int world = s->info.world;
    KernelShapes k;
    k.B = s->opt.micro_batch;
    k.T = c->seq_len;
    k.N = k.B * k.T;
    k.H = c->d_model;
    k.mH = c->mlp_mult * c->d_model;
    k.V = c->vocab_size;
    k.nh = c->n_heads;
    k.nkv = c->n_kv_heads;
    k.hd = model_head_dim(c);
    k.n_sel = model_n_selected(c, c->seq_len);
    k.R = c->ptr_dim;
    k.K = c->top_k;
    if (c->n_slots % world != 0)
        hs_fatal("bench_kernels: n_slots %d is not divisible by %d ranks", c->n_slots, world);
    k.rows = c->n_slots / world;
    k.row_offset = s->info.rank * k.rows;
    k.head_chunk = model_default_head_chunk(k.V, k.N);
    ParamLayout layout;
    param_layout_build(&layout, c, s->info.rank, world);
    k.n_dense = layout.n_dense;
    param_layout_free(&layout);
    k.n_slot_layer = (size_t)k.rows * (size_t)(k.R + k.H);
    return k;
}

// ---- one row of the table -----------------------------------------------------------------

typedef enum { CEILING_COMPUTE = 0, CEILING_MEMORY = 1 } Ceiling;

typedef struct KernelRow {
    const char *op;  // op table entry; ":what" where one op runs at two shapes
    char shape[96];  // no spaces, so the table splits on whitespace
    Ceiling ceiling; // which peak the achieved rate is held to
    double bytes;    // bytes moved, by the stated model
    double flops;    // FLOPs (compute-bound rows only; 0 otherwise)
    double ms;       // median milliseconds per call (slowest rank, after the reduction)
} KernelRow;

// ---- random inputs --------------------------------------------------------------------------

typedef struct Rng {
    uint64_t state;
} Rng;

static uint64_t rng_next(Rng *r) {
    uint64_t x = (r->state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Uniform in [0, 1): the top 24 bits, exact in a float.
static float rng_uniform(Rng *r) {
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

// Floats staged on the host per copy, so a large buffer needs no host copy of its size.
#define STAGE_FLOATS ((size_t)1 << 20)

// A backend buffer of n floats, zero-mean with standard deviation std (std 0: zeros, from
// alloc). Uniform on [-sqrt(3) std, sqrt(3) std] rather than normal: the seed shapes draw
// about 10^9 numbers, and no op's speed depends on the shape of the distribution (the top-K
// scores, sums of R products, come out near-normal either way).
static float *alloc_random(const Ops *ops, Rng *rng, size_t n, float std) {
    float *buf = ops->alloc(n * sizeof(float));
    if (std == 0.0f)
        return buf;
    const float half_width = 1.7320508f * std;
    float *stage = hs_malloc(STAGE_FLOATS * sizeof(float)); // host [STAGE_FLOATS]
    for (size_t at = 0; at < n; at += STAGE_FLOATS) {
        size_t count = n - at < STAGE_FLOATS ? n - at : STAGE_FLOATS;
        for (size_t i = 0; i < count; i++)
            stage[i] = half_width * (2.0f * rng_uniform(rng) - 1.0f);
        ops->copy_from_host(buf + at, stage, count * sizeof(float));
    }
    free(stage);
    return buf;
}

static float *alloc_zeros(const Ops *ops, size_t n) {
    return ops->alloc(n * sizeof(float));
}

// A backend buffer of n int32 drawn uniformly from [0, bound).
static int32_t *alloc_uniform_ints(const Ops *ops, Rng *rng, size_t n, int bound) {
    int32_t *host = hs_malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++)
        host[i] = (int32_t)(rng_next(rng) % (uint64_t)bound);
    int32_t *buf = ops->alloc(n * sizeof(int32_t));
    ops->copy_from_host(buf, host, n * sizeof(int32_t));
    free(host);
    return buf;
}

static int compare_ints(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// Query positions as the router gives them: per sequence, n_sel distinct positions of
// [0, T), ascending (a partial Fisher-Yates shuffle, then a sort). host_qpos [B * n_sel].
static void random_query_positions(Rng *rng, int32_t *host_qpos, int B, int T, int n_sel) {
    int32_t *order = hs_malloc((size_t)T * sizeof(int32_t)); // [T]
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            order[t] = t;
        for (int i = 0; i < n_sel; i++) {
            int j = i + (int)(rng_next(rng) % (uint64_t)(T - i));
            int32_t swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
        qsort(order, (size_t)n_sel, sizeof(int32_t), compare_ints);
        memcpy(host_qpos + (size_t)b * n_sel, order, (size_t)n_sel * sizeof(int32_t));
    }
    free(order);
}

// ---- timing -----------------------------------------------------------------------------------

typedef struct KernelBench {
    const Ops *ops;
    KernelShapes shape;
    KernelBenchSettings settings;
    Rng rng;
} KernelBench;

typedef void (*KernelCall)(const void *args);

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median milliseconds of one call: warmup untimed calls, then steps calls between timer
// marks recorded back to back (mark i before call i, mark i + 1 after it).
static double median_call_ms(const KernelBench *kb, KernelCall call, const void *args) {
    const Ops *ops = kb->ops;
    const int steps = kb->settings.steps;
    for (int i = 0; i < kb->settings.warmup; i++)
        call(args);
    void **marks = hs_malloc((size_t)(steps + 1) * sizeof(void *)); // [steps + 1]
    for (int i = 0; i <= steps; i++)
        marks[i] = ops->timer_create();
    ops->timer_record(marks[0]);
    for (int i = 0; i < steps; i++) {
        call(args);
        ops->timer_record(marks[i + 1]);
    }
    double *ms = hs_malloc((size_t)steps * sizeof(double)); // [steps]
    for (int i = 0; i < steps; i++)
        ms[i] = ops->timer_elapsed_ms(marks[i], marks[i + 1]);
    for (int i = 0; i <= steps; i++)
        ops->timer_destroy(marks[i]);
    free(marks);
    qsort(ms, (size_t)steps, sizeof(double), compare_doubles);
    double median = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
    free(ms);
    return median;
}

// ---- slot_topk ----------------------------------------------------------------------------------

typedef struct TopkArgs {
    const Ops *ops;
    float *top_s;   // [N, K]
    int32_t *top_i; // [N, K]
    float *p;       // [N, R]
    float *keys;    // [rows, R]
    int N, R, rows, row_offset, K;
} TopkArgs;

static void call_slot_topk(const void *args) {
    const TopkArgs *a = args;
    a->ops->slot_topk(a->top_s, a->top_i, a->p, a->keys, a->N, a->R, a->rows, a->row_offset, a->K);
}

static void bench_slot_topk(KernelBench *kb, KernelRow *row) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    const double N = k->N, R = k->R, rows = k->rows, K = k->K;
    TopkArgs a = {
        .ops = ops, .N = k->N, .R = k->R, .rows = k->rows, .row_offset = k->row_offset, .K = k->K};
    a.p = alloc_random(ops, &kb->rng, (size_t)k->N * k->R, 1.0f);
    a.keys = alloc_random(ops, &kb->rng, (size_t)k->rows * k->R, 0.02f);
    a.top_s = alloc_zeros(ops, (size_t)k->N * k->K);
    a.top_i = ops->alloc((size_t)k->N * k->K * sizeof(int32_t));
    row->op = "slot_topk";
    snprintf(row->shape, sizeof(row->shape), "N=%d,rows=%d,R=%d,K=%d", k->N, k->rows, k->R, k->K);
    row->ceiling = CEILING_COMPUTE;
    row->flops = 2.0 * N * rows * R;
    row->bytes = 4.0 * (N * R + rows * R + 2.0 * N * K);
    row->ms = median_call_ms(kb, call_slot_topk, &a);
    ops->free(a.p);
    ops->free(a.keys);
    ops->free(a.top_s);
    ops->free(a.top_i);
}

// ---- slot_read_forward / slot_read_backward -------------------------------------------------

typedef struct SlotReadArgs {
    const Ops *ops;
    float *y, *h, *dh, *dy;  // [N, H]
    float *w, *top_s, *ds;   // [N, K]
    float *values, *dvalues; // [rows, H] the shard's value table and its gradient
    int32_t *idx;            // [N, K] the rows read, uniform over the shard
    float *loss;             // [1]
    float scale;
    int N, K, H;
} SlotReadArgs;

static void call_slot_read_forward(const void *args) {
    const SlotReadArgs *a = args;
    a->ops->slot_read_forward(a->y, a->w, a->loss, a->h, a->top_s, a->values, a->idx, a->scale,
                              a->N, a->K, a->H);
}

static void call_slot_read_backward(const void *args) {
    const SlotReadArgs *a = args;
    a->ops->slot_read_backward(a->dh, a->ds, a->dvalues, a->dy, a->w, a->values, a->idx, a->scale,
                               a->N, a->K, a->H);
}

static void bench_slot_read(KernelBench *kb, double entropy_weight, KernelRow *fwd,
                            KernelRow *bwd) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    const size_t NH = (size_t)k->N * k->H, NK = (size_t)k->N * k->K, NKH = NK * k->H;
    const size_t table = (size_t)k->rows * k->H;
    SlotReadArgs a = {.ops = ops, .N = k->N, .K = k->K, .H = k->H};
    a.scale = (float)(entropy_weight / k->N);
    a.h = alloc_random(ops, &kb->rng, NH, 1.0f);
    a.dy = alloc_random(ops, &kb->rng, NH, 1.0f);
    a.top_s = alloc_random(ops, &kb->rng, NK, 1.0f);
    a.values = alloc_random(ops, &kb->rng, table, 0.02f);
    a.idx = alloc_uniform_ints(ops, &kb->rng, NK, k->rows);
    a.y = alloc_zeros(ops, NH);
    a.dh = alloc_zeros(ops, NH);
    a.w = alloc_zeros(ops, NK);
    a.ds = alloc_zeros(ops, NK);
    a.dvalues = alloc_zeros(ops, table);
    a.loss = alloc_zeros(ops, 1);
    const double nh = (double)NH, nk = (double)NK, nkh = (double)NKH;
    fwd->op = "slot_read_forward";
    snprintf(fwd->shape, sizeof(fwd->shape), "N=%d,K=%d,H=%d", k->N, k->K, k->H);
    fwd->ceiling = CEILING_MEMORY;
    // read the N K value rows, idx, top_s, h; write y, w
    fwd->bytes = 4.0 * (nkh + nk + nk + nh + nh + nk);
    fwd->ms = median_call_ms(kb, call_slot_read_forward, &a); // also leaves w for the backward
    *bwd = *fwd;
    bwd->op = "slot_read_backward";
    // read dy, w, idx, the N K value rows, dh; write dh, ds; add into N K gradient rows
    bwd->bytes = 4.0 * (nh + nk + nk + nkh + nh + nh + nk + 2.0 * nkh);
    bwd->ms = median_call_ms(kb, call_slot_read_backward, &a);
    float *bufs[] = {a.y, a.h, a.dh, a.dy, a.w, a.top_s, a.ds, a.values, a.dvalues, a.loss};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        ops->free(bufs[i]);
    ops->free(a.idx);
}

// ---- attention_forward / attention_backward -------------------------------------------------

typedef struct AttentionArgs {
    const Ops *ops;
    float *q, *o, *dq, *dout; // [B*Mq, nh, hd]
    float *k, *v, *dk, *dv;   // [B, T, nkv, hd]
    float *lse;               // [B*Mq, nh]
    int32_t *qpos;            // [B*Mq]
    int B, T, Mq, nh, nkv, hd;
} AttentionArgs;

static void call_attention_forward(const void *args) {
    const AttentionArgs *a = args;
    a->ops->attention_forward(a->o, a->lse, a->q, a->k, a->v, a->qpos, a->B, a->T, a->Mq, a->nh,
                              a->nkv, a->hd);
}

static void call_attention_backward(const void *args) {
    const AttentionArgs *a = args;
    a->ops->attention_backward(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->o, a->lse,
                               a->qpos, a->B, a->T, a->Mq, a->nh, a->nkv, a->hd);
}

// The attention op with Mq queries per sequence: n_sel (the routed model) or T (attn=dense,
// every position a query), under the names fwd_name and bwd_name.
static void bench_attention(KernelBench *kb, int Mq, const char *fwd_name, const char *bwd_name,
                            KernelRow *fwd, KernelRow *bwd) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    AttentionArgs a = {
        .ops = ops, .B = k->B, .T = k->T, .Mq = Mq, .nh = k->nh, .nkv = k->nkv, .hd = k->hd};
    const size_t M = (size_t)k->B * Mq;
    const size_t q_floats = M * k->nh * k->hd, kv_floats = (size_t)k->N * k->nkv * k->hd;
    int32_t *host_qpos = hs_malloc(M * sizeof(int32_t)); // [B * Mq]
    random_query_positions(&kb->rng, host_qpos, k->B, k->T, Mq);
    // MODEL.md's count: 4 * t * H per query that sees t keys (QK^T and PV, 2 FLOPs per
    // multiply-add, H = nh * hd); the keys seen are qpos + 1 (causal).
    double keys_seen = 0.0;
    for (size_t m = 0; m < M; m++)
        keys_seen += host_qpos[m] + 1.0;
    a.qpos = ops->alloc(M * sizeof(int32_t));
    ops->copy_from_host(a.qpos, host_qpos, M * sizeof(int32_t));
    free(host_qpos);
    a.q = alloc_random(ops, &kb->rng, q_floats, 1.0f);
    a.k = alloc_random(ops, &kb->rng, kv_floats, 1.0f);
    a.v = alloc_random(ops, &kb->rng, kv_floats, 1.0f);
    a.dout = alloc_random(ops, &kb->rng, q_floats, 1.0f);
    a.o = alloc_zeros(ops, q_floats);
    a.dq = alloc_zeros(ops, q_floats);
    a.dk = alloc_zeros(ops, kv_floats);
    a.dv = alloc_zeros(ops, kv_floats);
    a.lse = alloc_zeros(ops, M * k->nh);
    const double qf = (double)q_floats, kvf = (double)kv_floats, lse = (double)M * k->nh;
    fwd->op = fwd_name;
    snprintf(fwd->shape, sizeof(fwd->shape), "B=%d,T=%d,Mq=%d,nh=%d,nkv=%d,hd=%d", k->B, k->T, Mq,
             k->nh, k->nkv, k->hd);
    fwd->ceiling = CEILING_COMPUTE;
    fwd->flops = 4.0 * keys_seen * k->nh * k->hd;
    fwd->bytes = 4.0 * (qf + 2.0 * kvf + (double)M + qf + lse); // read q, k, v, qpos; write o, lse
    fwd->ms = median_call_ms(kb, call_attention_forward, &a);   // leaves o, lse for the backward
    *bwd = *fwd;
    bwd->op = bwd_name;
    // Recomputed scores, dV, dP, dQ, dK: five products of the forward's two, so 2.5x.
    bwd->flops = 2.5 * fwd->flops;
    // read dout, q, k, v, o, lse, qpos; read and write dq, dk, dv (they accumulate)
    bwd->bytes = 4.0 * (qf + qf + 2.0 * kvf + qf + lse + (double)M + 2.0 * (qf + 2.0 * kvf));
    bwd->ms = median_call_ms(kb, call_attention_backward, &a);
    float *bufs[] = {a.q, a.o, a.dq, a.dout, a.k, a.v, a.dk, a.dv, a.lse};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        ops->free(bufs[i]);
    ops->free(a.qpos);
}

// ---- linear_forward / linear_backward ---------------------------------------------------------

typedef struct LinearArgs {
    const Ops *ops;
    float *x, *dx;     // [N, I]
    float *w, *dw;     // [O, I]
    float *b, *db;     // [O] or NULL
    float *out, *dout; // [N, O]
    int N, I, O;
} LinearArgs;

static void call_linear_forward(const void *args) {
    const LinearArgs *a = args;
    a->ops->linear_forward(a->out, a->x, a->w, a->b, a->N, a->I, a->O);
}

static void call_linear_backward(const void *args) {
    const LinearArgs *a = args;
    a->ops->linear_backward(a->dx, a->dw, a->db, a->dout, a->x, a->w, a->N, a->I, a->O);
}

// out [N, O] = x [N, I] . w [O, I]^T (+ b), as the model calls it: with a bias or without.
static void bench_linear(KernelBench *kb, const char *fwd_name, const char *bwd_name, int N, int I,
                         int O, int with_bias, KernelRow *fwd, KernelRow *bwd) {
    const Ops *ops = kb->ops;
    LinearArgs a = {.ops = ops, .N = N, .I = I, .O = O};
    a.x = alloc_random(ops, &kb->rng, (size_t)N * I, 1.0f);
    a.w = alloc_random(ops, &kb->rng, (size_t)O * I, 0.02f);
    a.dout = alloc_random(ops, &kb->rng, (size_t)N * O, 1.0f);
    a.out = alloc_zeros(ops, (size_t)N * O);
    a.dx = alloc_zeros(ops, (size_t)N * I);
    a.dw = alloc_zeros(ops, (size_t)O * I);
    a.b = with_bias ? alloc_zeros(ops, (size_t)O) : NULL;
    a.db = with_bias ? alloc_zeros(ops, (size_t)O) : NULL;
    const double n = N, in = I, o = O, bias = with_bias ? o : 0.0;
    fwd->op = fwd_name;
    snprintf(fwd->shape, sizeof(fwd->shape), "N=%d,I=%d,O=%d%s", N, I, O, with_bias ? ",bias" : "");
    fwd->ceiling = CEILING_COMPUTE;
    fwd->flops = 2.0 * n * in * o;
    fwd->bytes = 4.0 * (n * in + o * in + bias + n * o); // read x, w, b; write out
    fwd->ms = median_call_ms(kb, call_linear_forward, &a);
    *bwd = *fwd;
    bwd->op = bwd_name;
    bwd->flops = 4.0 * n * in * o; // dx = dout . w and dw += dout^T . x
    // read dout, x, w; read and write dx, dw, db (they accumulate)
    bwd->bytes = 4.0 * (n * o + n * in + o * in + 2.0 * (n * in + o * in + bias));
    bwd->ms = median_call_ms(kb, call_linear_backward, &a);
    float *bufs[] = {a.x, a.dx, a.w, a.dw, a.out, a.dout};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        ops->free(bufs[i]);
    if (with_bias) {
        ops->free(a.b);
        ops->free(a.db);
    }
}

// ---- cross_entropy_fused ---------------------------------------------------------------------

typedef struct CrossEntropyArgs {
    const Ops *ops;
    float *logits;    // [chunk, V], turned into dlogits in place as the LM head does
    int32_t *targets; // [chunk]
    int32_t *argmax;  // [chunk]
    float *loss;      // [1]
    float scale;
    int N, V;
} CrossEntropyArgs;

static void call_cross_entropy_fused(const void *args) {
    const CrossEntropyArgs *a = args;
    a->ops->cross_entropy_fused(a->loss, a->logits, a->argmax, a->logits, a->targets, a->scale,
                                a->N, a->V);
}

static void bench_cross_entropy(KernelBench *kb, KernelRow *row) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    const size_t chunk = (size_t)k->head_chunk;
    CrossEntropyArgs a = {.ops = ops, .N = k->head_chunk, .V = k->V};
    a.scale = (float)(1.0 / k->N);
    a.logits = alloc_random(ops, &kb->rng, chunk * k->V, 1.0f);
    a.targets = alloc_uniform_ints(ops, &kb->rng, chunk, k->V);
    a.argmax = ops->alloc(chunk * sizeof(int32_t));
    a.loss = alloc_zeros(ops, 1);
    row->op = "cross_entropy_fused";
    snprintf(row->shape, sizeof(row->shape), "N=%d,V=%d", k->head_chunk, k->V);
    row->ceiling = CEILING_MEMORY;
    // read logits and targets; write dlogits (in place) and argmax
    row->bytes = 4.0 * (2.0 * (double)chunk * k->V + 2.0 * (double)chunk);
    row->ms = median_call_ms(kb, call_cross_entropy_fused, &a);
    ops->free(a.logits);
    ops->free(a.targets);
    ops->free(a.argmax);
    ops->free(a.loss);
}

// ---- lm_head_loss ---------------------------------------------------------------------------

typedef struct LmHeadArgs {
    const Ops *ops;
    float *loss;          // [1]
    int32_t *predictions; // [N]
    float *dyn, *yn;      // [N, H]
    float *dw, *w;        // [V, H]
    float *logits;        // [chunk, V + 8] scratch
    int32_t *targets;     // [N]
    float scale;
    int N, H, V, chunk;
} LmHeadArgs;

static void call_lm_head_loss(const void *args) {
    const LmHeadArgs *a = args;
    a->ops->lm_head_loss(a->loss, a->predictions, a->dyn, a->dw, a->logits, a->yn, a->w, a->targets,
                         a->scale, a->N, a->H, a->V, a->chunk);
}

// The whole LM head of a step (N tokens, forward and backward), as the model calls it.
static void bench_lm_head(KernelBench *kb, KernelRow *row) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    const size_t NH = (size_t)k->N * k->H, VH = (size_t)k->V * k->H;
    LmHeadArgs a = {.ops = ops, .N = k->N, .H = k->H, .V = k->V, .chunk = k->head_chunk};
    a.scale = (float)(1.0 / k->N);
    a.yn = alloc_random(ops, &kb->rng, NH, 1.0f);
    a.w = alloc_random(ops, &kb->rng, VH, 0.02f);
    a.dyn = alloc_zeros(ops, NH);
    a.dw = alloc_zeros(ops, VH);
    a.logits = alloc_zeros(ops, (size_t)k->head_chunk * (k->V + 8));
    a.targets = alloc_uniform_ints(ops, &kb->rng, (size_t)k->N, k->V);
    a.predictions = ops->alloc((size_t)k->N * sizeof(int32_t));
    a.loss = alloc_zeros(ops, 1);
    row->op = "lm_head_loss";
    snprintf(row->shape, sizeof(row->shape), "N=%d,H=%d,V=%d,chunk=%d", k->N, k->H, k->V,
             k->head_chunk);
    row->ceiling = CEILING_COMPUTE;
    row->flops = 6.0 * (double)k->N * k->H * k->V; // logits, dyn, dw
    // yn, w, targets read; dyn, predictions written; dw accumulated (the logits stay on chip
    // in no implementation, but they are the op's scratch, not its inputs or outputs)
    row->bytes = 4.0 * (2.0 * NH + VH + 2.0 * VH + 2.0 * k->N);
    row->ms = median_call_ms(kb, call_lm_head_loss, &a);
    ops->free(a.yn), ops->free(a.w), ops->free(a.dyn), ops->free(a.dw), ops->free(a.logits);
    ops->free(a.targets), ops->free(a.predictions), ops->free(a.loss);
}

// ---- gather_rows / scatter_add_rows ------------------------------------------------------------

typedef struct RowsArgs {
    const Ops *ops;
    float *rows;  // [M, D]
    float *table; // [table_rows, D]
    int32_t *idx; // [M] global ids in [row_offset, row_offset + table_rows)
    int M, D, row_offset;
} RowsArgs;

static void call_gather_rows(const void *args) {
    const RowsArgs *a = args;
    a->ops->gather_rows(a->rows, a->table, a->idx, a->M, a->D, a->row_offset);
}

static void call_scatter_add_rows(const void *args) {
    const RowsArgs *a = args;
    a->ops->scatter_add_rows(a->table, a->rows, a->idx, a->M, a->D, a->row_offset);
}

// The slot value rows of one layer: N K rows of H floats from (and back into) the shard,
// at uniformly random slots, as the slot exchange gathers them and scatters their gradient.
static void bench_rows(KernelBench *kb, KernelRow *gather, KernelRow *scatter) {
    const Ops *ops = kb->ops;
    const KernelShapes *k = &kb->shape;
    RowsArgs a = {.ops = ops, .M = k->N * k->K, .D = k->H, .row_offset = k->row_offset};
    a.table = alloc_random(ops, &kb->rng, (size_t)k->rows * k->H, 1.0f);
    a.rows = alloc_zeros(ops, (size_t)a.M * k->H);
    int32_t *local = alloc_uniform_ints(ops, &kb->rng, (size_t)a.M, k->rows); // [0, rows)
    int32_t *host = hs_malloc((size_t)a.M * sizeof(int32_t));
    ops->copy_to_host(host, local, (size_t)a.M * sizeof(int32_t));
    for (int m = 0; m < a.M; m++)
        host[m] += k->row_offset;
    ops->copy_from_host(local, host, (size_t)a.M * sizeof(int32_t));
    free(host);
    a.idx = local;
    const double row_bytes = (double)a.M * k->H * sizeof(float);
    gather->op = "gather_rows:values";
    snprintf(gather->shape, sizeof(gather->shape), "M=%d,D=%d,rows=%d", a.M, k->H, k->rows);
    gather->ceiling = CEILING_MEMORY;
    gather->bytes = 2.0 * row_bytes + 4.0 * a.M; // rows read and written, indices
    gather->ms = median_call_ms(kb, call_gather_rows, &a);
    scatter->op = "scatter_add_rows:values";
    snprintf(scatter->shape, sizeof(scatter->shape), "M=%d,D=%d,rows=%d", a.M, k->H, k->rows);
    scatter->ceiling = CEILING_MEMORY;
    scatter->bytes = 3.0 * row_bytes + 4.0 * a.M; // rows read, table rows read and written
    scatter->ms = median_call_ms(kb, call_scatter_add_rows, &a);
    ops->free(a.table), ops->free(a.rows), ops->free(a.idx);
}

// ---- adamw_update ------------------------------------------------------------------------------

typedef struct AdamwArgs {
    const Ops *ops;
    float *param, *grad, *m, *v; // [n]
    size_t n;
} AdamwArgs;

static void call_adamw_update(const void *args) {
    const AdamwArgs *a = args;
    a->ops->adamw_update(a->param, a->grad, a->m, a->v, a->n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f,
                         1);
}

// One call over n parameters (the model calls it per tensor; the bytes are the same).
static void bench_adamw(KernelBench *kb, const char *name, size_t n, KernelRow *row) {
    const Ops *ops = kb->ops;
    AdamwArgs a = {.ops = ops, .n = n};
    a.param = alloc_random(ops, &kb->rng, n, 0.02f);
    a.grad = alloc_random(ops, &kb->rng, n, 1.0f);
    a.m = alloc_zeros(ops, n);
    a.v = alloc_zeros(ops, n);
    row->op = name;
    snprintf(row->shape, sizeof(row->shape), "n=%zu", n);
    row->ceiling = CEILING_MEMORY;
    row->bytes = 28.0 * (double)n; // read param, grad, m, v; write param, m, v
    row->ms = median_call_ms(kb, call_adamw_update, &a);
    ops->free(a.param);
    ops->free(a.grad);
    ops->free(a.m);
    ops->free(a.v);
}

// ---- printing (rank 0) -------------------------------------------------------------------------

// The achieved rate in the ceiling's unit (TFLOP/s or GB/s) and its fraction of the ceiling.
static double row_rate(const KernelRow *r) {
    if (!(r->ms > 0))
        return 0.0;
    return r->ceiling == CEILING_COMPUTE ? r->flops / (r->ms * 1e-3) / 1e12
                                         : r->bytes / (r->ms * 1e-3) / 1e9;
}

static double row_peak(const KernelRow *r, const KernelBenchSettings *st) {
    return r->ceiling == CEILING_COMPUTE ? st->peak_tflops : st->peak_gbps;
}

static const char *compute_ceiling_note(const Session *s) {
    if (s->ops->kind == BACKEND_CPU)
        return "cpu backend: the GPU peaks are not this machine's";
    if (strcmp(s->opt.matmul, "bf16") == 0)
        return "--matmul bf16: attention, top-K search and GEMMs run on bf16 tensor cores";
    return "these kernels run in the --matmul setting's precision, not bf16";
}

static void print_header(const Session *s, const KernelBench *kb) {
    const ModelConfig *c = &s->cfg;
    const KernelShapes *k = &kb->shape;
    const KernelBenchSettings *st = &kb->settings;
    printf("== bench kernels: %s, matmul %s, %d rank(s) (each times the same per-rank shapes; "
           "the slowest rank's median is shown)\n",
           s->ops->name, s->ops->kind == BACKEND_CPU ? "fp32 (cpu)" : s->opt.matmul, s->info.world);
    printf("model: L%d H%d nh%d nkv%d hd%d T%d V%d S%d R%d K%d capacity %g (n_sel %d), attn=%s "
           "ffn=%s\n",
           c->n_layers, k->H, k->nh, k->nkv, k->hd, k->T, k->V, c->n_slots, k->R, k->K, c->capacity,
           k->n_sel, c->attn == ATTN_DENSE ? "dense" : "sparse",
           c->ffn == FFN_DENSE ? "dense" : "memory");
    printf("shapes: N = %d x %d = %d tokens per rank (--micro_batch); slot shard %d rows; LM head "
           "chunk %d tokens; %zu dense parameters\n",
           k->B, k->T, k->N, k->rows, k->head_chunk, k->n_dense);
    printf("timing: median of %d calls after %d untimed, between backend timer marks (%s)\n",
           st->steps, st->warmup,
           s->ops->kind == BACKEND_CUDA ? "cuda events on the backend stream" : "monotonic clock");
    printf("ceilings: compute %g TFLOP/s (--peak_tflops: bf16 dense; %s); memory %g GB/s "
           "(--peak_gbps: device memory bandwidth)\n",
           st->peak_tflops, compute_ceiling_note(s), st->peak_gbps);
}

static void print_rows(const KernelRow *rows, int n, const KernelBenchSettings *st) {
    printf("  %-24s %-38s %10s %10s %10s %10s %-7s %-8s %8s\n", "op", "shape", "ms/call", "MB",
           "GFLOP", "rate", "unit", "ceiling", "% ceil");
    for (int i = 0; i < n; i++) {
        const KernelRow *r = &rows[i];
        const int compute = r->ceiling == CEILING_COMPUTE;
        char gflop[32] = "-";
        if (compute)
            snprintf(gflop, sizeof(gflop), "%.4g", r->flops / 1e9);
        const double rate = row_rate(r);
        printf("  %-24s %-38s %10.4g %10.4g %10s %10.4g %-7s %-8s %7.3g%%\n", r->op, r->shape,
               r->ms, r->bytes / 1e6, gflop, rate, compute ? "TFLOP/s" : "GB/s",
               compute ? "compute" : "memory", 100.0 * rate / row_peak(r, st));
    }
}

// The rows of the table, in print order.
enum {
    ROW_SLOT_TOPK,
    ROW_SLOT_READ_FWD,
    ROW_SLOT_READ_BWD,
    ROW_ATTN_FWD,
    ROW_ATTN_BWD,
    ROW_ATTN_DENSE_FWD,
    ROW_ATTN_DENSE_BWD,
    ROW_HEAD_FWD,
    ROW_HEAD_BWD,
    ROW_MLP_FWD,
    ROW_MLP_BWD,
    ROW_CROSS_ENTROPY,
    ROW_LM_HEAD,
    ROW_ADAMW_DENSE,
    ROW_ADAMW_SLOTS,
    ROW_GATHER_ROWS,
    ROW_SCATTER_ROWS,
    ROW_COUNT
};

// attention: the op's forward + backward with every position a query (attn=dense) over the
// same with the routed queries, against the 4x (T = 4096) and 4.5x (T = 16384).
static void print_attention_speedup(const KernelRow *rows, const KernelShapes *k) {
    const double sparse = rows[ROW_ATTN_FWD].ms + rows[ROW_ATTN_BWD].ms;
    const double dense = rows[ROW_ATTN_DENSE_FWD].ms + rows[ROW_ATTN_DENSE_BWD].ms;
    printf("attention op, forward + backward: Mq=%d (every position) %.4g ms / Mq=%d (routed) "
           "%.4g ms = %.3gx (issue targets: >= 4x at T = 4096, >= 4.5x at T = 16384)\n",
           k->T, dense, k->n_sel, sparse, sparse > 0 ? dense / sparse : 0.0);
}

// lm_head_loss: the whole head of a step against what its chunks would cost as the separate
// ops (one chunk's linear_forward:head, cross_entropy_fused and linear_backward:head, times
// the number of chunks): what the op's own loop saves.
static void print_head_speedup(const KernelRow *rows, const KernelShapes *k) {
    const int chunks = (k->N + k->head_chunk - 1) / k->head_chunk;
    const double separate =
        chunks * (rows[ROW_HEAD_FWD].ms + rows[ROW_CROSS_ENTROPY].ms + rows[ROW_HEAD_BWD].ms);
    const double fused = rows[ROW_LM_HEAD].ms;
    printf("lm_head_loss, N=%d tokens: %.4g ms; as separate ops, %d chunks x (linear_forward:head "
           "+ cross_entropy_fused + linear_backward:head) = %.4g ms; ratio %.3gx\n",
           k->N, fused, chunks, separate, fused > 0 ? separate / fused : 0.0);
}

static void print_notes(const KernelRow *rows, const KernelShapes *k) {
    const double scores = (double)k->N * k->rows;
    const KernelRow *topk = &rows[ROW_SLOT_TOPK];
    printf("slot_topk: %.4g G token-key scores/s\n",
           topk->ms > 0 ? scores / (topk->ms * 1e-3) / 1e9 : 0.0);
    printf("slot_read_forward: %.4g GB/s effective, against the issue's target of >= %g GB/s\n",
           row_rate(&rows[ROW_SLOT_READ_FWD]), SLOT_READ_TARGET_GBPS);
    print_attention_speedup(rows, k);
    print_head_speedup(rows, k);
    printf("work models (4 bytes per float or int32, each read or written once; accumulated "
           "outputs read and written; FLOPs 2 per multiply-add):\n"
           "  slot_topk            FLOPs 2 N rows R; bytes p, keys, top_s, top_i\n"
           "  slot_read_forward    bytes the N K value rows of H (idx uniform over the shard), "
           "idx, top_s, h read; y N H, w written\n"
           "  slot_read_backward   bytes dy, w, idx, the N K value rows, dh read; dh, ds written; "
           "N K gradient rows added (read and written)\n"
           "  attention_forward    FLOPs 4 t H per query seeing t = qpos + 1 keys (MODEL.md), "
           "random sorted positions\n"
           "  attention_backward   FLOPs 2.5x the forward (scores recomputed, dV, dP, dQ, dK); "
           ":dense rows: Mq = T, every position a query (attn=dense)\n"
           "  linear_*             FLOPs 2 N I O forward, 4 N I O backward (dx and dw); head: "
           "one LM head chunk, mlp: the reflexive MLP's first GEMM\n"
           "  cross_entropy_fused  bytes one head chunk's logits read and dlogits written (in "
           "place), targets, argmax\n"
           "  lm_head_loss         FLOPs 6 N H V (logits, dyn, dw) over the N tokens of a step; "
           "bytes yn, w, targets read, dyn, predictions written, dw accumulated\n"
           "  adamw_update         28 bytes per parameter (param, grad, m, v read; param, m, v "
           "written), one call over the dense parameters / one layer's slot table shard\n"
           "  gather_rows          bytes N K rows of H floats read and written, indices; "
           "scatter_add_rows: rows read, table rows read and written (atomic adds)\n");
}

// ---- the benchmark ---------------------------------------------------------------------------

int bench_kernels_main(Session *s, const KernelBenchSettings *settings) {
    const Ops *ops = s->ops;
    session_check_backend_limits(s, &s->cfg);
    KernelBench kb = {.ops = ops, .shape = kernel_shapes(s), .settings = *settings};
    // The same inputs on every rank but for the rank's own slot shard offset.
    kb.rng.state = s->opt.seed;
    const KernelShapes *k = &kb.shape;
    if (s->info.rank == 0) {
        print_header(s, &kb);
        fflush(stdout);
    }
    KernelRow rows[ROW_COUNT];
    memset(rows, 0, sizeof(rows));
    bench_slot_topk(&kb, &rows[ROW_SLOT_TOPK]);
    bench_slot_read(&kb, s->cfg.entropy_loss, &rows[ROW_SLOT_READ_FWD], &rows[ROW_SLOT_READ_BWD]);
    bench_attention(&kb, k->n_sel, "attention_forward", "attention_backward", &rows[ROW_ATTN_FWD],
                    &rows[ROW_ATTN_BWD]);
    bench_attention(&kb, k->T, "attention_forward:dense", "attention_backward:dense",
                    &rows[ROW_ATTN_DENSE_FWD], &rows[ROW_ATTN_DENSE_BWD]);
    bench_linear(&kb, "linear_forward:head", "linear_backward:head", k->head_chunk, k->H, k->V, 0,
                 &rows[ROW_HEAD_FWD], &rows[ROW_HEAD_BWD]);
    bench_linear(&kb, "linear_forward:mlp", "linear_backward:mlp", k->N, k->H, k->mH, 1,
                 &rows[ROW_MLP_FWD], &rows[ROW_MLP_BWD]);
    bench_cross_entropy(&kb, &rows[ROW_CROSS_ENTROPY]);
    bench_lm_head(&kb, &rows[ROW_LM_HEAD]);
    bench_adamw(&kb, "adamw_update:dense", k->n_dense, &rows[ROW_ADAMW_DENSE]);
    bench_adamw(&kb, "adamw_update:slots", k->n_slot_layer, &rows[ROW_ADAMW_SLOTS]);
    bench_rows(&kb, &rows[ROW_GATHER_ROWS], &rows[ROW_SCATTER_ROWS]);
    ops->synchronize();
    // The slowest rank's median per op.
    double ms[ROW_COUNT];
    for (int i = 0; i < ROW_COUNT; i++)
        ms[i] = rows[i].ms;
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, ms, ROW_COUNT, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce(bench kernels max)");
    for (int i = 0; i < ROW_COUNT; i++)
        rows[i].ms = ms[i];
    if (s->info.rank == 0) {
        print_rows(rows, ROW_COUNT, settings);
        print_notes(rows, k);
        fflush(stdout);
    }
    return 0;
}
