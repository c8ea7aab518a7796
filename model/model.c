// HSPMN-SM: buffers, init, and the forward/backward drivers over the blocks
// (model/block_mix.c, model/block_memory.c):
//   x = embed[tokens] -> L blocks -> RMSNorm(norm_f) -> lm_head -> cross-entropy
// The LM head and its loss run in chunks of tokens (see head_chunks below).
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"
#include "model/block.h"

// Bytes of fp32 logits the LM head holds at once. The full [N, V] logits of a seed step
// (16384 x 50257) would be 3.3 GB, written and read several times; a chunk of this size is
// 1280 tokens at V = 50257, still large enough for the head's GEMMs to run at full speed.
#define MODEL_HEAD_CHUNK_BYTES ((size_t)256 << 20)
// Chunks of at least this many tokens are rounded down to a multiple of it (GEMM tiles).
#define MODEL_HEAD_CHUNK_ALIGN 128

// ---- carving buffers out of one allocation -------------------------------------------------

// Hands out aligned pieces of one backend allocation. A first pass with base == NULL only
// measures (every piece is NULL); the second pass, over the allocation, assigns.
typedef struct Carver {
    char *base;
    size_t used; // bytes
} Carver;

static void *carve(Carver *cv, size_t count, size_t elem_bytes) {
    const size_t align = 256; // keeps every piece aligned for vector loads on any backend
    size_t bytes = (count * elem_bytes + align - 1) / align * align;
    void *piece = cv->base ? cv->base + cv->used : NULL;
    cv->used += bytes;
    return piece;
}

static float *carve_floats(Carver *cv, size_t count) {
    return carve(cv, count, sizeof(float));
}

static int32_t *carve_ints(Carver *cv, size_t count) {
    return carve(cv, count, sizeof(int32_t));
}

// The activations recompute_elementwise lets the layers share (model.h ModelOptions).
static void carve_recomputable(const Model *m, LayerActs *a, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t Mq = (size_t)block_query_capacity(m);
    a->u = carve_floats(cv, N * H);
    a->c = carve_floats(cv, N * H);
    a->act = carve_floats(cv, N * mH);
    a->u_sel = carve_floats(cv, Mq * H);
    a->hn = carve_floats(cv, N * H);
}

// The slot rows refetch_slot_rows lets the layers share.
static void carve_slot_rows(const Model *m, LayerActs *a, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t NK = (size_t)m->B * m->T * c->top_k;
    a->krows = carve_floats(cv, NK * c->ptr_dim);
    a->vrows = carve_floats(cv, NK * c->d_model);
}

// One layer's activations. `shared` holds the buffers the options `opt` let every layer
// share (the layer points at them: the backward makes its own again before using them);
// the rest are the layer's own.
static void carve_layer_acts(const Model *m, const ModelOptions *opt, LayerActs *a,
                             const LayerActs *shared, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t kv = (size_t)c->n_kv_heads * model_head_dim(c);
    const size_t Mq = (size_t)block_query_capacity(m), K = c->top_k, R = c->ptr_dim;
    if (opt->recompute_elementwise) {
        a->u = shared->u;
        a->c = shared->c;
        a->act = shared->act;
        a->u_sel = shared->u_sel;
        a->hn = shared->hn;
    } else {
        carve_recomputable(m, a, cv);
    }
    a->x = carve_floats(cv, N * H);
    a->rstd_a = carve_floats(cv, N);
    a->pre = carve_floats(cv, N * mH);
    a->r = carve_floats(cv, N);
    a->z = carve_floats(cv, N);
    // One extra entry: route=threshold writes its query count after the indices.
    a->sel = carve_ints(cv, Mq + 1);
    a->qpos = carve_ints(cv, Mq);
    a->q = carve_floats(cv, Mq * H);
    a->k = carve_floats(cv, N * kv);
    a->v = carve_floats(cv, N * kv);
    a->o = carve_floats(cv, Mq * H);
    a->lse = carve_floats(cv, Mq * c->n_heads);
    a->ao = carve_floats(cv, Mq * H);
    a->h = carve_floats(cv, N * H);
    a->rstd_m = carve_floats(cv, N);
    if (c->ffn == FFN_MEMORY) {
        a->p = carve_floats(cv, N * R);
        a->top_s = carve_floats(cv, N * K);
        a->top_i = carve_ints(cv, N * K);
        a->w = carve_floats(cv, N * K);
        if (opt->refetch_slot_rows) {
            a->krows = shared->krows;
            a->vrows = shared->vrows;
        } else {
            carve_slot_rows(m, a, cv);
        }
    } else {
        a->ffn_pre = carve_floats(cv, N * 4 * H);
        a->ffn_act = carve_floats(cv, N * 4 * H);
    }
}

// Every activation with memory options `opt`, in one allocation (Model.activation_arena,
// which model_free frees).
static void carve_activations(Model *m, const ModelOptions *opt, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model;
    LayerActs shared = {0};
    if (opt->recompute_elementwise)
        carve_recomputable(m, &shared, cv);
    if (opt->refetch_slot_rows && c->ffn == FFN_MEMORY)
        carve_slot_rows(m, &shared, cv);
    for (int l = 0; l < c->n_layers; l++)
        carve_layer_acts(m, opt, &m->acts[l], &shared, cv);
    m->embed_out = m->acts[0].x;
    m->y_final = carve_floats(cv, N * H);
    m->yn = carve_floats(cv, N * H);
    m->rstd_f = carve_floats(cv, N);
    m->predictions = carve_ints(cv, N);
    m->losses = carve_floats(cv, 3);
}

// Model.scratch holds the token positions [N] (int32, written once) and then the
// backward's gradient buffers.
static void carve_scratch(const Model *m, Carver *cv, int32_t **positions, BlockGrads *g) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t kv = (size_t)c->n_kv_heads * model_head_dim(c);
    const size_t Mq = (size_t)block_query_capacity(m), K = c->top_k, R = c->ptr_dim;
    *positions = carve_ints(cv, N);
    memset(g, 0, sizeof(*g));
    g->dy = carve_floats(cv, N * H);
    g->dx = carve_floats(cv, N * H);
    g->dh = carve_floats(cv, N * H);
    g->dhn = carve_floats(cv, N * H);
    g->du = carve_floats(cv, N * H);
    g->dc = carve_floats(cv, N * H);
    g->dpre = carve_floats(cv, N * mH);
    g->dact = carve_floats(cv, N * mH);
    g->dr = carve_floats(cv, N);
    g->dk = carve_floats(cv, N * kv);
    g->dv = carve_floats(cv, N * kv);
    g->dao = carve_floats(cv, Mq * H);
    g->dout = carve_floats(cv, Mq * H);
    g->dq = carve_floats(cv, Mq * H);
    g->du_sel = carve_floats(cv, Mq * H);
    if (c->ffn == FFN_MEMORY) {
        g->dp = carve_floats(cv, N * R);
        g->ds = carve_floats(cv, N * K);
        g->dkrows = carve_floats(cv, N * K * R);
        g->dvrows = carve_floats(cv, N * K * H);
    } else {
        g->dffn_pre = carve_floats(cv, N * 4 * H);
        g->dffn_act = carve_floats(cv, N * 4 * H);
    }
}

const int32_t *model_token_positions(const Model *m) {
    return (const int32_t *)m->scratch;
}

// ---- build / free / init -----------------------------------------------------------------

// Bytes of the activation arena with memory options `opt` (a measuring pass: it leaves
// every activation pointer NULL until alloc_activations assigns them).
static size_t activation_bytes(Model *m, const ModelOptions *opt) {
    Carver measure = {NULL, 0};
    carve_activations(m, opt, &measure);
    return measure.used;
}

// A clear refusal, before the allocation fails (or, on the host, overcommits and the job is
// killed later), when the activations cannot fit the memory the device has free: it says
// what each memory option would save.
static void check_activations_fit(Model *m, size_t bytes) {
    size_t free_bytes = 0, total_bytes = 0;
    m->ops->memory_device_info(&free_bytes, &total_bytes);
    if (free_bytes == 0 || bytes <= free_bytes) // 0: unknown, the allocation will tell
        return;
    const double mib = 1024.0 * 1024.0;
    // What each memory option that is still off would save.
    ModelOptions refetch = m->opt, recompute = m->opt;
    refetch.refetch_slot_rows = 1;
    recompute.recompute_elementwise = 1;
    char refetch_saves[64] = "", recompute_saves[64] = "";
    if (!m->opt.refetch_slot_rows)
        snprintf(refetch_saves, sizeof(refetch_saves), "--refetch_slot_rows 1 saves %.0f MiB",
                 (double)(bytes - activation_bytes(m, &refetch)) / mib);
    if (!m->opt.recompute_elementwise)
        snprintf(recompute_saves, sizeof(recompute_saves),
                 "--recompute_elementwise 1 saves %.0f MiB",
                 (double)(bytes - activation_bytes(m, &recompute)) / mib);
    char advice[256];
    if (refetch_saves[0] || recompute_saves[0])
        snprintf(advice, sizeof(advice), ", or let the backward redo work (%s%s%s)", refetch_saves,
                 refetch_saves[0] && recompute_saves[0] ? ", " : "", recompute_saves);
    else
        snprintf(advice, sizeof(advice),
                 " (both memory options, --refetch_slot_rows and "
                 "--recompute_elementwise, are on already)");
    hs_fatal("model_build: the activations of %d sequences of %d tokens need %.0f MiB, but the "
             "%s backend has %.0f MiB free: lower --micro_batch%s",
             m->B, m->T, bytes / mib, m->ops->name, free_bytes / mib, advice);
}

static void alloc_activations(Model *m) {
    const size_t bytes = activation_bytes(m, &m->opt);
    check_activations_fit(m, bytes);
    m->activation_arena = m->ops->alloc(bytes);
    Carver assign = {m->activation_arena, 0};
    carve_activations(m, &m->opt, &assign);
}

static void alloc_scratch(Model *m) {
    int32_t *positions;
    BlockGrads unused;
    Carver measure = {NULL, 0};
    carve_scratch(m, &measure, &positions, &unused);
    m->scratch = m->ops->alloc(measure.used);
    m->scratch_floats = measure.used / sizeof(float);
    // d yn lives where the backward's first gradient buffer (dh) is: it is consumed by the
    // norm_f backward before the blocks' backward writes dh.
    BlockGrads g;
    Carver assign = {(char *)m->scratch, 0};
    carve_scratch(m, &assign, &positions, &g);
    m->dyn = g.dh;
}

int model_default_head_chunk(int V, int N) {
    size_t rows = MODEL_HEAD_CHUNK_BYTES / ((size_t)V * sizeof(float));
    if (rows >= MODEL_HEAD_CHUNK_ALIGN)
        rows -= rows % MODEL_HEAD_CHUNK_ALIGN;
    if (rows < 1)
        rows = 1;
    return rows < (size_t)N ? (int)rows : N;
}

void model_set_head_chunk(Model *m, int rows) {
    if (rows < 1)
        hs_fatal("model_set_head_chunk: %d tokens per chunk (must be >= 1)", rows);
    if (m->logits)
        m->ops->free(m->logits);
    m->head_chunk = rows;
    // V + 8 floats a row: lm_head_loss may pad rows to 8 elements (aligned GEMM output)
    m->logits = m->ops->alloc((size_t)rows * (m->cfg.vocab_size + 8) * sizeof(float));
}

// Positions t of every token n = b*T + t; with attn=dense also every layer's query set
// (all tokens), which never changes.
static void write_constant_indices(Model *m) {
    const int N = m->B * m->T;
    int32_t *flat = hs_malloc((size_t)N * sizeof(int32_t)); // [N] host
    int32_t *pos = hs_malloc((size_t)N * sizeof(int32_t));  // [N] host
    for (int n = 0; n < N; n++)
        flat[n] = n, pos[n] = n % m->T;
    m->ops->copy_from_host(m->scratch, pos, (size_t)N * sizeof(int32_t));
    if (m->cfg.attn == ATTN_DENSE) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            m->ops->copy_from_host(m->acts[l].sel, flat, (size_t)N * sizeof(int32_t));
            m->ops->copy_from_host(m->acts[l].qpos, pos, (size_t)N * sizeof(int32_t));
        }
    }
    free(flat);
    free(pos);
}

void model_build(Model *m, const ModelConfig *cfg, const Ops *ops, Comm *comm, int B, int T) {
    model_build_with(m, cfg, ops, comm, B, T, NULL);
}

void model_build_with(Model *m, const ModelConfig *cfg, const Ops *ops, Comm *comm, int B, int T,
                      const ModelOptions *opt) {
    char err[256];
    if (model_config_validate(cfg, err, sizeof(err)) != 0)
        hs_fatal("invalid model configuration: %s", err);
    if (B <= 0 || T <= 0)
        hs_fatal("model_build: micro-batch B=%d, T=%d must be positive", B, T);
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    if (opt)
        m->opt = *opt;
    m->ops = ops;
    m->comm = comm;
    m->B = B;
    m->T = T;
    m->n_sel = model_n_selected(cfg, T);
    int rank = comm ? comm_rank(comm) : 0, world = comm ? comm_world(comm) : 1;
    param_layout_build(&m->layout, cfg, rank, world);
    m->params = ops->alloc(m->layout.n_local * sizeof(float));
    m->grads = ops->alloc(m->layout.n_local * sizeof(float));
    model_view_build(&m->p, &m->layout, cfg, m->params);
    model_view_build(&m->g, &m->layout, cfg, m->grads);
    m->acts = hs_calloc((size_t)cfg->n_layers, sizeof(LayerActs));
    alloc_activations(m);
    alloc_scratch(m);
    model_set_head_chunk(m, model_default_head_chunk(cfg->vocab_size, B * T));
    write_constant_indices(m);
    if (cfg->ffn == FFN_MEMORY)
        m->slots = slot_exchange_create(comm, ops, B * T, cfg->ptr_dim, cfg->d_model, cfg->top_k,
                                        cfg->n_slots, cfg->n_layers);
}

void model_free(Model *m) {
    slot_exchange_destroy(m->slots);
    m->ops->free(m->activation_arena);
    m->ops->free(m->scratch);
    m->ops->free(m->logits);
    m->ops->free(m->params);
    m->ops->free(m->grads);
    model_view_free(&m->p);
    model_view_free(&m->g);
    free(m->acts);
    param_layout_free(&m->layout);
    memset(m, 0, sizeof(*m));
}

void model_init(Model *m, uint64_t seed) {
    float *host = hs_malloc(m->layout.n_local * sizeof(float)); // [n_local]
    param_layout_init_host(&m->layout, seed, host);
    m->ops->copy_from_host(m->params, host, m->layout.n_local * sizeof(float));
    free(host);
}

void model_zero_grad(Model *m) {
    m->ops->zero(m->grads, m->layout.n_local * sizeof(float));
}

LossParts model_losses(const Model *m) {
    float parts[3];
    m->ops->copy_to_host(parts, m->losses, sizeof(parts));
    LossParts out = {parts[0], parts[1], parts[2], 0.0};
    out.total = out.ce + out.route + out.entropy;
    return out;
}

// ---- forward / backward --------------------------------------------------------------------

// The output of block l is the input of block l + 1; the last block writes y_final.
static float *block_output(Model *m, int layer) {
    return layer + 1 < m->cfg.n_layers ? m->acts[layer + 1].x : m->y_final;
}

// The LM head and cross-entropy over chunks of head_chunk tokens (ops->lm_head_loss): per
// chunk, logits = yn_c . lm_head^T in m->logits, loss += ce_scale * CE, predictions_c =
// argmax, and (with_grad) dyn_c = dlogits . lm_head, g.lm_head += dlogits^T . yn_c, so only
// one chunk of logits ever exists and each is used while it is hot. loss and predictions
// may be NULL (the backward's recomputation wants neither). The op runs the forward and
// backward products together; the profile counts it in the pass that called it.
static void head_chunks(Model *m, float *loss, int32_t *predictions, int with_grad,
                        ProfileDirection pass) {
    const int N = m->B * m->T, H = m->cfg.d_model, V = m->cfg.vocab_size;
    const ForwardArgs *args = &m->last;
    profile_begin(m->profiler, PHASE_HEAD_LOSS, pass);
    m->ops->lm_head_loss(loss, predictions, with_grad ? m->dyn : NULL, m->g.lm_head, m->logits,
                         m->yn, m->p.lm_head, args->targets, args->ce_scale, N, H, V,
                         m->head_chunk);
    profile_end(m->profiler);
}

void model_forward(Model *m, const ForwardArgs *args) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model;
    m->last = *args;
    profile_begin(m->profiler, PHASE_EMBED, PROFILE_FORWARD);
    ops->zero(m->losses, 3 * sizeof(float));
    ops->gather_rows(m->embed_out, m->p.embed, args->tokens, N, H, 0);
    profile_end(m->profiler);
    for (int l = 0; l < c->n_layers; l++) {
        block_mix_forward(m, l, args);
        block_memory_forward(m, l, args, block_output(m, l));
    }
    profile_begin(m->profiler, PHASE_HEAD_LOSS, PROFILE_FORWARD);
    ops->rmsnorm_forward(m->yn, m->rstd_f, m->y_final, m->p.norm_f, N, H);
    profile_end(m->profiler);
    // Without targets there is no loss to compute: logits are made on demand (model_logits).
    if (args->targets)
        head_chunks(m, m->losses, m->predictions, args->want_grad, PROFILE_FORWARD);
}

const float *model_logits(Model *m, int first, int count) {
    const int N = m->B * m->T, H = m->cfg.d_model, V = m->cfg.vocab_size;
    if (first < 0 || count < 1 || count > m->head_chunk || first + count > N)
        hs_fatal("model_logits: tokens [%d, %d) outside [0, %d) or more than the %d of a chunk",
                 first, first + count, N, m->head_chunk);
    m->ops->linear_forward(m->logits, m->yn + (size_t)first * H, m->p.lm_head, NULL, count, H, V);
    return m->logits;
}

// Backward of the last forward. The head's part (dlogits, g.lm_head, dyn) already ran in a
// forward with want_grad; otherwise it runs here, recomputing the logits chunk by chunk.
void model_backward(Model *m) {
    const Ops *ops = m->ops;
    const ModelConfig *c = &m->cfg;
    const int N = m->B * m->T, H = c->d_model;
    const ForwardArgs *args = &m->last;
    if (args->targets == NULL)
        hs_fatal("model_backward: the last forward had no targets, so there is no loss");
    if (!args->want_grad)
        head_chunks(m, NULL, NULL, 1, PROFILE_BACKWARD);
    int32_t *positions;
    BlockGrads g;
    Carver cv = {(char *)m->scratch, 0};
    carve_scratch(m, &cv, &positions, &g);

    profile_begin(m->profiler, PHASE_HEAD_LOSS, PROFILE_BACKWARD);
    ops->zero(g.dy, (size_t)N * H * sizeof(float));
    ops->rmsnorm_backward(g.dy, m->g.norm_f, m->dyn, m->y_final, m->p.norm_f, m->rstd_f, N, H);
    profile_end(m->profiler);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        block_memory_backward(m, l, &g); // dy -> dh
        block_mix_backward(m, l, &g);    // dh -> dx
        float *next_dy = g.dx;           // the input gradient feeds the block below
        g.dx = g.dy;
        g.dy = next_dy;
    }
    profile_begin(m->profiler, PHASE_EMBED, PROFILE_BACKWARD);
    ops->scatter_add_rows(m->g.embed, g.dy, args->tokens, N, H, 0);
    profile_end(m->profiler);
}
