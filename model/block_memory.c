// The second half of one HSPMN-SM block: y = h + memory(RMSNorm(h; norm_m)).
//   ffn=memory (SparseMind): p = compressor(hn); the top-K slots by p . keys / sqrt(R),
//                            read out with softmax weights (the slot exchange finds and
//                            fetches the rows, wherever they live)
//   ffn=dense (baseline):    y = h + w2 GELU(w1 hn + b1) + b2, H -> 4H -> H
// In the slot memory only the K chosen rows of a token get gradient: the backward is sparse.
#include "model/block.h"

// The entropy loss weight of the forward being run (0 without targets: no loss).
static float entropy_scale(const Model *m, const ForwardArgs *args) {
    return args->targets ? (float)m->cfg.entropy_loss * args->token_scale : 0.0f;
}

// ---- slot memory -------------------------------------------------------------------------

static void slot_memory_forward(Model *m, int layer, const LayerView *w, LayerActs *a,
                                const ForwardArgs *args, float *y) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model;
    saved_linear_forward(ops, a->p, a->hn, a->hn16, w->comp_w, w->comp_b, N, H, c->ptr_dim);
    a->value_rows = slot_exchange_forward(m->slots, layer, a->p, w->keys, w->values, a->top_s,
                                          a->top_i, a->krows, a->vrows_received);
    ops->slot_read_forward(y, a->w, m->losses + 2, a->h, a->top_s, a->value_rows.table,
                           a->value_rows.idx, entropy_scale(m, args), N, c->top_k, H);
}

// dh += dy (the residual), dhn += d(compressor input); slot row gradients go to their owners.
static void slot_memory_backward(Model *m, int layer, const LayerView *w, LayerView *gw,
                                 LayerActs *a, BlockGrads *g) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model, R = c->ptr_dim, K = c->top_k;
    // With refetch_slot_rows the rows are shared by the layers: this layer's again. The tables
    // have not changed since the forward, so they are the same rows, bit for bit.
    if (m->opt.refetch_slot_rows)
        a->value_rows =
            slot_exchange_refetch(m->slots, layer, w->keys, w->values, a->krows, a->vrows_received);
    float *dvalues = slot_exchange_value_grads(m->slots, layer, gw->values);
    ops->slot_read_backward(g->dh, g->ds, dvalues, g->dy, a->w, a->value_rows.table,
                            a->value_rows.idx, entropy_scale(m, &m->last), N, K, H);
    ops->zero(g->dp, (size_t)N * R * sizeof(float));
    ops->slot_score_backward(g->dp, g->dkrows, g->ds, a->p, a->krows, N, K, R);
    slot_exchange_backward(m->slots, layer, g->dkrows, gw->keys, gw->values);
    saved_linear_backward(ops, g->dhn, gw->comp_w, gw->comp_b, g->dp, a->hn, a->hn16, w->comp_w, N,
                          H, R);
}

// ---- dense FFN baseline --------------------------------------------------------------------

static void dense_ffn_forward(Model *m, const LayerView *w, LayerActs *a, float *y) {
    const Ops *ops = m->ops;
    const int N = m->B * m->T, H = m->cfg.d_model, H4 = 4 * H;
    saved_linear_forward(ops, a->ffn_pre, a->hn, a->hn16, w->ffn_w1, w->ffn_b1, N, H, H4);
    ops->gelu_forward(a->ffn_act, a->ffn_pre, (size_t)N * H4);
    saved_linear_forward(ops, y, a->ffn_act, a->ffn_act16, w->ffn_w2, w->ffn_b2, N, H4, H);
    ops->axpy(y, 1.0f, a->h, (size_t)N * H);
}

static void dense_ffn_backward(Model *m, const LayerView *w, LayerView *gw, const LayerActs *a,
                               BlockGrads *g) {
    const Ops *ops = m->ops;
    const int N = m->B * m->T, H = m->cfg.d_model, H4 = 4 * H;
    ops->axpy(g->dh, 1.0f, g->dy, (size_t)N * H); // the residual
    ops->zero(g->dffn_act, (size_t)N * H4 * sizeof(float));
    saved_linear_backward(ops, g->dffn_act, gw->ffn_w2, gw->ffn_b2, g->dy, a->ffn_act, a->ffn_act16,
                          w->ffn_w2, N, H4, H);
    ops->zero(g->dffn_pre, (size_t)N * H4 * sizeof(float));
    ops->gelu_backward(g->dffn_pre, g->dffn_act, a->ffn_pre, (size_t)N * H4);
    saved_linear_backward(ops, g->dhn, gw->ffn_w1, gw->ffn_b1, g->dffn_pre, a->hn, a->hn16,
                          w->ffn_w1, N, H, H4);
}

// ---- the block's second half ---------------------------------------------------------------

void block_memory_forward(Model *m, int layer, const ForwardArgs *args, float *y) {
    const LayerView *w = &m->p.layers[layer];
    LayerActs *a = &m->acts[layer];
    const int N = m->B * m->T;
    profile_begin(m->profiler, PHASE_SLOT_MEMORY, PROFILE_FORWARD);
    m->ops->rmsnorm_forward(a->hn, a->rstd_m, a->h, w->norm_m, N, m->cfg.d_model);
    if (m->cfg.ffn == FFN_MEMORY)
        slot_memory_forward(m, layer, w, a, args, y);
    else
        dense_ffn_forward(m, w, a, y);
    profile_end(m->profiler);
}

void block_memory_backward(Model *m, int layer, BlockGrads *g) {
    const Ops *ops = m->ops;
    const LayerView *w = &m->p.layers[layer];
    LayerView *gw = &m->g.layers[layer];
    LayerActs *a = &m->acts[layer];
    const int N = m->B * m->T, H = m->cfg.d_model;
    profile_begin(m->profiler, PHASE_SLOT_MEMORY, PROFILE_BACKWARD);
    if (m->opt.recompute_elementwise) // hn is shared by the layers: this layer's again
        ops->rmsnorm_forward(a->hn, a->rstd_m, a->h, w->norm_m, N, H);
    ops->zero(g->dh, (size_t)N * H * sizeof(float));
    ops->zero(g->dhn, (size_t)N * H * sizeof(float));
    if (m->cfg.ffn == FFN_MEMORY)
        slot_memory_backward(m, layer, w, gw, a, g);
    else
        dense_ffn_backward(m, w, gw, a, g);
    ops->rmsnorm_backward(g->dh, gw->norm_m, g->dhn, a->h, w->norm_m, a->rstd_m, N, H);
    profile_end(m->profiler);
}
