// Parameter layout: MODEL.md names <-> views into one flat buffer.
//
// Parameters, gradients, master weights and AdamW moments each live in ONE allocation of
// layout.n_local floats; a ParamTensor says where its slice sits. The dense tensors come
// first, [0, n_dense), so their gradients are all-reduced as one span; the slot tables
// (memory keys and values, sharded by rows across ranks) follow.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

typedef enum {
    INIT_ZEROS = 0,
    INIT_ONES,
    INIT_NORMAL,       // N(0, init_std)
    INIT_CONV_IDENTITY // 1 at tap Kc-1 (the current token), 0 elsewhere
} InitKind;

typedef enum {
    GROUP_DECAY = 0,   // dense matrices: weight decay applies
    GROUP_NO_DECAY,    // norms, biases, conv taps, router
    GROUP_SLOT_KEYS,   // sharded, no decay (rows untouched by a step must not shrink)
    GROUP_SLOT_VALUES, // sharded, no decay, own learning-rate multiplier
} ParamGroup;

typedef struct ParamTensor {
    char name[96];     // MODEL.md path, e.g. "/model/layers/03/attn/wq"
    int ndim;          // 0 (router bias), 1 or 2
    int64_t shape[2];  // global shape
    int sharded;       // 1: dim 0 split across ranks in contiguous blocks
    int64_t row_begin; // first global row held here (0 when not sharded)
    int64_t rows;      // rows held here (shape[0] when not sharded; 1 for ndim 0)
    size_t offset;     // first element in the flat buffers
    size_t numel;      // elements held here
    InitKind init;
    float init_std;
    ParamGroup group;
    uint32_t id; // index in the layout: seeds the tensor's init stream
} ParamTensor;

typedef struct ParamLayout {
    ParamTensor *tensors;
    int n_tensors;
    size_t n_dense; // elements in [0, n_dense): replicated on every rank
    size_t n_local; // elements held on this rank (dense + this rank's slot shards)
    int rank, world;
} ParamLayout;

// Build the layout for rank `rank` of `world`. Fatal error when n_slots % world != 0
// (naming both values). Free with param_layout_free.
void param_layout_build(ParamLayout *layout, const ModelConfig *c, int rank, int world);
void param_layout_free(ParamLayout *layout);
// Find a tensor by MODEL.md path; NULL if absent.
const ParamTensor *param_layout_find(const ParamLayout *layout, const char *name);
// Number of parameters in the global model (all shards counted once).
int64_t param_layout_global_count(const ParamLayout *layout);

// Fill host buffer params [n_local] as MODEL.md's init column says, from `seed`.
// Element-indexed Philox draws: every rank count gives the same global tensors.
void param_layout_init_host(const ParamLayout *layout, uint64_t seed, float *params);

// Pointers of one layer into a flat buffer (params, grads, moments alike).
typedef struct LayerView {
    float *norm_a;              // [H]
    float *conv_w, *conv_b;     // [H, Kc], [H]
    float *mlp_w1, *mlp_b1;     // [mH, H], [mH]
    float *mlp_w2, *mlp_b2;     // [H, mH], [H]
    float *router_w, *router_b; // [H], [1]
    float *wq;                  // [H, H]
    float *wk, *wv;             // [nkv*hd, H]
    float *wo;                  // [H, H]
    float *norm_m;              // [H]
    // ffn=memory
    float *comp_w, *comp_b; // [R, H], [R]
    float *keys;            // [S_local, R]  rows [row_begin, row_begin + S_local)
    float *values;          // [S_local, H]
    // ffn=dense (paths /model/layers/{l}/ffn/w1, b1, w2, b2)
    float *ffn_w1, *ffn_b1; // [4H, H], [4H]
    float *ffn_w2, *ffn_b2; // [H, 4H], [H]
} LayerView;

typedef struct ModelView {
    float *embed;      // [V, H]
    LayerView *layers; // [L]
    float *norm_f;     // [H]
    float *lm_head;    // [V, H]
} ModelView;

// Point a view's fields into `base` (a flat buffer of layout->n_local floats). Fields of
// tensors absent in this variant are NULL. view->layers is allocated; free with
// model_view_free.
void model_view_build(ModelView *view, const ParamLayout *layout, const ModelConfig *c,
                      float *base);
void model_view_free(ModelView *view);
