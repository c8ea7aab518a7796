// Private to model/: the stages of one HSPMN-SM block, forward and backward, and the
// scratch buffers the backward works in. model.c drives them; nothing outside model/
// includes this header.
#pragma once
#include <stdint.h>

#include "model/model.h"

// Gradients the backward of one block works with, carved from Model.scratch.
// N = B*T tokens, Mcap = the most query tokens a layer can have. dy, dx and dh cross between
// the two halves of the block's backward; the others belong to one half (the memory half:
// dhn and the ffn=memory / ffn=dense ones; the mixing half: the rest) and the two halves'
// buffers share memory (model.c carve_scratch): a half must not read the other's.
typedef struct BlockGrads {
    float *dy;      // [N, H] gradient of the block output (in), reused as the next dy
    float *dx;      // [N, H] gradient of the block input (out)
    float *dh;      // [N, H] gradient of h = x + f + a
    float *dhn;     // [N, H] gradient of RMSNorm(h; norm_m)
    float *du;      // [N, H] gradient of u = RMSNorm(x; norm_a)
    float *dc;      // [N, H] gradient of the conv output
    float *dpre;    // [N, mH]
    float *dact;    // [N, mH]
    float *dr;      // [N] router logits
    float *dk, *dv; // [N, nkv*hd]
    float *dao;     // [Mcap, H]
    float *dout;    // [Mcap, H] gradient of the attention output o
    float *dq;      // [Mcap, H]
    float *du_sel;  // [Mcap, H]
    // ffn=memory
    float *dp;     // [N, R]
    float *ds;     // [N, K]
    float *dkrows; // [N, K, R] (the value rows' gradients go where the rows are)
    // ffn=dense
    float *dffn_pre; // [N, 4H]
    float *dffn_act; // [N, 4H]
} BlockGrads;

// The most query tokens one layer can have (B*n_sel, or N with route=threshold).
int block_query_capacity(const Model *m);
// 1 when queries are chosen causally (sigmoid(r) > 0.5), per sequence.
int block_routes_by_threshold(const ModelConfig *c);
// Position in its sequence of every token, t for n = b*T + t: int32 [N] backend buffer
// (the first part of Model.scratch, written once by model_build).
const int32_t *model_token_positions(const Model *m);
// 1 when the route loss applies (sparse attention, top-n selection).
int block_has_route_loss(const ModelConfig *c);

// linear_forward whose input x the model keeps for the backward: with a bf16 copy x16
// (LayerActs.c16, ...; bf16_activations) the GEMM writes it on the way.
static inline void saved_linear_forward(const Ops *ops, float *out, const float *x, uint16_t *x16,
                                        const float *w, const float *b, int N, int I, int O) {
    if (x16)
        ops->linear_forward_keep_bf16(out, x16, x, w, b, N, I, O);
    else
        ops->linear_forward(out, x, w, b, N, I, O);
}

// linear_backward of a saved activation x: from the layer's bf16 copy x16 when the model
// keeps one for the GEMMs (LayerActs.c16, ...; bf16_activations), else from x.
static inline void saved_linear_backward(const Ops *ops, float *dx, float *dw, float *db,
                                         const float *dout, const float *x, const uint16_t *x16,
                                         const float *w, int N, int I, int O) {
    if (x16)
        ops->linear_backward_bf16_input(dx, dw, db, dout, x16, w, N, I, O);
    else
        ops->linear_backward(dx, dw, db, dout, x, w, N, I, O);
}

// ---- token mixing: norm, reflexive stream, router, sparse attention (block_mix.c) ----
// Forward from acts->x to acts->h = x + f + a; adds the route loss (scaled) into
// m->losses[1] when args->targets is set.
void block_mix_forward(Model *m, int layer, const ForwardArgs *args);
// Backward from g->dh to g->dx (overwritten), parameter gradients added.
void block_mix_backward(Model *m, int layer, BlockGrads *g);

// ---- slot memory or dense FFN (block_memory.c) -------------------------------------------
// Forward from acts->h to y [N, H]; the entropy loss (scaled) is added into m->losses[2].
void block_memory_forward(Model *m, int layer, const ForwardArgs *args, float *y);
// Backward from g->dy to g->dh (overwritten), parameter gradients added.
void block_memory_backward(Model *m, int layer, BlockGrads *g);
