// Token mixing of one HSPMN-SM block (MODEL.md "Forward pass", up to h = x + f + a):
//   u = RMSNorm(x; norm_a)
//   reflexive stream, every token:  f = w2 GELU(w1 conv(u) + b1) + b2
//   router:                         r = router_w . u + router_b,  z = r + Gumbel (training)
//   sparse attention, queries sel:  a = sigmoid(r) (wo . attention(q(u_sel), k(u), v(u)))
// Each stage's forward and backward sit side by side.
#include <stdlib.h>

#include "kernels/error.h"
#include "model/block.h"

// Which tokens of a layer are queries: M in all, counts[b] of them in sequence b (host).
// With route=threshold the counts differ per sequence; otherwise each is n_sel.
typedef struct QuerySet {
    int M;
    int *counts; // [B] host
} QuerySet;

int block_routes_by_threshold(const ModelConfig *c) {
    return c->attn == ATTN_SPARSE && c->route == ROUTE_THRESHOLD;
}

int block_has_route_loss(const ModelConfig *c) {
    return c->attn == ATTN_SPARSE && c->route == ROUTE_TOPN;
}

int block_query_capacity(const Model *m) {
    return block_routes_by_threshold(&m->cfg) ? m->B * m->T : m->B * m->n_sel;
}

// The router logits that gate the attention output, or NULL for a gate fixed at 1.
static const float *gate_logits(const Model *m, const LayerActs *a) {
    return (m->cfg.attn == ATTN_DENSE || m->cfg.gate_fixed) ? NULL : a->r;
}

// ---- query sets ------------------------------------------------------------------------

static void query_set_alloc(QuerySet *qs, int B) {
    qs->M = 0;
    qs->counts = hs_calloc((size_t)B, sizeof(int));
}

static void query_set_free(QuerySet *qs) {
    free(qs->counts);
    qs->counts = NULL;
}

// route=threshold: the number of queries per sequence is data-dependent, so the M selected
// flat indices come back to the host to be counted per sequence (one small sync per layer;
// generation only). Top-n routing knows its counts (n_sel each) and needs no round trip.
static void query_set_count_on_host(Model *m, LayerActs *a, QuerySet *qs, int M) {
    qs->M = M;
    for (int b = 0; b < m->B; b++)
        qs->counts[b] = 0;
    if (M == 0)
        return;
    int32_t *sel = hs_malloc((size_t)M * sizeof(int32_t)); // [M] host
    m->ops->copy_to_host(sel, a->sel, (size_t)M * sizeof(int32_t));
    for (int i = 0; i < M; i++)
        qs->counts[sel[i] / m->T]++;
    free(sel);
}

static void query_set_uniform(const Model *m, QuerySet *qs, int per_sequence) {
    qs->M = m->B * per_sequence;
    for (int b = 0; b < m->B; b++)
        qs->counts[b] = per_sequence;
}

// route=threshold keeps the number of queries in the slot after the N indices of a->sel.
static int threshold_query_count(Model *m, const LayerActs *a) {
    int32_t count = 0;
    m->ops->copy_to_host(&count, a->sel + m->B * m->T, sizeof(int32_t));
    return count;
}

// Forward: choose the queries of this layer from z (top-n) or r (threshold); attn=dense
// uses every token (sel and qpos were written once by model_build).
static void select_queries(Model *m, LayerActs *a, QuerySet *qs) {
    const Ops *ops = m->ops;
    const int B = m->B, T = m->T, N = B * T;
    if (m->cfg.attn == ATTN_DENSE) {
        query_set_uniform(m, qs, T);
        return;
    }
    if (block_routes_by_threshold(&m->cfg)) {
        ops->select_threshold(a->sel, a->sel + N, a->r, N);
        query_set_count_on_host(m, a, qs, threshold_query_count(m, a));
    } else {
        ops->select_topn(a->sel, a->z, B, T, m->n_sel);
        query_set_uniform(m, qs, m->n_sel);
    }
    ops->token_positions(a->qpos, a->sel, qs->M, T);
}

// Backward: the query set the forward chose (a->sel and a->qpos are still valid).
static void load_queries(Model *m, LayerActs *a, QuerySet *qs) {
    if (block_routes_by_threshold(&m->cfg))
        query_set_count_on_host(m, a, qs, threshold_query_count(m, a));
    else
        query_set_uniform(m, qs, m->n_sel);
}

// ---- reflexive stream: conv + MLP, every token -----------------------------------------

// h = x + w2 GELU(w1 conv(u) + b1) + b2
static void reflexive_forward(Model *m, const LayerView *w, LayerActs *a) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, mH = c->mlp_mult * H;
    ops->conv_forward(a->c, a->u, w->conv_w, w->conv_b, m->B, m->T, H, c->conv_kernel);
    saved_linear_forward(ops, a->pre, a->c, a->c16, w->mlp_w1, w->mlp_b1, N, H, mH);
    ops->gelu_forward(a->act, a->pre, (size_t)N * mH);
    saved_linear_forward(ops, a->h, a->act, a->act16, w->mlp_w2, w->mlp_b2, N, mH, H);
    ops->axpy(a->h, 1.0f, a->x, (size_t)N * H);
}

// du += d(conv(u) -> f) given df = dh
static void reflexive_backward(Model *m, const LayerView *w, LayerView *gw, const LayerActs *a,
                               BlockGrads *g) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, mH = c->mlp_mult * H;
    ops->zero(g->dact, (size_t)N * mH * sizeof(float));
    saved_linear_backward(ops, g->dact, gw->mlp_w2, gw->mlp_b2, g->dh, a->act, a->act16, w->mlp_w2,
                          N, mH, H);
    ops->zero(g->dpre, (size_t)N * mH * sizeof(float));
    ops->gelu_backward(g->dpre, g->dact, a->pre, (size_t)N * mH);
    ops->zero(g->dc, (size_t)N * H * sizeof(float));
    saved_linear_backward(ops, g->dc, gw->mlp_w1, gw->mlp_b1, g->dpre, a->c, a->c16, w->mlp_w1, N,
                          H, mH);
    ops->conv_backward(g->du, gw->conv_w, gw->conv_b, g->dc, a->u, w->conv_w, m->B, m->T, H,
                       c->conv_kernel);
}

// ---- router ----------------------------------------------------------------------------

// r = router_w . u + router_b; z = r + Gumbel noise when training with top-n routing.
static void router_forward(Model *m, int layer, const LayerView *w, LayerActs *a,
                           const ForwardArgs *args) {
    const Ops *ops = m->ops;
    const int N = m->B * m->T;
    ops->linear_forward(a->r, a->u, w->router_w, w->router_b, N, m->cfg.d_model, 1);
    if (args->training && !block_routes_by_threshold(&m->cfg)) {
        ops->gumbel_noise(a->z, args->seed, args->step, (uint32_t)layer, args->seq_offset, m->B,
                          m->T);
        ops->axpy(a->z, 1.0f, a->r, (size_t)N);
    } else {
        ops->copy(a->z, a->r, (size_t)N * sizeof(float));
    }
}

// The route loss of one layer (MODEL.md "Loss", times lambda_r):
//   token_scale * sum_t BCEwithLogits(r_t, 1[t in sel]) + seq_scale * sum_b (mean_t sig(r_bt) -
//   rho)^2
// The second term is taken per sequence and averaged over sequences (seq_scale = 1 / global
// sequences) rather than over the whole batch at once: that keeps the loss a sum over
// sequences, so data-parallel ranks each add their own sequences and agree with one rank.
static void route_loss_forward(Model *m, const LayerActs *a, const ForwardArgs *args) {
    const ModelConfig *c = &m->cfg;
    m->ops->route_loss_forward(m->losses + 1, a->r, a->sel, (float)c->capacity,
                               (float)c->route_loss * args->token_scale,
                               (float)c->route_loss * args->seq_scale, m->B, m->T, m->n_sel);
}

static void route_loss_backward(Model *m, const LayerActs *a, BlockGrads *g) {
    const ModelConfig *c = &m->cfg;
    m->ops->route_loss_backward(g->dr, a->r, a->sel, (float)c->capacity,
                                (float)c->route_loss * m->last.token_scale,
                                (float)c->route_loss * m->last.seq_scale, m->B, m->T, m->n_sel);
}

// ---- sparse attention ------------------------------------------------------------------

// o = attention(q, k, v) for the query set: one call over B sequences when every sequence
// has the same number of queries, else one call per sequence on offset pointers.
static void attention_call_forward(Model *m, LayerActs *a, const QuerySet *qs) {
    const ModelConfig *c = &m->cfg;
    const int H = c->d_model, hd = model_head_dim(c), nh = c->n_heads, nkv = c->n_kv_heads;
    const int kv = nkv * hd, T = m->T;
    if (!block_routes_by_threshold(c)) {
        m->ops->attention_forward(a->o, a->lse, a->q, a->k, a->v, a->qpos, m->B, T, qs->M / m->B,
                                  nh, nkv, hd);
        return;
    }
    size_t first = 0; // first query of sequence b
    for (int b = 0; b < m->B; b++) {
        if (qs->counts[b] > 0)
            m->ops->attention_forward(a->o + first * H, a->lse + first * nh, a->q + first * H,
                                      a->k + (size_t)b * T * kv, a->v + (size_t)b * T * kv,
                                      a->qpos + first, 1, T, qs->counts[b], nh, nkv, hd);
        first += (size_t)qs->counts[b];
    }
}

static void attention_call_backward(Model *m, const LayerActs *a, const QuerySet *qs,
                                    BlockGrads *g) {
    const ModelConfig *c = &m->cfg;
    const int H = c->d_model, hd = model_head_dim(c), nh = c->n_heads, nkv = c->n_kv_heads;
    const int kv = nkv * hd, T = m->T;
    if (!block_routes_by_threshold(c)) {
        m->ops->attention_backward(g->dq, g->dk, g->dv, g->dout, a->q, a->k, a->v, a->o, a->lse,
                                   a->qpos, m->B, T, qs->M / m->B, nh, nkv, hd);
        return;
    }
    size_t first = 0;
    for (int b = 0; b < m->B; b++) {
        size_t kv_off = (size_t)b * T * kv;
        if (qs->counts[b] > 0)
            m->ops->attention_backward(g->dq + first * H, g->dk + kv_off, g->dv + kv_off,
                                       g->dout + first * H, a->q + first * H, a->k + kv_off,
                                       a->v + kv_off, a->o + first * H, a->lse + first * nh,
                                       a->qpos + first, 1, T, qs->counts[b], nh, nkv, hd);
        first += (size_t)qs->counts[b];
    }
}

// k, v for every token; q for the queries; h += gate * (wo . attention).
static void attention_forward(Model *m, const LayerView *w, LayerActs *a, const QuerySet *qs) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, hd = model_head_dim(c);
    const int kv = c->n_kv_heads * hd, M = qs->M;
    const float theta = (float)c->rope_theta;
    saved_linear_forward(ops, a->k, a->u, a->u16, w->wk, NULL, N, H, kv); // keeps u's copy
    ops->rope_forward(a->k, model_token_positions(m), N, c->n_kv_heads, hd, theta);
    ops->linear_forward(a->v, a->u, w->wv, NULL, N, H, kv);
    if (M == 0)
        return;
    ops->gather_rows(a->u_sel, a->u, a->sel, M, H, 0);
    saved_linear_forward(ops, a->q, a->u_sel, a->u_sel16, w->wq, NULL, M, H, H);
    ops->rope_forward(a->q, a->qpos, M, c->n_heads, hd, theta);
    attention_call_forward(m, a, qs);
    saved_linear_forward(ops, a->ao, a->o, a->o16, w->wo, NULL, M, H, H); // keeps o's copy
    ops->gated_scatter_add(a->h, a->ao, gate_logits(m, a), a->sel, M, H);
}

// du += d(attention)/du, dr += d(gate)/dr, given dh.
static void attention_backward(Model *m, const LayerView *w, LayerView *gw, const LayerActs *a,
                               const QuerySet *qs, BlockGrads *g) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, hd = model_head_dim(c);
    const int kv = c->n_kv_heads * hd, M = qs->M;
    const float theta = (float)c->rope_theta;
    ops->zero(g->dk, (size_t)N * kv * sizeof(float));
    ops->zero(g->dv, (size_t)N * kv * sizeof(float));
    if (M > 0) {
        const float *gate_r = gate_logits(m, a);
        ops->gated_scatter_add_backward(g->dao, gate_r ? g->dr : NULL, g->dh, a->ao, gate_r, a->sel,
                                        M, H);
        ops->zero(g->dout, (size_t)M * H * sizeof(float));
        saved_linear_backward(ops, g->dout, gw->wo, NULL, g->dao, a->o, a->o16, w->wo, M, H, H);
        ops->zero(g->dq, (size_t)M * H * sizeof(float));
        attention_call_backward(m, a, qs, g);
        ops->rope_backward(g->dq, a->qpos, M, c->n_heads, hd, theta);
        ops->zero(g->du_sel, (size_t)M * H * sizeof(float));
        saved_linear_backward(ops, g->du_sel, gw->wq, NULL, g->dq, a->u_sel, a->u_sel16, w->wq, M,
                              H, H);
        ops->scatter_add_rows(g->du, g->du_sel, a->sel, M, H, 0);
    }
    ops->rope_backward(g->dk, model_token_positions(m), N, c->n_kv_heads, hd, theta);
    saved_linear_backward(ops, g->du, gw->wk, NULL, g->dk, a->u, a->u16, w->wk, N, H, kv);
    saved_linear_backward(ops, g->du, gw->wv, NULL, g->dv, a->u, a->u16, w->wv, N, H, kv);
}

// ---- the block's token mixing, forward and backward -----------------------------------

void block_mix_forward(Model *m, int layer, const ForwardArgs *args) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const LayerView *w = &m->p.layers[layer];
    LayerActs *a = &m->acts[layer];
    const int N = m->B * m->T;
    profile_begin(m->profiler, PHASE_REFLEXIVE, PROFILE_FORWARD);
    ops->rmsnorm_forward(a->u, a->rstd_a, a->x, w->norm_a, N, c->d_model);
    reflexive_forward(m, w, a);
    profile_end(m->profiler);
    profile_begin(m->profiler, PHASE_ROUTER, PROFILE_FORWARD);
    // attn=dense has no router: every token is a query and the gate is fixed at 1.
    if (c->attn == ATTN_SPARSE)
        router_forward(m, layer, w, a, args);
    QuerySet qs;
    query_set_alloc(&qs, m->B);
    select_queries(m, a, &qs);
    profile_end(m->profiler);
    profile_begin(m->profiler, PHASE_ATTENTION, PROFILE_FORWARD);
    attention_forward(m, w, a, &qs);
    profile_end(m->profiler);
    query_set_free(&qs);
    profile_begin(m->profiler, PHASE_ROUTER, PROFILE_FORWARD);
    if (args->targets && block_has_route_loss(c))
        route_loss_forward(m, a, args);
    profile_end(m->profiler);
}

// recompute_elementwise: this layer's u, c, GELU(pre) and u_sel again, as the forward made
// them (the buffers are shared by the layers; the forward of later layers overwrote them).
static void recompute_mix_inputs(Model *m, const LayerView *w, LayerActs *a, const QuerySet *qs) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, mH = c->mlp_mult * H;
    profile_begin(m->profiler, PHASE_REFLEXIVE, PROFILE_BACKWARD);
    ops->rmsnorm_forward(a->u, a->rstd_a, a->x, w->norm_a, N, H); // rstd_a: the same values
    ops->conv_forward(a->c, a->u, w->conv_w, w->conv_b, m->B, m->T, H, c->conv_kernel);
    ops->gelu_forward(a->act, a->pre, (size_t)N * mH);
    if (qs->M > 0)
        ops->gather_rows(a->u_sel, a->u, a->sel, qs->M, H, 0);
    profile_end(m->profiler);
}

void block_mix_backward(Model *m, int layer, BlockGrads *g) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const LayerView *w = &m->p.layers[layer];
    LayerView *gw = &m->g.layers[layer];
    LayerActs *a = &m->acts[layer];
    const int N = m->B * m->T, H = c->d_model;
    QuerySet qs;
    query_set_alloc(&qs, m->B);
    load_queries(m, a, &qs);
    if (m->opt.recompute_elementwise)
        recompute_mix_inputs(m, w, a, &qs);
    profile_begin(m->profiler, PHASE_ATTENTION, PROFILE_BACKWARD);
    ops->copy(g->dx, g->dh, (size_t)N * H * sizeof(float)); // the residual path
    ops->zero(g->du, (size_t)N * H * sizeof(float));
    ops->zero(g->dr, (size_t)N * sizeof(float));
    attention_backward(m, w, gw, a, &qs, g);
    query_set_free(&qs);
    profile_end(m->profiler);
    profile_begin(m->profiler, PHASE_ROUTER, PROFILE_BACKWARD);
    // The router learns through the gate and the route loss only: selection passes no
    // gradient.
    if (c->attn == ATTN_SPARSE) {
        if (block_has_route_loss(c))
            route_loss_backward(m, a, g);
        ops->linear_backward(g->du, gw->router_w, gw->router_b, g->dr, a->u, w->router_w, N, H, 1);
    }
    profile_end(m->profiler);
    profile_begin(m->profiler, PHASE_REFLEXIVE, PROFILE_BACKWARD);
    reflexive_backward(m, w, gw, a, g);
    ops->rmsnorm_backward(g->dx, gw->norm_a, g->du, a->x, w->norm_a, a->rstd_a, N, H);
    profile_end(m->profiler);
}
