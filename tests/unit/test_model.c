// The tiny model on the CPU backend: parameter layout and init, variant equivalences,
// causal routing, and the loss at init.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/error.h"
#include "kernels/philox.h"
#include "model/model.h"
#include "tests/testutil.h"

enum { B = 2, T = 16 };

static ForwardArgs make_args(const int32_t *tokens, const int32_t *targets, int training) {
    ForwardArgs args = {.tokens = tokens,
                        .targets = targets,
                        .training = training,
                        .seed = 11,
                        .step = 2,
                        .seq_offset = 0,
                        .ce_scale = 1.0f / (B * T),
                        .token_scale = 1.0f / (B * T),
                        .seq_scale = 1.0f / B};
    return args;
}

static void random_tokens(int32_t *tokens, int n, int vocab, uint64_t seed) {
    TestRng rng = test_rng(seed);
    test_fill_uniform_int(&rng, tokens, (size_t)n, 0, vocab);
}

// Multiply every normally initialised tensor by `factor`, so each path of the model has a
// visible effect on the output.
static void scale_normal_params(Model *m, float factor) {
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const ParamTensor *t = &m->layout.tensors[i];
        if (t->init == INIT_NORMAL)
            for (size_t j = 0; j < t->numel; j++)
                m->params[t->offset + j] *= factor;
    }
}

// ---- layout --------------------------------------------------------------------------------

START_TEST(test_layout_names_order_and_sharding) {
    ModelConfig c = model_config_tiny();
    ParamLayout layout;
    param_layout_build(&layout, &c, 1, 2);
    ck_assert_str_eq(layout.tensors[0].name, "/model/embed/weight");
    ck_assert_str_eq(layout.tensors[1].name, "/model/layers/00/norm_a/weight");
    const ParamTensor *wk = param_layout_find(&layout, "/model/layers/01/attn/wk");
    ck_assert_ptr_nonnull(wk);
    ck_assert_int_eq(wk->shape[0], 2 * 8); // nkv * hd
    ck_assert_int_eq(wk->shape[1], 32);
    const ParamTensor *bias = param_layout_find(&layout, "/model/layers/00/router/bias");
    ck_assert_int_eq(bias->ndim, 0);
    ck_assert_int_eq(bias->numel, 1);
    ck_assert_ptr_nonnull(param_layout_find(&layout, "/model/norm_f/weight"));
    ck_assert_ptr_null(param_layout_find(&layout, "/model/layers/00/ffn/w1"));
    // Dense tensors first, replicated; then keys and values of every layer, sharded.
    int seen_sharded = 0;
    for (int i = 0; i < layout.n_tensors; i++) {
        const ParamTensor *t = &layout.tensors[i];
        if (t->sharded) {
            seen_sharded = 1;
            ck_assert(t->offset >= layout.n_dense);
            ck_assert_int_eq(t->rows, 32);
            ck_assert_int_eq(t->row_begin, 32);
            ck_assert_int_eq(t->shape[0], 64);
        } else {
            ck_assert_msg(!seen_sharded, "%s follows a sharded tensor", t->name);
            ck_assert(t->offset + t->numel <= layout.n_dense);
        }
    }
    const ParamTensor *keys = param_layout_find(&layout, "/model/layers/01/memory/keys");
    ck_assert_int_eq(keys->group, GROUP_SLOT_KEYS);
    ck_assert_int_eq(param_layout_find(&layout, "/model/layers/01/memory/values")->group,
                     GROUP_SLOT_VALUES);
    ck_assert_int_eq(layout.n_local, layout.n_dense + 2 * 32 * (8 + 32));
    // Global count: every shard counted once.
    int64_t H = 32, V = 50,
            per_layer = H + H * 4 + H + 64 * H + 64 + H * 64 + H + H + 1 + H * H + 2 * 16 * H +
                        H * H + H + 8 * H + 8 + 64 * 8 + 64 * H;
    ck_assert_int_eq(param_layout_global_count(&layout), 2 * V * H + H + 2 * per_layer);
    param_layout_free(&layout);

    // ffn=dense: the slot memory is gone, the FFN H -> 4H -> H is there, norm_m stays.
    c.ffn = FFN_DENSE;
    param_layout_build(&layout, &c, 0, 3); // any world: nothing is sharded
    const ParamTensor *w1 = param_layout_find(&layout, "/model/layers/01/ffn/w1");
    ck_assert_ptr_nonnull(w1);
    ck_assert_int_eq(w1->shape[0], 128);
    ck_assert_int_eq(w1->shape[1], 32);
    const ParamTensor *w2 = param_layout_find(&layout, "/model/layers/01/ffn/w2");
    ck_assert_float_eq_tol(w2->init_std, 0.02 / sqrt(4.0), 1e-7);
    ck_assert_ptr_nonnull(param_layout_find(&layout, "/model/layers/01/norm_m/weight"));
    ck_assert_ptr_null(param_layout_find(&layout, "/model/layers/01/memory/keys"));
    ck_assert_int_eq(layout.n_dense, layout.n_local);
    param_layout_free(&layout);

    // attn=dense keeps the router in the layout, so checkpoints share paths.
    c = model_config_tiny();
    c.attn = ATTN_DENSE;
    param_layout_build(&layout, &c, 0, 1);
    ck_assert_ptr_nonnull(param_layout_find(&layout, "/model/layers/00/router/weight"));
    param_layout_free(&layout);
}
END_TEST

// Runs param_layout_build(S = 64, world = 3) in a child and returns what it printed.
START_TEST(test_slots_not_divisible_by_world) {
    int pipe_fd[2];
    ck_assert_int_eq(pipe(pipe_fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pipe_fd[1], STDERR_FILENO);
        close(pipe_fd[0]);
        ModelConfig c = model_config_tiny();
        ParamLayout layout;
        param_layout_build(&layout, &c, 0, 3);
        _exit(0); // not reached when the error is detected
    }
    close(pipe_fd[1]);
    char message[512] = "";
    size_t used = 0;
    ssize_t got;
    while (used + 1 < sizeof(message) &&
           (got = read(pipe_fd[0], message + used, sizeof(message) - 1 - used)) > 0)
        used += (size_t)got;
    message[used] = '\0';
    close(pipe_fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0, "the build did not fail");
    ck_assert_msg(strstr(message, "n_slots=64") && strstr(message, "world=3"),
                  "message does not name both values: %s", message);
}
END_TEST

// ---- init ----------------------------------------------------------------------------------

static void mean_std(const float *x, size_t n, double *mean, double *std) {
    double s = 0.0, s2 = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i], s2 += (double)x[i] * x[i];
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
}

START_TEST(test_init_statistics) {
    ModelConfig c = model_config_tiny();
    c.vocab_size = 2000; // a big normal tensor: 64000 draws
    ParamLayout layout;
    param_layout_build(&layout, &c, 0, 1);
    float *params = hs_malloc(layout.n_local * sizeof(float));
    param_layout_init_host(&layout, 5, params);
    double mean, std;
    const ParamTensor *embed = param_layout_find(&layout, "/model/embed/weight");
    mean_std(params + embed->offset, embed->numel, &mean, &std);
    ck_assert_double_le(fabs(mean), 0.001);
    ck_assert_double_le(fabs(std - 0.02), 0.0005);
    // Residual output projections: 0.02 / sqrt(2L) = 0.01
    const ParamTensor *wo = param_layout_find(&layout, "/model/layers/01/attn/wo");
    mean_std(params + wo->offset, wo->numel, &mean, &std);
    ck_assert_double_le(fabs(std - 0.01), 0.001);
    const ParamTensor *values = param_layout_find(&layout, "/model/layers/00/memory/values");
    mean_std(params + values->offset, values->numel, &mean, &std);
    ck_assert_double_le(fabs(std - 0.02), 0.002);
    for (int i = 0; i < layout.n_tensors; i++) {
        const ParamTensor *t = &layout.tensors[i];
        const float *x = params + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            if (t->init == INIT_ONES)
                ck_assert_float_eq(x[j], 1.0f);
            else if (t->init == INIT_ZEROS)
                ck_assert_float_eq(x[j], 0.0f);
            else if (t->init == INIT_CONV_IDENTITY) {
                float tap = (j % c.conv_kernel == (size_t)c.conv_kernel - 1) ? 1.0f : 0.0f;
                ck_assert_float_eq(x[j], tap);
            }
        }
        if (strstr(t->name, "norm"))
            ck_assert_int_eq(t->init, INIT_ONES);
        if (strstr(t->name, "bias"))
            ck_assert_int_eq(t->init, INIT_ZEROS);
    }
    // Different tensors draw different streams.
    const ParamTensor *head = param_layout_find(&layout, "/model/lm_head/weight");
    ck_assert_float_ne(params[embed->offset], params[head->offset]);
    free(params);
    param_layout_free(&layout);
}
END_TEST

START_TEST(test_init_same_for_any_rank_count) {
    ModelConfig c = model_config_tiny();
    enum { WORLD = 4 };
    ParamLayout whole;
    param_layout_build(&whole, &c, 0, 1);
    float *full = hs_malloc(whole.n_local * sizeof(float));
    param_layout_init_host(&whole, 77, full);
    for (int rank = 0; rank < WORLD; rank++) {
        ParamLayout part;
        param_layout_build(&part, &c, rank, WORLD);
        ck_assert_int_eq(part.n_tensors, whole.n_tensors);
        ck_assert_int_eq(part.n_dense, whole.n_dense);
        float *slice = hs_malloc(part.n_local * sizeof(float));
        param_layout_init_host(&part, 77, slice);
        for (int i = 0; i < part.n_tensors; i++) {
            const ParamTensor *t = &part.tensors[i], *w = &whole.tensors[i];
            ck_assert_str_eq(t->name, w->name);
            // This rank's rows sit at row_begin of the whole tensor.
            size_t first = (size_t)t->row_begin * (size_t)t->shape[1];
            ck_assert_int_eq(t->row_begin, t->sharded ? rank * 16 : 0);
            ck_assert_msg(
                memcmp(slice + t->offset, full + w->offset + first, t->numel * sizeof(float)) == 0,
                "%s differs on rank %d of %d", t->name, rank, WORLD);
        }
        free(slice);
        param_layout_free(&part);
    }
    free(full);
    param_layout_free(&whole);
}
END_TEST

START_TEST(test_conv_is_identity_at_init) {
    ModelConfig c = model_config_tiny();
    Model m;
    model_build(&m, &c, ops_cpu(), NULL, B, T);
    model_init(&m, 3);
    int32_t tokens[B * T];
    random_tokens(tokens, B * T, c.vocab_size, 1);
    ForwardArgs args = make_args(tokens, NULL, 0);
    model_forward(&m, &args);
    const size_t n = (size_t)B * T * c.d_model;
    for (int l = 0; l < c.n_layers; l++) {
        ck_assert_msg(memcmp(m.acts[l].c, m.acts[l].u, n * sizeof(float)) == 0,
                      "layer %d: conv output differs from its input", l);
        // and the input is not trivially zero
        double mean, std;
        mean_std(m.acts[l].u, n, &mean, &std);
        ck_assert_double_gt(std, 0.5);
    }
    model_free(&m);
}
END_TEST

// ---- variants and routing ----------------------------------------------------------------

// Loss parts and gradients of one training step from the same init.
static LossParts loss_and_grads(const ModelConfig *c, float *grads_out, size_t *n_out) {
    Model m;
    model_build(&m, c, ops_cpu(), NULL, B, T);
    model_init(&m, 9);
    scale_normal_params(&m, 10.0f);
    int32_t tokens[B * T], targets[B * T];
    random_tokens(tokens, B * T, c->vocab_size, 4);
    random_tokens(targets, B * T, c->vocab_size, 5);
    ForwardArgs args = make_args(tokens, targets, 1);
    LossParts parts = test_model_step(&m, &args, grads_out);
    *n_out = m.layout.n_local;
    model_free(&m);
    return parts;
}

// The bytes the model's carver gives a piece of n elements of `size` bytes (model/model.c
// aligns to 256).
static size_t carved_elems(size_t n, size_t size) {
    return (n * size + 255) / 256 * 256;
}

static size_t carved_bytes(size_t n) {
    return carved_elems(n, sizeof(float));
}

// Zero the gradients, then forward + backward of two micro-batches (they accumulate). The
// first runs the head's backward in model_backward (want_grad 0), the second inside the
// forward (want_grad 1, as training does), so both paths meet every memory option.
static LossParts two_micro_batches(Model *m, const ModelConfig *c) {
    model_zero_grad(m);
    LossParts last = {0};
    for (int mb = 0; mb < 2; mb++) {
        int32_t tokens[B * T], targets[B * T];
        random_tokens(tokens, B * T, c->vocab_size, 40 + mb);
        random_tokens(targets, B * T, c->vocab_size, 50 + mb);
        ForwardArgs args = make_args(tokens, targets, 1);
        args.step = (uint32_t)mb;
        args.want_grad = mb;
        model_forward(m, &args);
        model_backward(m);
        last = model_losses(m);
    }
    return last;
}

// The bytes a model built with `opt` holds fewer than one built without options: the slot
// key rows (refetch_slot_rows; one rank keeps no value rows, it reads them in its table)
// and the recomputable activations (recompute_elementwise) of every layer but one.
static size_t expected_saving(const ModelConfig *c, const ModelOptions *opt) {
    const size_t N = (size_t)B * T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t NK = N * c->top_k, Mq = (size_t)B * model_n_selected(c, T);
    size_t per_layer = 0;
    if (opt->refetch_slot_rows && c->ffn == FFN_MEMORY)
        per_layer += carved_bytes(NK * c->ptr_dim);
    if (opt->recompute_elementwise)
        per_layer += 3 * carved_bytes(N * H) + carved_bytes(N * mH) + carved_bytes(Mq * H);
    return (size_t)(c->n_layers - 1) * per_layer;
}

// Two models from the same init, `keep` built with the options `base` (NULL: none) and `lean`
// with `opt`, each after two micro-batches (the same batches) whose losses must agree bit
// for bit: the options change only what the backward keeps. Returns the bytes lean holds
// fewer than keep.
static size_t build_and_step_pair(const ModelConfig *c, const ModelOptions *base,
                                  const ModelOptions *opt, Model *keep, Model *lean,
                                  const char *what) {
    const Ops *ops = ops_cpu();
    size_t before = ops->memory_in_use();
    model_build_with(keep, c, ops, NULL, B, T, base);
    const size_t keep_bytes = ops->memory_in_use() - before;
    before = ops->memory_in_use();
    model_build_with(lean, c, ops, NULL, B, T, opt);
    const size_t lean_bytes = ops->memory_in_use() - before;
    model_init(keep, 9);
    model_init(lean, 9);
    scale_normal_params(keep, 10.0f);
    scale_normal_params(lean, 10.0f);
    LossParts lk = two_micro_batches(keep, c), ll = two_micro_batches(lean, c);
    ck_assert_msg(lk.ce == ll.ce && lk.route == ll.route && lk.entropy == ll.entropy,
                  "%s: losses differ", what);
    return keep_bytes - lean_bytes;
}

// A model built with `opt` against one without: the losses and the accumulated gradients
// of two micro-batches bit for bit, and the saving of expected_saving to the byte.
static void check_memory_options(const ModelConfig *c, const ModelOptions *opt, const char *what) {
    Model keep, lean;
    const size_t saved = build_and_step_pair(c, NULL, opt, &keep, &lean, what);
    ck_assert_msg(saved == expected_saving(c, opt), "%s: %zu bytes saved, expected %zu", what,
                  saved, expected_saving(c, opt));
    const size_t n = keep.layout.n_local;
    ck_assert_msg(memcmp(keep.grads, lean.grads, n * sizeof(float)) == 0,
                  "%s: gradients differ from the model that keeps everything", what);
    double norm = 0.0;
    for (size_t i = 0; i < n; i++)
        norm += (double)lean.grads[i] * lean.grads[i];
    ck_assert_msg(norm > 0.0, "%s: zero gradients", what);
    model_free(&keep);
    model_free(&lean);
}

// What bf16_activations saves on top of the options `base`: every kept tensor of every
// layer but the last in bf16 instead of fp32 (the last layer's fp32 buffers become the
// working set all layers share, model.h). The kept tensors are listed here from MODEL.md's
// shapes, independently of model.c's carving.
static size_t expected_bf16_saving(const ModelConfig *c, const ModelOptions *base) {
    const size_t N = (size_t)B * T, H = c->d_model, mH = (size_t)c->mlp_mult * H;
    const size_t kv = (size_t)c->n_kv_heads * (H / c->n_heads);
    const size_t Mq = c->attn == ATTN_DENSE ? N : (size_t)B * model_n_selected(c, T);
    size_t kept[16], n = 0;
    if (!base->recompute_elementwise) { // u, c, GELU(pre), u_sel, hn
        kept[n++] = N * H, kept[n++] = N * H, kept[n++] = N * mH;
        kept[n++] = Mq * H, kept[n++] = N * H;
    }
    kept[n++] = N * H, kept[n++] = N * mH;                      // x, pre
    kept[n++] = Mq * H, kept[n++] = N * kv, kept[n++] = N * kv; // q, k, v
    kept[n++] = Mq * H, kept[n++] = Mq * H, kept[n++] = N * H;  // o, ao, h
    if (c->ffn == FFN_MEMORY)
        kept[n++] = N * c->ptr_dim; // p
    else
        kept[n++] = N * 4 * H, kept[n++] = N * 4 * H; // the dense FFN's pre and act
    size_t per_layer = 0;
    for (size_t i = 0; i < n; i++)
        per_layer += carved_bytes(kept[i]) - carved_elems(kept[i], sizeof(uint16_t));
    return (size_t)(c->n_layers - 1) * per_layer;
}

// bf16_activations on top of the options `base`, against `base` alone: the losses of two
// micro-batches bit for bit (the forward is untouched), the saving of expected_bf16_saving
// to the byte, and gradients that differ (the backward did read the rounded copies) by
// about bf16's rounding, relative to their norm.
static void check_bf16_activations(const ModelConfig *c, const ModelOptions *base,
                                   const char *what) {
    ModelOptions bf16 = *base;
    bf16.bf16_activations = 1;
    Model keep, lean;
    const size_t saved = build_and_step_pair(c, base, &bf16, &keep, &lean, what);
    ck_assert_msg(saved == expected_bf16_saving(c, base), "%s: %zu bytes saved, expected %zu", what,
                  saved, expected_bf16_saving(c, base));
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < keep.layout.n_local; i++) {
        double d = (double)lean.grads[i] - keep.grads[i];
        diff += d * d;
        norm += (double)keep.grads[i] * keep.grads[i];
    }
    const double rel = sqrt(diff / norm);
    ck_assert_msg(norm > 0.0 && rel > 0.0, "%s: the gradients did not change (rel %g)", what, rel);
    ck_assert_msg(rel < 1e-2, "%s: gradients %g away from fp32 storage (relative L2)", what, rel);
    model_free(&keep);
    model_free(&lean);
}

// The models the memory options are checked on: the tiny routed model with 3 layers (so
// sharing between layers shows), and its attn=dense and ffn=dense variants.
static void memory_option_models(ModelConfig *base, ModelConfig *dense_attn,
                                 ModelConfig *dense_ffn) {
    *base = model_config_tiny();
    base->n_layers = 3;
    *dense_attn = *base;
    *dense_ffn = *base;
    dense_attn->attn = ATTN_DENSE;
    dense_ffn->ffn = FFN_DENSE;
}

// bf16_activations alone and with the other two memory options, on the routed model and
// the attn=dense and ffn=dense variants.
START_TEST(test_bf16_activations) {
    ModelConfig base, dense_attn, dense_ffn;
    memory_option_models(&base, &dense_attn, &dense_ffn);
    const ModelOptions none = {0};
    const ModelOptions both = {.refetch_slot_rows = 1, .recompute_elementwise = 1};
    check_bf16_activations(&base, &none, "bf16 activations");
    check_bf16_activations(&base, &both, "bf16 activations with both options");
    check_bf16_activations(&dense_attn, &none, "bf16 activations, attn=dense");
    check_bf16_activations(&dense_ffn, &both, "bf16 activations with both options, ffn=dense");
}
END_TEST

// refetch_slot_rows and recompute_elementwise (ModelOptions), alone and together, on the
// routed model and on the attn=dense and ffn=dense variants (each recomputes other buffers).
START_TEST(test_memory_options_same_gradients) {
    ModelConfig base, dense_attn, dense_ffn;
    memory_option_models(&base, &dense_attn, &dense_ffn);
    const ModelOptions refetch = {.refetch_slot_rows = 1};
    const ModelOptions recompute = {.recompute_elementwise = 1};
    const ModelOptions both = {.refetch_slot_rows = 1, .recompute_elementwise = 1};
    check_memory_options(&base, &refetch, "refetch_slot_rows");
    check_memory_options(&base, &recompute, "recompute_elementwise");
    check_memory_options(&base, &both, "both");
    check_memory_options(&dense_attn, &both, "both, attn=dense");
    check_memory_options(&dense_ffn, &both, "both, ffn=dense");
}
END_TEST

START_TEST(test_full_capacity_fixed_gate_equals_dense_attention) {
    ModelConfig sparse = model_config_tiny();
    sparse.capacity = 1.0;
    sparse.gate_fixed = 1;
    sparse.route_loss = 0.0; // the dense variant has no route loss
    ModelConfig dense = sparse;
    dense.attn = ATTN_DENSE;
    ParamLayout layout;
    param_layout_build(&layout, &sparse, 0, 1);
    float *g_sparse = hs_malloc(layout.n_local * sizeof(float));
    float *g_dense = hs_malloc(layout.n_local * sizeof(float));
    size_t n_sparse, n_dense;
    LossParts ls = loss_and_grads(&sparse, g_sparse, &n_sparse);
    LossParts ld = loss_and_grads(&dense, g_dense, &n_dense);
    ck_assert_int_eq(n_sparse, n_dense);
    ck_assert_double_eq_tol(ls.ce, ld.ce, 1e-6);
    ck_assert_double_eq_tol(ls.entropy, ld.entropy, 1e-7);
    ck_assert_double_eq(ls.route, 0.0);
    ck_assert(test_max_rel_err("gradients", g_sparse, g_dense, n_sparse, 1e-7, 1e-5) <= 1.0);
    // and the gradients are not trivially zero
    double norm = 0.0;
    for (size_t i = 0; i < n_dense; i++)
        norm += (double)g_dense[i] * g_dense[i];
    ck_assert_double_gt(norm, 1e-6);
    free(g_sparse);
    free(g_dense);
    param_layout_free(&layout);
}
END_TEST

// Training routes on z = r + Gumbel(seed, step, layer, seq_offset + b, t); evaluation on r.
// The queries are the n_sel largest z of each sequence, ascending.
START_TEST(test_router_noise_and_selection) {
    ModelConfig c = model_config_tiny();
    Model m;
    model_build(&m, &c, ops_cpu(), NULL, B, T);
    model_init(&m, 13);
    int32_t tokens[B * T];
    random_tokens(tokens, B * T, c.vocab_size, 6);
    ForwardArgs args = make_args(tokens, NULL, 1);
    args.seq_offset = 5;
    model_forward(&m, &args);
    for (int l = 0; l < c.n_layers; l++) {
        const LayerActs *a = &m.acts[l];
        for (int n = 0; n < B * T; n++) {
            float noise = philox_gumbel(args.seed, args.step, (uint32_t)l,
                                        args.seq_offset + (uint32_t)(n / T), (uint32_t)(n % T));
            ck_assert_float_eq_tol(a->z[n] - a->r[n], noise, 1e-5);
        }
        for (int b = 0; b < B; b++) {
            const int32_t *sel = a->sel + b * m.n_sel;
            float weakest_chosen = INFINITY;
            for (int i = 0; i < m.n_sel; i++) {
                ck_assert_int_eq(sel[i] / T, b);
                if (i > 0)
                    ck_assert_int_lt(sel[i - 1], sel[i]);
                weakest_chosen = fminf(weakest_chosen, a->z[sel[i]]);
                ck_assert_int_eq(a->qpos[b * m.n_sel + i], sel[i] % T);
            }
            int above = 0; // tokens with a larger z than the weakest chosen one
            for (int t = 0; t < T; t++)
                above += a->z[b * T + t] > weakest_chosen;
            ck_assert_int_eq(above, m.n_sel - 1);
        }
    }
    args.training = 0;
    model_forward(&m, &args);
    for (int l = 0; l < c.n_layers; l++)
        ck_assert(memcmp(m.acts[l].z, m.acts[l].r, (size_t)B * T * sizeof(float)) == 0);
    model_free(&m);
}
END_TEST

START_TEST(test_threshold_routing_is_causal) {
    ModelConfig c = model_config_tiny();
    c.route = ROUTE_THRESHOLD;
    Model m;
    model_build(&m, &c, ops_cpu(), NULL, B, T);
    model_init(&m, 21);
    scale_normal_params(&m, 10.0f);
    int32_t tokens[B * T];
    random_tokens(tokens, B * T, c.vocab_size, 8);
    ForwardArgs args = make_args(tokens, NULL, 0);
    model_forward(&m, &args);
    const size_t V = (size_t)c.vocab_size, N = (size_t)B * T;
    float *before = hs_malloc(N * V * sizeof(float));
    memcpy(before, model_logits(&m, 0, (int)N), N * V * sizeof(float));
    // Queries are a strict, non-empty subset of the tokens in every layer.
    for (int l = 0; l < c.n_layers; l++) {
        int32_t count = m.acts[l].sel[N];
        ck_assert_msg(count > 0 && count < (int32_t)N, "layer %d: %d queries", l, count);
    }
    // Change the tokens of sequence 0 after position t = 6.
    const int t_cut = 6;
    for (int t = t_cut + 1; t < T; t++)
        tokens[t] = (tokens[t] + 1 + t) % c.vocab_size;
    model_forward(&m, &args);
    const float *after = model_logits(&m, 0, (int)N); // [N, V]
    for (size_t n = 0; n < N; n++) {
        int seq = (int)(n / T), t = (int)(n % T);
        const float *a = before + n * V, *b = after + n * V;
        if (seq == 1 || t <= t_cut) {
            ck_assert_msg(test_max_rel_err("logits", b, a, V, 1e-6, 1e-6) <= 1.0,
                          "sequence %d position %d saw a later token", seq, t);
        } else {
            ck_assert_msg(memcmp(a, b, V * sizeof(float)) != 0,
                          "position %d did not change with its own token", t);
        }
    }
    free(before);
    model_free(&m);
}
END_TEST

START_TEST(test_loss_at_init_is_log_vocab) {
    ModelConfig c = model_config_tiny();
    Model m;
    model_build(&m, &c, ops_cpu(), NULL, B, T);
    model_init(&m, 1);
    int32_t tokens[B * T], targets[B * T];
    random_tokens(tokens, B * T, c.vocab_size, 2);
    random_tokens(targets, B * T, c.vocab_size, 3);
    ForwardArgs args = make_args(tokens, targets, 1);
    model_forward(&m, &args);
    LossParts parts = model_losses(&m);
    ck_assert_double_le(fabs(parts.ce - log((double)c.vocab_size)), 0.05);
    // Route loss at init: r ~ 0, so BCE ~ log 2 and (sigmoid - rho)^2 ~ 0.09, per layer.
    double route_expect = c.n_layers * c.route_loss * (log(2.0) + 0.09);
    ck_assert_double_le(fabs(parts.route - route_expect), 0.1 * route_expect);
    // Entropy at init: near-uniform weights over K slots, log K per token and layer.
    double entropy_expect = c.n_layers * c.entropy_loss * log((double)c.top_k);
    ck_assert_double_le(fabs(parts.entropy - entropy_expect), 0.05 * entropy_expect);
    ck_assert_double_eq_tol(parts.total, parts.ce + parts.route + parts.entropy, 1e-12);
    model_free(&m);
}
END_TEST

int main(void) {
#ifdef _OPENMP
    // The tiny model is far too small to share out; threads would only wait on each other.
    omp_set_num_threads(1);
#endif
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_layout_names_order_and_sharding);
    tcase_add_test(tc, test_slots_not_divisible_by_world);
    tcase_add_test(tc, test_init_statistics);
    tcase_add_test(tc, test_init_same_for_any_rank_count);
    tcase_add_test(tc, test_conv_is_identity_at_init);
    tcase_add_test(tc, test_full_capacity_fixed_gate_equals_dense_attention);
    tcase_add_test(tc, test_memory_options_same_gradients);
    tcase_add_test(tc, test_bf16_activations);
    tcase_add_test(tc, test_router_noise_and_selection);
    tcase_add_test(tc, test_threshold_routing_is_causal);
    tcase_add_test(tc, test_loss_at_init_is_log_vocab);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
