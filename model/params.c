// Parameter layout: the MODEL.md tensors in MODEL.md order, as views into one flat buffer.
// Dense (replicated) tensors come first so their gradients form one all-reduce span; the
// slot tables (memory keys and values of every layer, sharded by rows) are the tail.
#include "model/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"
#include "kernels/philox.h"

// Room for every tensor of the largest variant: 4 global + 18 per layer.
static int max_tensors(const ModelConfig *c) {
    return 4 + 18 * c->n_layers;
}

// Append one tensor; offsets are assigned afterwards (dense first, then the sharded tail).
static ParamTensor *add_tensor(ParamLayout *layout, const char *name, int ndim, int64_t dim0,
                               int64_t dim1, InitKind init, float init_std, ParamGroup group) {
    ParamTensor *t = &layout->tensors[layout->n_tensors];
    memset(t, 0, sizeof(*t));
    if (snprintf(t->name, sizeof(t->name), "%s", name) >= (int)sizeof(t->name))
        hs_fatal("parameter name too long: %s", name);
    t->ndim = ndim;
    t->shape[0] = ndim >= 1 ? dim0 : 1;
    t->shape[1] = ndim == 2 ? dim1 : 1;
    t->sharded = 0;
    t->row_begin = 0;
    t->rows = t->shape[0];
    t->numel = (size_t)(t->shape[0] * t->shape[1]);
    t->init = init;
    t->init_std = init_std;
    t->group = group;
    t->id = (uint32_t)layout->n_tensors;
    layout->n_tensors++;
    return t;
}

static void layer_name(char *out, size_t outlen, int layer, const char *suffix) {
    snprintf(out, outlen, "/model/layers/%02d/%s", layer, suffix);
}

// add_tensor for "/model/layers/{l}/<suffix>".
static void add_layer_tensor(ParamLayout *layout, int l, const char *suffix, int ndim, int64_t dim0,
                             int64_t dim1, InitKind init, float init_std, ParamGroup group) {
    char name[96];
    layer_name(name, sizeof(name), l, suffix);
    add_tensor(layout, name, ndim, dim0, dim1, init, init_std, group);
}

// The dense tensors of one block, in MODEL.md order.
static void add_layer_dense(ParamLayout *layout, const ModelConfig *c, int l) {
    const int64_t H = c->d_model, mH = (int64_t)c->mlp_mult * c->d_model;
    const int64_t kv = (int64_t)c->n_kv_heads * model_head_dim(c);
    const float std = 0.02f;
    // Output projections into the residual stream are scaled down by depth (GPT-2 style).
    const float std_out = (float)(0.02 / sqrt(2.0 * c->n_layers));
    add_layer_tensor(layout, l, "norm_a/weight", 1, H, 0, INIT_ONES, 0, GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "conv/weight", 2, H, c->conv_kernel, INIT_CONV_IDENTITY, 0,
                     GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "conv/bias", 1, H, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "mlp/w1", 2, mH, H, INIT_NORMAL, std, GROUP_DECAY);
    add_layer_tensor(layout, l, "mlp/b1", 1, mH, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "mlp/w2", 2, H, mH, INIT_NORMAL, std_out, GROUP_DECAY);
    add_layer_tensor(layout, l, "mlp/b2", 1, H, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
    // attn=dense keeps the router in the layout (unused, zero gradient) so checkpoints of
    // both variants share paths.
    add_layer_tensor(layout, l, "router/weight", 1, H, 0, INIT_NORMAL, std, GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "router/bias", 0, 0, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
    add_layer_tensor(layout, l, "attn/wq", 2, H, H, INIT_NORMAL, std, GROUP_DECAY);
    add_layer_tensor(layout, l, "attn/wk", 2, kv, H, INIT_NORMAL, std, GROUP_DECAY);
    add_layer_tensor(layout, l, "attn/wv", 2, kv, H, INIT_NORMAL, std, GROUP_DECAY);
    add_layer_tensor(layout, l, "attn/wo", 2, H, H, INIT_NORMAL, std_out, GROUP_DECAY);
    add_layer_tensor(layout, l, "norm_m/weight", 1, H, 0, INIT_ONES, 0, GROUP_NO_DECAY);
    if (c->ffn == FFN_MEMORY) {
        add_layer_tensor(layout, l, "memory/compressor/weight", 2, c->ptr_dim, H, INIT_NORMAL, std,
                         GROUP_DECAY);
        add_layer_tensor(layout, l, "memory/compressor/bias", 1, c->ptr_dim, 0, INIT_ZEROS, 0,
                         GROUP_NO_DECAY);
    } else {
        add_layer_tensor(layout, l, "ffn/w1", 2, 4 * H, H, INIT_NORMAL, std, GROUP_DECAY);
        add_layer_tensor(layout, l, "ffn/b1", 1, 4 * H, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
        add_layer_tensor(layout, l, "ffn/w2", 2, H, 4 * H, INIT_NORMAL, std_out, GROUP_DECAY);
        add_layer_tensor(layout, l, "ffn/b2", 1, H, 0, INIT_ZEROS, 0, GROUP_NO_DECAY);
    }
}

// The slot tables of one block; this rank holds rows [rank*S/P, (rank+1)*S/P).
static void add_layer_slots(ParamLayout *layout, const ModelConfig *c, int l) {
    const int64_t S = c->n_slots, rows = S / layout->world;
    char name[96];
    layer_name(name, sizeof(name), l, "memory/keys");
    ParamTensor *keys =
        add_tensor(layout, name, 2, S, c->ptr_dim, INIT_NORMAL, 0.02f, GROUP_SLOT_KEYS);
    layer_name(name, sizeof(name), l, "memory/values");
    ParamTensor *values =
        add_tensor(layout, name, 2, S, c->d_model, INIT_NORMAL, 0.02f, GROUP_SLOT_VALUES);
    ParamTensor *tables[2] = {keys, values};
    for (int i = 0; i < 2; i++) {
        tables[i]->sharded = 1;
        tables[i]->row_begin = (int64_t)layout->rank * rows;
        tables[i]->rows = rows;
        tables[i]->numel = (size_t)(rows * tables[i]->shape[1]);
    }
}

void param_layout_build(ParamLayout *layout, const ModelConfig *c, int rank, int world) {
    if (world <= 0 || rank < 0 || rank >= world)
        hs_fatal("param_layout_build: rank %d of world %d is not a valid rank", rank, world);
    if (c->ffn == FFN_MEMORY && c->n_slots % world != 0)
        hs_fatal("n_slots=%d is not divisible by the number of ranks (world=%d): every rank "
                 "must hold an equal block of slots",
                 c->n_slots, world);
    memset(layout, 0, sizeof(*layout));
    layout->rank = rank;
    layout->world = world;
    layout->tensors = hs_calloc((size_t)max_tensors(c), sizeof(ParamTensor));

    const int64_t H = c->d_model, V = c->vocab_size;
    add_tensor(layout, "/model/embed/weight", 2, V, H, INIT_NORMAL, 0.02f, GROUP_DECAY);
    for (int l = 0; l < c->n_layers; l++)
        add_layer_dense(layout, c, l);
    add_tensor(layout, "/model/norm_f/weight", 1, H, 0, INIT_ONES, 0, GROUP_NO_DECAY);
    add_tensor(layout, "/model/lm_head/weight", 2, V, H, INIT_NORMAL, 0.02f, GROUP_DECAY);
    int n_dense_tensors = layout->n_tensors;
    if (c->ffn == FFN_MEMORY)
        for (int l = 0; l < c->n_layers; l++)
            add_layer_slots(layout, c, l);

    size_t offset = 0;
    for (int i = 0; i < layout->n_tensors; i++) {
        if (i == n_dense_tensors)
            layout->n_dense = offset;
        layout->tensors[i].offset = offset;
        offset += layout->tensors[i].numel;
    }
    if (n_dense_tensors == layout->n_tensors)
        layout->n_dense = offset;
    layout->n_local = offset;
}

void param_layout_free(ParamLayout *layout) {
    free(layout->tensors);
    memset(layout, 0, sizeof(*layout));
}

const ParamTensor *param_layout_find(const ParamLayout *layout, const char *name) {
    for (int i = 0; i < layout->n_tensors; i++)
        if (strcmp(layout->tensors[i].name, name) == 0)
            return &layout->tensors[i];
    return NULL;
}

int64_t param_layout_global_count(const ParamLayout *layout) {
    int64_t total = 0;
    for (int i = 0; i < layout->n_tensors; i++)
        total += layout->tensors[i].shape[0] * layout->tensors[i].shape[1];
    return total;
}

// ---- init ------------------------------------------------------------------------------

static void init_tensor(const ParamTensor *t, uint64_t seed, float *out) {
    const int64_t cols = t->shape[1];
    switch (t->init) {
    case INIT_ZEROS:
        memset(out, 0, t->numel * sizeof(float));
        break;
    case INIT_ONES:
        for (size_t i = 0; i < t->numel; i++)
            out[i] = 1.0f;
        break;
    case INIT_NORMAL: {
        // Draws are keyed by the GLOBAL element index, so a shard holds exactly the
        // values the whole table would hold in those rows.
        const uint64_t first = (uint64_t)(t->row_begin * cols);
        for (size_t i = 0; i < t->numel; i++)
            out[i] = t->init_std * philox_normal(seed, t->id, first + i);
        break;
    }
    case INIT_CONV_IDENTITY:
        // weight [H, Kc]: the last tap multiplies the current token.
        for (int64_t r = 0; r < t->rows; r++)
            for (int64_t j = 0; j < cols; j++)
                out[r * cols + j] = (j == cols - 1) ? 1.0f : 0.0f;
        break;
    }
}

void param_layout_init_host(const ParamLayout *layout, uint64_t seed, float *params) {
    for (int i = 0; i < layout->n_tensors; i++)
        init_tensor(&layout->tensors[i], seed, params + layout->tensors[i].offset);
}

// ---- views -----------------------------------------------------------------------------

static float *view_of(const ParamLayout *layout, float *base, const char *name) {
    const ParamTensor *t = param_layout_find(layout, name);
    return t ? base + t->offset : NULL;
}

static float *layer_view_of(const ParamLayout *layout, float *base, int l, const char *suffix) {
    char name[96];
    layer_name(name, sizeof(name), l, suffix);
    return view_of(layout, base, name);
}

static void layer_view_build(LayerView *v, const ParamLayout *layout, float *base, int l) {
    v->norm_a = layer_view_of(layout, base, l, "norm_a/weight");
    v->conv_w = layer_view_of(layout, base, l, "conv/weight");
    v->conv_b = layer_view_of(layout, base, l, "conv/bias");
    v->mlp_w1 = layer_view_of(layout, base, l, "mlp/w1");
    v->mlp_b1 = layer_view_of(layout, base, l, "mlp/b1");
    v->mlp_w2 = layer_view_of(layout, base, l, "mlp/w2");
    v->mlp_b2 = layer_view_of(layout, base, l, "mlp/b2");
    v->router_w = layer_view_of(layout, base, l, "router/weight");
    v->router_b = layer_view_of(layout, base, l, "router/bias");
    v->wq = layer_view_of(layout, base, l, "attn/wq");
    v->wk = layer_view_of(layout, base, l, "attn/wk");
    v->wv = layer_view_of(layout, base, l, "attn/wv");
    v->wo = layer_view_of(layout, base, l, "attn/wo");
    v->norm_m = layer_view_of(layout, base, l, "norm_m/weight");
    v->comp_w = layer_view_of(layout, base, l, "memory/compressor/weight");
    v->comp_b = layer_view_of(layout, base, l, "memory/compressor/bias");
    v->keys = layer_view_of(layout, base, l, "memory/keys");
    v->values = layer_view_of(layout, base, l, "memory/values");
    v->ffn_w1 = layer_view_of(layout, base, l, "ffn/w1");
    v->ffn_b1 = layer_view_of(layout, base, l, "ffn/b1");
    v->ffn_w2 = layer_view_of(layout, base, l, "ffn/w2");
    v->ffn_b2 = layer_view_of(layout, base, l, "ffn/b2");
}

void model_view_build(ModelView *view, const ParamLayout *layout, const ModelConfig *c,
                      float *base) {
    view->embed = view_of(layout, base, "/model/embed/weight");
    view->norm_f = view_of(layout, base, "/model/norm_f/weight");
    view->lm_head = view_of(layout, base, "/model/lm_head/weight");
    view->layers = hs_calloc((size_t)c->n_layers, sizeof(LayerView));
    for (int l = 0; l < c->n_layers; l++)
        layer_view_build(&view->layers[l], layout, base, l);
}

void model_view_free(ModelView *view) {
    free(view->layers);
    view->layers = NULL;
}
