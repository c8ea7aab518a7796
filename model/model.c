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

// A buffer of `count` floats the backward reads. Without bf16 activations (in_work == 0) it
// is the layer's own. With them the layer computes in the shared working buffer `work` and
// keeps a bf16 copy of its own, listed in `group` and made and read back as `kind` says
// (model.h KeptKind); for a GEMM input *gemm_copy is the copy, for the GEMMs to write and
// read (NULL otherwise; gemm_copy itself may be NULL for KEPT_ROUNDED). With no group (the
// last layer, whose backward comes first, while the working set still holds its forward)
// the layer keeps nothing and reads `work` itself.
static float *carve_saved(Carver *cv, size_t count, float *work, int in_work, KeptGroup *group,
                          KeptKind kind, uint16_t **gemm_copy) {
    if (gemm_copy)
        *gemm_copy = NULL;
    if (!in_work)
        return carve_floats(cv, count);
    if (!group)
        return work;
    if (group->n == MODEL_MAX_KEPT)
        hs_fatal("carve_saved: more than %d kept activations in one group", MODEL_MAX_KEPT);
    KeptTensor *t = &group->t[group->n++];
    t->work = work;
    t->kept = carve(cv, count, sizeof(uint16_t));
    t->count = count;
    t->kind = kind;
    if (gemm_copy)
        *gemm_copy = t->kept;
    return work;
}

// The activations recompute_elementwise lets the layers share: u, c, GELU(pre), u_sel, hn.
// `work`, `in_work` and `kept` as carve_saved (kept: the groups, NULL for none).
static void carve_recomputable(const Model *m, LayerActs *a, const LayerActs *work, int in_work,
                               LayerKept *kept, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t Mq = (size_t)block_query_capacity(m);
    KeptGroup *mix = kept ? &kept->mix : NULL, *memory = kept ? &kept->memory : NULL;
    a->u = carve_saved(cv, N * H, work->u, in_work, mix, KEPT_GEMM_INPUT_WIDENED, &a->u16);
    a->c = carve_saved(cv, N * H, work->c, in_work, mix, KEPT_GEMM_INPUT, &a->c16);
    a->act = carve_saved(cv, N * mH, work->act, in_work, mix, KEPT_GEMM_INPUT, &a->act16);
    a->u_sel = carve_saved(cv, Mq * H, work->u_sel, in_work, mix, KEPT_GEMM_INPUT, &a->u_sel16);
    a->hn = carve_saved(cv, N * H, work->hn, in_work, memory, KEPT_GEMM_INPUT, &a->hn16);
}

// The other activations bf16_activations keeps in bf16 (as carve_recomputable).
static void carve_keepable(const Model *m, LayerActs *a, const LayerActs *work, int in_work,
                           LayerKept *kept, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t kv = (size_t)c->n_kv_heads * model_head_dim(c);
    const size_t Mq = (size_t)block_query_capacity(m);
    KeptGroup *mix = kept ? &kept->mix : NULL, *memory = kept ? &kept->memory : NULL;
    a->x = carve_saved(cv, N * H, work->x, in_work, mix, KEPT_ROUNDED, NULL);
    a->pre = carve_saved(cv, N * mH, work->pre, in_work, mix, KEPT_ROUNDED, NULL);
    a->q = carve_saved(cv, Mq * H, work->q, in_work, mix, KEPT_ROUNDED, NULL);
    a->k = carve_saved(cv, N * kv, work->k, in_work, mix, KEPT_ROUNDED, NULL);
    a->v = carve_saved(cv, N * kv, work->v, in_work, mix, KEPT_ROUNDED, NULL);
    a->o = carve_saved(cv, Mq * H, work->o, in_work, mix, KEPT_GEMM_INPUT_WIDENED, &a->o16);
    a->ao = carve_saved(cv, Mq * H, work->ao, in_work, mix, KEPT_ROUNDED, NULL);
    a->h = carve_saved(cv, N * H, work->h, in_work, mix, KEPT_ROUNDED, NULL);
    if (c->ffn == FFN_MEMORY) {
        a->p = carve_saved(cv, N * c->ptr_dim, work->p, in_work, memory, KEPT_ROUNDED, NULL);
    } else {
        a->ffn_pre = carve_saved(cv, N * 4 * H, work->ffn_pre, in_work, memory, KEPT_ROUNDED, NULL);
        a->ffn_act = carve_saved(cv, N * 4 * H, work->ffn_act, in_work, memory, KEPT_GEMM_INPUT,
                                 &a->ffn_act16);
    }
}

// The small per-token values and indices: always fp32 (int32) and the layer's own.
static void carve_own(const Model *m, LayerActs *a, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, K = c->top_k;
    const size_t Mq = (size_t)block_query_capacity(m);
    a->rstd_a = carve_floats(cv, N);
    a->r = carve_floats(cv, N);
    a->z = carve_floats(cv, N);
    // One extra entry: route=threshold writes its query count after the indices.
    a->sel = carve_ints(cv, Mq + 1);
    a->qpos = carve_ints(cv, Mq);
    a->lse = carve_floats(cv, Mq * c->n_heads);
    a->rstd_m = carve_floats(cv, N);
    if (c->ffn == FFN_MEMORY) {
        a->top_s = carve_floats(cv, N * K);
        a->top_i = carve_ints(cv, N * K);
        a->w = carve_floats(cv, N * K);
    }
}

// The slot rows refetch_slot_rows lets the layers share: the key rows, and the value rows
// received from other ranks (one rank reads its table's in place).
static void carve_slot_rows(const Model *m, LayerActs *a, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t NK = (size_t)m->B * m->T * c->top_k;
    a->krows = carve_floats(cv, NK * c->ptr_dim);
    a->vrows_received = m->layout.world > 1 ? carve_floats(cv, NK * c->d_model) : NULL;
}

// One layer's activations. `shared` holds the buffers the options `opt` let every layer
// share (the recomputed ones, the refetched slot rows, the working set of the kept ones);
// the rest are the layer's own, and `kept` lists the layer's bf16 copies. The last layer
// keeps none: nothing overwrites the working set between its forward and its backward (the
// head and the loss have buffers of their own), which runs first.
static void carve_layer_acts(const Model *m, const ModelOptions *opt, int layer, LayerActs *a,
                             const LayerActs *shared, LayerKept *kept, Carver *cv) {
    memset(kept, 0, sizeof(*kept));
    const int last = layer == m->cfg.n_layers - 1;
    LayerKept *bf16 = opt->bf16_activations && !last ? kept : NULL;
    if (opt->recompute_elementwise) {
        a->u = shared->u;
        a->c = shared->c;
        a->act = shared->act;
        a->u_sel = shared->u_sel;
        a->hn = shared->hn;
        a->u16 = a->c16 = a->act16 = a->u_sel16 = a->hn16 = NULL; // recomputed, never kept
    } else {
        carve_recomputable(m, a, shared, opt->bf16_activations, bf16, cv);
    }
    carve_keepable(m, a, shared, opt->bf16_activations, bf16, cv);
    carve_own(m, a, cv);
    if (m->cfg.ffn == FFN_MEMORY) {
        if (opt->refetch_slot_rows) {
            a->krows = shared->krows;
            a->vrows_received = shared->vrows_received;
        } else {
            carve_slot_rows(m, a, cv);
        }
    }
}

// Every activation with memory options `opt`, in one allocation (Model.activation_arena,
// which model_free frees).
static void carve_activations(Model *m, const ModelOptions *opt, Carver *cv) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)m->B * m->T, H = c->d_model;
    LayerActs shared = {0};
    const LayerActs none = {0};
    if (opt->recompute_elementwise || opt->bf16_activations)
        carve_recomputable(m, &shared, &none, 0, NULL, cv);
    if (opt->bf16_activations)
        carve_keepable(m, &shared, &none, 0, NULL, cv);
    if (opt->refetch_slot_rows && c->ffn == FFN_MEMORY)
        carve_slot_rows(m, &shared, cv);
    for (int l = 0; l < c->n_layers; l++)
        carve_layer_acts(m, opt, l, &m->acts[l], &shared, &m->kept[l], cv);
    m->embed_out = m->acts[0].x;
    m->y_final = carve_floats(cv, N * H);
    m->yn = carve_floats(cv, N * H);
    m->rstd_f = carve_floats(cv, N);
    m->predictions = carve_ints(cv, N);
    m->losses = carve_floats(cv, 3);
}

// Model.scratch holds the token positions [N] (int32, written once) and then the
// backward's gradient buffers. The two halves of a block's backward use their own buffers
// one after the other (block_memory_backward: dy -> dh, then block_mix_backward: dh -> dx),
// so each half's private buffers share one region: only dy, dx and dh cross between them.
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
    const size_t shared_region = cv->used;
    // The memory half's own buffers.
    g->dhn = carve_floats(cv, N * H);
    if (c->ffn == FFN_MEMORY) {
        g->dp = carve_floats(cv, N * R);
        g->ds = carve_floats(cv, N * K);
        g->dkrows = carve_floats(cv, N * K * R);
    } else {
        g->dffn_pre = carve_floats(cv, N * 4 * H);
        g->dffn_act = carve_floats(cv, N * 4 * H);
    }
    const size_t memory_end = cv->used;
    // The mixing half's own buffers, over the same bytes.
    cv->used = shared_region;
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
    if (cv->used < memory_end)
        cv->used = memory_end;
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
// what each memory option still off would save.
static void check_activations_fit(Model *m, size_t bytes) {
    size_t free_bytes = 0, total_bytes = 0;
    m->ops->memory_device_info(&free_bytes, &total_bytes);
    if (free_bytes == 0 || bytes <= free_bytes) // 0: unknown, the allocation will tell
        return;
    const double mib = 1024.0 * 1024.0;
    ModelOptions with[3] = {m->opt, m->opt, m->opt};
    with[0].refetch_slot_rows = 1;
    with[1].recompute_elementwise = 1;
    with[2].bf16_activations = 1;
    const int off[3] = {!m->opt.refetch_slot_rows, !m->opt.recompute_elementwise,
                        !m->opt.bf16_activations};
    const char *flags[3] = {"--refetch_slot_rows 1", "--recompute_elementwise 1",
                            "--activations bf16"};
    char advice[384] = "", item[96];
    for (int i = 0; i < 3; i++) {
        if (!off[i])
            continue;
        snprintf(item, sizeof(item), "%s%s saves %.0f MiB", advice[0] ? ", " : "", flags[i],
                 (double)(bytes - activation_bytes(m, &with[i])) / mib);
        strncat(advice, item, sizeof(advice) - strlen(advice) - 1);
    }
    hs_fatal("model_build: the activations of %d sequences of %d tokens need %.0f MiB, but the "
             "%s backend has %.0f MiB free: lower --micro_batch%s%s%s",
             m->B, m->T, bytes / mib, m->ops->name, free_bytes / mib,
             advice[0] ? ", or keep less for the backward ("
                       : " (the memory options "
                         "--refetch_slot_rows, "
                         "--recompute_elementwise and "
                         "--activations bf16 are on "
                         "already)",
             advice, advice[0] ? ")" : "");
}

static void alloc_activations(Model *m) {
    const size_t bytes = activation_bytes(m, &m->opt);
    check_activations_fit(m, bytes);
    m->activation_arena = m->ops->alloc(bytes);
    Carver assign = {m->activation_arena, 0};
    carve_activations(m, &m->opt, &assign);
}

size_t model_memory_bytes(const ModelConfig *cfg, int B, int T, int world,
                          const ModelOptions *opt) {
    Model m;
    memset(&m, 0, sizeof(m));
    m.cfg = *cfg;
    m.layout.world = world;
    m.B = B;
    m.T = T;
    m.n_sel = model_n_selected(cfg, T);
    m.acts = hs_calloc((size_t)cfg->n_layers, sizeof(LayerActs));
    m.kept = hs_calloc((size_t)cfg->n_layers, sizeof(LayerKept));
    const ModelOptions none = {0};
    size_t bytes = activation_bytes(&m, opt ? opt : &none);
    int32_t *positions;
    BlockGrads unused;
    Carver measure = {NULL, 0};
    carve_scratch(&m, &measure, &positions, &unused);
    free(m.acts);
    free(m.kept);
    return bytes + measure.used;
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
    m->kept = hs_calloc((size_t)cfg->n_layers, sizeof(LayerKept));
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
    free(m->kept);
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

// bf16_activations: round the working set's tensors of one group into this layer's bf16
// copies (the forward), and widen a layer's copies back (the backward). Nothing, and no
// profile marker, without the option (empty groups).
static void keep_group(Model *m, const KeptGroup *group) {
    if (group->n == 0)
        return;
    profile_begin(m->profiler, PHASE_STORAGE, PROFILE_FORWARD);
    for (int i = 0; i < group->n; i++)
        if (group->t[i].kind == KEPT_ROUNDED) // a GEMM input's copy was written by its GEMM
            m->ops->to_bf16(group->t[i].kept, group->t[i].work, group->t[i].count);
    profile_end(m->profiler);
}

static void restore_layer(Model *m, int layer) {
    const KeptGroup *groups[2] = {&m->kept[layer].mix, &m->kept[layer].memory};
    if (groups[0]->n + groups[1]->n == 0)
        return;
    profile_begin(m->profiler, PHASE_STORAGE, PROFILE_BACKWARD);
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < groups[g]->n; i++)
            if (groups[g]->t[i].kind != KEPT_GEMM_INPUT)
                m->ops->from_bf16(groups[g]->t[i].work, groups[g]->t[i].kept,
                                  groups[g]->t[i].count);
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
    // With bf16_activations the layers share one fp32 working set: each layer's results go
    // into its bf16 copies before the next layer overwrites them (the mixing group before
    // the memory stage writes the next layer's input over the shared x). A forward without
    // targets has no backward, so it keeps nothing.
    const int keep = args->targets != NULL;
    for (int l = 0; l < c->n_layers; l++) {
        block_mix_forward(m, l, args);
        if (keep)
            keep_group(m, &m->kept[l].mix);
        block_memory_forward(m, l, args, block_output(m, l));
        if (keep)
            keep_group(m, &m->kept[l].memory);
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
        restore_layer(m, l);             // bf16_activations: this layer's working set again
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
