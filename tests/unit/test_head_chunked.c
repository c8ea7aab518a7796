// The chunked LM head on the CPU backend: the fused cross-entropy op against the separate
// forward and backward ops, and the model's head (loss, predictions, d yn, lm_head gradient)
// against a direct double-precision recomputation from yn and lm_head. Every gradient of the
// model must not depend on the chunk size, nor on whether the head's backward ran inside the
// forward (want_grad) or in model_backward; micro-batches accumulate.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/error.h"
#include "model/model.h"
#include "tests/testutil.h"

// ---- the fused op -----------------------------------------------------------------------

enum { OP_N = 37, OP_V = 101 };

// Random logits (std 3, so softmaxes are peaked and far from uniform) with targets in
// [0, V), every fifth row ignored, and row 3 holding its maximum twice (argmax ties).
static void op_inputs(float *logits, int32_t *targets, uint64_t seed) {
    TestRng rng = test_rng(seed);
    test_fill_normal(&rng, logits, (size_t)OP_N * OP_V, 3.0f);
    test_fill_uniform_int(&rng, targets, OP_N, 0, OP_V);
    for (int n = 0; n < OP_N; n += 5)
        targets[n] = -1;
    logits[3 * OP_V + 17] = 40.0f;
    logits[3 * OP_V + 60] = 40.0f;
}

START_TEST(test_fused_equals_forward_then_backward) {
    const Ops *ops = ops_cpu();
    const size_t NV = (size_t)OP_N * OP_V;
    const float scale = 0.37f;
    float *logits = hs_malloc(NV * sizeof(float));
    int32_t targets[OP_N], argmax[OP_N];
    op_inputs(logits, targets, 5);

    // The reference: the two separate ops.
    float loss_ref = 0.25f; // the ops add into the loss: start from a nonzero value
    float *dlogits_ref = hs_malloc(NV * sizeof(float));
    ops->cross_entropy_forward(&loss_ref, logits, targets, scale, OP_N, OP_V);
    ops->cross_entropy_backward(dlogits_ref, logits, targets, scale, OP_N, OP_V);

    // Fused, in place.
    float loss = 0.25f;
    float *work = test_copy_of(logits, NV);
    ops->cross_entropy_fused(&loss, work, argmax, work, targets, scale, OP_N, OP_V);
    ck_assert_float_eq_tol(loss, loss_ref, 1e-6f * fabsf(loss_ref));
    ck_assert(test_max_rel_err("fused dlogits", work, dlogits_ref, NV, 1e-9, 1e-6) <= 1.0);
    for (int n = 0; n < OP_N; n++) {
        const float *row = logits + (size_t)n * OP_V;
        int best = 0;
        for (int v = 1; v < OP_V; v++)
            best = row[v] > row[best] ? v : best;
        ck_assert_int_eq(argmax[n], best);
        if (targets[n] < 0)
            for (int v = 0; v < OP_V; v++)
                ck_assert(work[(size_t)n * OP_V + v] == 0.0f);
    }
    ck_assert_int_eq(argmax[3], 17); // the tie goes to the lower index

    // Out of place, loss only, gradient only: each output is independent of the others.
    float *dlogits = test_zeros(NV);
    ops->cross_entropy_fused(NULL, dlogits, NULL, logits, targets, scale, OP_N, OP_V);
    ck_assert(test_max_rel_err("dlogits only", dlogits, dlogits_ref, NV, 1e-9, 1e-6) <= 1.0);
    float loss_only = 0.25f;
    float *untouched = test_copy_of(logits, NV);
    ops->cross_entropy_fused(&loss_only, NULL, NULL, untouched, targets, scale, OP_N, OP_V);
    ck_assert_float_eq_tol(loss_only, loss_ref, 1e-6f * fabsf(loss_ref));
    ck_assert(memcmp(untouched, logits, NV * sizeof(float)) == 0);

    free(logits), free(dlogits_ref), free(work), free(dlogits), free(untouched);
}
END_TEST

// ---- the model's head -----------------------------------------------------------------------

enum { B = 2, T = 16, N = B * T };

typedef struct HeadCase {
    ModelConfig cfg;
    int32_t tokens[N], targets[N];
    ForwardArgs args;
} HeadCase;

// Fills *hc in place: its args point into its own token arrays.
static void head_case_init(HeadCase *hc) {
    hc->cfg = model_config_tiny();
    TestRng rng = test_rng(31);
    test_fill_uniform_int(&rng, hc->tokens, N, 0, hc->cfg.vocab_size);
    test_fill_uniform_int(&rng, hc->targets, N, 0, hc->cfg.vocab_size);
    hc->targets[4] = hc->targets[11] = hc->targets[30] = -1; // ignored positions
    hc->args = (ForwardArgs){.tokens = hc->tokens,
                             .targets = hc->targets,
                             .training = 1,
                             .seed = 8,
                             .step = 2,
                             .seq_offset = 0,
                             .ce_scale = 1.0f / (N - 3),
                             .token_scale = 1.0f / N,
                             .seq_scale = 1.0f / B,
                             .want_grad = 1};
}

// A model of the case's config with its head in chunks of `chunk` tokens; parameters scaled
// up from init so the logits spread (a near-uniform softmax would hide mistakes).
static void build_model(Model *m, const HeadCase *hc, int chunk) {
    model_build(m, &hc->cfg, ops_cpu(), NULL, B, T);
    model_init(m, 77);
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const ParamTensor *t = &m->layout.tensors[i];
        if (t->init == INIT_NORMAL)
            for (size_t j = 0; j < t->numel; j++)
                m->params[t->offset + j] *= 20.0f;
    }
    model_set_head_chunk(m, chunk);
}

// The head recomputed directly in double from the forward's yn and lm_head: logits, loss,
// predictions, dlogits, d yn [N, H] and the lm_head gradient [V, H].
typedef struct HeadRef {
    double ce;
    int32_t predictions[N];
    double *logits, *dyn, *dlm_head;
} HeadRef;

static HeadRef head_reference(const Model *m, const HeadCase *hc) {
    const int H = hc->cfg.d_model, V = hc->cfg.vocab_size;
    const float *yn = m->yn, *w = m->p.lm_head; // [N, H], [V, H]
    HeadRef ref = {0.0,
                   {0},
                   hs_calloc((size_t)N * V, sizeof(double)),
                   hs_calloc((size_t)N * H, sizeof(double)),
                   hs_calloc((size_t)V * H, sizeof(double))};
    double *dlogits = hs_calloc((size_t)V, sizeof(double)); // [V] one row at a time
    for (int n = 0; n < N; n++) {
        double *row = ref.logits + (size_t)n * V;
        int best = 0;
        for (int v = 0; v < V; v++) {
            for (int h = 0; h < H; h++)
                row[v] += (double)yn[n * H + h] * w[v * H + h];
            best = row[v] > row[best] ? v : best;
        }
        ref.predictions[n] = best;
        if (hc->targets[n] < 0)
            continue;
        double sum = 0.0;
        for (int v = 0; v < V; v++)
            sum += exp(row[v] - row[best]);
        ref.ce += hc->args.ce_scale * (row[best] + log(sum) - row[hc->targets[n]]);
        for (int v = 0; v < V; v++) {
            double prob = exp(row[v] - row[best]) / sum;
            dlogits[v] = hc->args.ce_scale * (prob - (v == hc->targets[n]));
            for (int h = 0; h < H; h++) {
                ref.dyn[n * H + h] += dlogits[v] * w[v * H + h];
                ref.dlm_head[v * H + h] += dlogits[v] * yn[n * H + h];
            }
        }
    }
    free(dlogits);
    return ref;
}

static void head_ref_free(HeadRef *ref) {
    free(ref->logits), free(ref->dyn), free(ref->dlm_head);
}

// Largest |a - b| / (atol + rtol |b|) of a float buffer against a double reference.
static double max_err_vs_double(const char *what, const float *a, const double *b, size_t n,
                                double atol, double rtol) {
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(a[i] - b[i]) / (atol + rtol * fabs(b[i]));
        if (err > worst)
            worst = err, at = i;
    }
    if (worst > 1.0)
        fprintf(stderr, "%s[%zu]: %.8g, expected %.8g\n", what, at, a[at], b[at]);
    return worst;
}

// Chunks of 5 tokens: 6 full chunks and a last one of 2.
START_TEST(test_head_matches_direct_recomputation) {
    HeadCase hc;
    head_case_init(&hc);
    const int H = hc.cfg.d_model, V = hc.cfg.vocab_size;
    Model m;
    build_model(&m, &hc, 5);
    model_zero_grad(&m);
    model_forward(&m, &hc.args);
    HeadRef ref = head_reference(&m, &hc);
    LossParts parts = model_losses(&m);
    ck_assert_double_eq_tol(parts.ce, ref.ce, 1e-5 * ref.ce);
    ck_assert(ref.ce > 1.0); // the scaled-up parameters make a loss well above 0
    for (int n = 0; n < N; n++)
        ck_assert_int_eq(m.predictions[n], ref.predictions[n]);
    // d yn is what the backward starts from; the forward already holds it.
    ck_assert(max_err_vs_double("dyn", m.dyn, ref.dyn, (size_t)N * H, 1e-7, 1e-4) <= 1.0);
    model_backward(&m);
    ck_assert(max_err_vs_double("g.lm_head", m.g.lm_head, ref.dlm_head, (size_t)V * H, 1e-7,
                                1e-4) <= 1.0);
    // Logits on demand, for any range of tokens up to a chunk.
    const float *rows = model_logits(&m, 27, 5); // [5, V]
    ck_assert(max_err_vs_double("model_logits", rows, ref.logits + (size_t)27 * V, (size_t)5 * V,
                                1e-5, 1e-5) <= 1.0);
    head_ref_free(&ref);
    model_free(&m);
}
END_TEST

// Loss and every gradient of one training step (forward + backward from zeroed gradients).
static LossParts step_grads(const HeadCase *hc, int chunk, int want_grad, float *grads_out,
                            size_t *n_out) {
    Model m;
    build_model(&m, hc, chunk);
    ForwardArgs args = hc->args;
    args.want_grad = want_grad;
    LossParts parts = test_model_step(&m, &args, grads_out);
    *n_out = m.layout.n_local;
    model_free(&m);
    return parts;
}

START_TEST(test_chunk_size_and_grad_path_do_not_change_gradients) {
    HeadCase hc;
    head_case_init(&hc);
    ParamLayout layout;
    param_layout_build(&layout, &hc.cfg, 0, 1);
    const size_t n = layout.n_local;
    float *whole = hs_malloc(n * sizeof(float)), *other = hs_malloc(n * sizeof(float));
    size_t n_whole, n_other;
    LossParts ref = step_grads(&hc, N, 1, whole, &n_whole); // one chunk: the unchunked head
    ck_assert_int_eq(n_whole, n);
    double norm = 0.0;
    for (size_t i = 0; i < n; i++)
        norm += (double)whole[i] * whole[i];
    ck_assert_double_gt(norm, 1e-4);
    const struct {
        int chunk, want_grad;
    } variants[] = {{1, 1}, {5, 1}, {7, 1}, {N - 1, 1}, {5, 0}, {N, 0}, {3 * N, 1}};
    for (size_t k = 0; k < sizeof(variants) / sizeof(variants[0]); k++) {
        LossParts parts =
            step_grads(&hc, variants[k].chunk, variants[k].want_grad, other, &n_other);
        char what[64];
        snprintf(what, sizeof(what), "grads chunk %d want_grad %d", variants[k].chunk,
                 variants[k].want_grad);
        ck_assert_int_eq(n_other, n);
        ck_assert_double_eq_tol(parts.ce, ref.ce, 1e-6 * ref.ce);
        ck_assert_double_eq_tol(parts.total, ref.total, 1e-6 * ref.total);
        ck_assert_msg(test_max_rel_err(what, other, whole, n, 1e-7, 1e-4) <= 1.0, "%s", what);
    }
    free(whole), free(other);
    param_layout_free(&layout);
}
END_TEST

// A forward without want_grad (evaluation) touches no gradient and gives the same loss and
// predictions; two micro-batches of forward + backward add up their gradients.
START_TEST(test_eval_forward_and_microbatch_accumulation) {
    HeadCase hc;
    head_case_init(&hc);
    Model m;
    build_model(&m, &hc, 6);
    const size_t n = m.layout.n_local;
    model_zero_grad(&m);
    model_forward(&m, &hc.args);
    model_backward(&m);
    LossParts train = model_losses(&m);
    float *once = test_copy_of(m.grads, n);
    int32_t predictions[N];
    memcpy(predictions, m.predictions, sizeof(predictions));

    ForwardArgs eval = hc.args;
    eval.want_grad = 0;
    model_zero_grad(&m);
    model_forward(&m, &eval);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(m.grads[i] == 0.0f, "an eval forward wrote gradient %zu", i);
    ck_assert_double_eq_tol(model_losses(&m).ce, train.ce, 1e-7 * train.ce);
    ck_assert(memcmp(predictions, m.predictions, sizeof(predictions)) == 0);

    model_zero_grad(&m);
    for (int micro = 0; micro < 2; micro++) {
        model_forward(&m, &hc.args);
        model_backward(&m);
    }
    float *twice = test_copy_of(once, n);
    for (size_t i = 0; i < n; i++)
        twice[i] *= 2.0f;
    ck_assert(test_max_rel_err("two micro-batches", m.grads, twice, n, 1e-7, 1e-5) <= 1.0);
    free(once), free(twice);
    model_free(&m);
}
END_TEST

START_TEST(test_default_chunk_bounds_the_logits) {
    // The seed shape: 16384 tokens of V = 50257 in chunks of 256 MiB of logits at most.
    int chunk = model_default_head_chunk(50257, 16384);
    ck_assert_int_eq(chunk, 1280);
    ck_assert((size_t)chunk * 50257 * sizeof(float) <= (size_t)256 << 20);
    // Small vocabularies and batches take the whole batch at once.
    ck_assert_int_eq(model_default_head_chunk(256, 16384), 16384);
    ck_assert_int_eq(model_default_head_chunk(50, N), N);
    // A vocabulary too large for one row per 256 MiB still gets one row.
    ck_assert_int_eq(model_default_head_chunk(100000000, 10), 1);
}
END_TEST

int main(void) {
#ifdef _OPENMP
    // The tiny model is far too small to share out; threads would only wait on each other.
    omp_set_num_threads(1);
#endif
    Suite *s = suite_create("head_chunked");
    TCase *tc = tcase_create("head_chunked");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fused_equals_forward_then_backward);
    tcase_add_test(tc, test_head_matches_direct_recomputation);
    tcase_add_test(tc, test_chunk_size_and_grad_path_do_not_change_gradients);
    tcase_add_test(tc, test_eval_forward_and_microbatch_accumulation);
    tcase_add_test(tc, test_default_chunk_bounds_the_logits);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
