// The LM head's fused cross-entropy on the cuda backend against the cpu oracle
// (kernels/cpu/cpu_loss.c), and the chunked head of a whole model, GPU against CPU.
// Skips (exit 77) where no CUDA device is visible.
//
// Tolerances: the loss within rtol 1e-5 (fp32 row sums on the GPU against the cpu's double
// ones, summed in double over rows on both); dlogits within 1e-9 + 1e-4 |cpu| per element
// (fp32 expf and a reciprocal against double exp and a division; the 1e-9 floor covers
// probabilities ~1e-9 of scale); the argmax exactly (comparisons of the same floats).
//
// The shapes cover both kernel paths: V = 50257 (the seed's vocabulary; the row is cached in
// shared memory, 1024 threads), V = 257 (small odd vocabulary, 256 threads) and V = 65003
// (too large to cache: the passes re-read global memory).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "tests/testutil.h"

static const Ops *cpu, *gpu;

// Device copy of a host buffer.
static void *to_gpu(const void *host, size_t bytes) {
    void *dev = gpu->alloc(bytes);
    gpu->copy_from_host(dev, host, bytes);
    return dev;
}

// Host copy of a device buffer (free with free()).
static void *from_gpu(const void *dev, size_t bytes) {
    void *host = hs_malloc(bytes);
    gpu->copy_to_host(host, dev, bytes);
    return host;
}

// Random logits (std 3) and targets with ignored rows: the first, the last, every 17th, and
// one target outside [0, V) (ignored by the GPU; the cpu oracle would stop, so its copy of
// the targets says -1 there). Row 1 holds its maximum twice, to check the argmax's ties.
typedef struct CeCase {
    int N, V;
    float *logits;                  // [N, V] host
    int32_t *targets, *targets_cpu; // [N] host: what the GPU gets, what the cpu gets
} CeCase;

static CeCase ce_case(int N, int V, uint64_t seed) {
    CeCase c = {N, V, hs_malloc((size_t)N * V * sizeof(float)), hs_malloc(N * sizeof(int32_t)),
                hs_malloc(N * sizeof(int32_t))};
    TestRng rng = test_rng(seed);
    test_fill_normal(&rng, c.logits, (size_t)N * V, 3.0f);
    test_fill_uniform_int(&rng, c.targets, (size_t)N, 0, V);
    for (int n = 0; n < N; n += 17)
        c.targets[n] = -1;
    c.targets[N - 1] = -1;
    c.targets[N / 2] = V + 3;
    c.logits[(size_t)1 * V + V / 3] = 30.0f;
    c.logits[(size_t)1 * V + V - 1] = 30.0f;
    for (int n = 0; n < N; n++)
        c.targets_cpu[n] = c.targets[n] >= V ? -1 : c.targets[n];
    return c;
}

static void ce_case_free(CeCase *c) {
    free(c->logits), free(c->targets), free(c->targets_cpu);
}

static void expect_floats_close(const char *what, const float *got, const float *want, size_t n,
                                double atol, double rtol) {
    double err = test_max_rel_err(what, got, want, n, atol, rtol);
    ck_assert_msg(err <= 1.0, "%s: cuda differs from cpu by %.3g x the tolerance", what, err);
}

static void expect_ints_equal(const char *what, const int32_t *got, const int32_t *want, int n) {
    int mismatches = 0, first = -1;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i] && mismatches++ == 0)
            first = i;
    if (mismatches)
        fprintf(stderr, "%s: %d of %d differ; first at %d: cuda %d cpu %d\n", what, mismatches, n,
                first, got[first], want[first]);
    ck_assert_msg(mismatches == 0, "%s: %d of %d differ", what, mismatches, n);
}

// The fused op in place with loss and argmax, then loss only (logits untouched), then the
// gradient only out of place.
static void check_fused(int N, int V, uint64_t seed) {
    CeCase c = ce_case(N, V, seed);
    const size_t NV = (size_t)N * V;
    const float scale = 1.0f / N;
    char what[96];

    float loss_cpu = 0.25f; // the op adds into the loss
    float *dlogits_cpu = test_copy_of(c.logits, NV);
    int32_t *argmax_cpu = hs_malloc(N * sizeof(int32_t));
    cpu->cross_entropy_fused(&loss_cpu, dlogits_cpu, argmax_cpu, dlogits_cpu, c.targets_cpu, scale,
                             N, V);

    float *logits = to_gpu(c.logits, NV * sizeof(float));
    int32_t *targets = to_gpu(c.targets, N * sizeof(int32_t));
    int32_t *argmax = gpu->alloc(N * sizeof(int32_t));
    float start = 0.25f;
    float *loss = to_gpu(&start, sizeof(float));
    gpu->cross_entropy_fused(loss, logits, argmax, logits, targets, scale, N, V);
    float loss_gpu;
    gpu->copy_to_host(&loss_gpu, loss, sizeof(float));
    float *dlogits_gpu = from_gpu(logits, NV * sizeof(float));
    int32_t *argmax_gpu = from_gpu(argmax, N * sizeof(int32_t));
    fprintf(stderr, "fused N=%d V=%d: loss cuda %.8g cpu %.8g\n", N, V, loss_gpu, loss_cpu);
    ck_assert_msg(fabs(loss_gpu - loss_cpu) <= 1e-5 * fabs(loss_cpu), "fused loss N=%d V=%d", N, V);
    snprintf(what, sizeof(what), "fused dlogits N=%d V=%d", N, V);
    expect_floats_close(what, dlogits_gpu, dlogits_cpu, NV, 1e-9, 1e-4);
    snprintf(what, sizeof(what), "fused argmax N=%d V=%d", N, V);
    expect_ints_equal(what, argmax_gpu, argmax_cpu, N);
    ck_assert_int_eq(argmax_gpu[1], V / 3); // the tie went to the lower index
    for (int n = 0; n < N; n++)             // ignored rows have a zero gradient
        if (c.targets_cpu[n] < 0)
            for (int v = 0; v < V; v++)
                ck_assert(dlogits_gpu[(size_t)n * V + v] == 0.0f);

    // Loss only: the logits stay as they were.
    gpu->copy_from_host(logits, c.logits, NV * sizeof(float));
    gpu->copy_from_host(loss, &start, sizeof(float));
    gpu->cross_entropy_fused(loss, NULL, NULL, logits, targets, scale, N, V);
    gpu->copy_to_host(&loss_gpu, loss, sizeof(float));
    ck_assert_msg(fabs(loss_gpu - loss_cpu) <= 1e-5 * fabs(loss_cpu), "loss-only N=%d V=%d", N, V);
    float *unchanged = from_gpu(logits, NV * sizeof(float));
    ck_assert_msg(memcmp(unchanged, c.logits, NV * sizeof(float)) == 0,
                  "loss-only call wrote the logits");

    // Gradient only, out of place.
    float *dlogits = gpu->alloc(NV * sizeof(float));
    gpu->cross_entropy_fused(NULL, dlogits, NULL, logits, targets, scale, N, V);
    float *dlogits_out = from_gpu(dlogits, NV * sizeof(float));
    snprintf(what, sizeof(what), "fused dlogits out of place N=%d V=%d", N, V);
    expect_floats_close(what, dlogits_out, dlogits_cpu, NV, 1e-9, 1e-4);

    free(dlogits_cpu), free(argmax_cpu), free(dlogits_gpu), free(argmax_gpu), free(unchanged);
    free(dlogits_out);
    gpu->free(logits), gpu->free(targets), gpu->free(argmax), gpu->free(loss), gpu->free(dlogits);
    ce_case_free(&c);
}

START_TEST(test_fused_seed_vocabulary) {
    check_fused(300, 50257, 1);
    check_fused(64, 50257, 2);
}
END_TEST

START_TEST(test_fused_small_odd_vocabulary) {
    check_fused(300, 257, 3);
    check_fused(65, 7, 4);
}
END_TEST

// Rows of a multiple of 4 floats, 16-byte aligned: pass 1 reads float4s (a vocabulary of
// 256 threads and one of 1024, cached).
START_TEST(test_fused_aligned_rows) {
    check_fused(130, 1024, 7);
    check_fused(50, 50260, 8);
}
END_TEST

START_TEST(test_fused_uncached_vocabulary) {
    check_fused(100, 65003, 5);
}
END_TEST

// Seed-shape timing of one chunk (printed, not asserted): the fused op against the separate
// forward and backward it replaces.
START_TEST(test_fused_seed_chunk_timing) {
    const int N = model_default_head_chunk(50257, 16384), V = 50257, reps = 5;
    CeCase c = ce_case(N, V, 6);
    float *logits = to_gpu(c.logits, (size_t)N * V * sizeof(float));
    int32_t *targets = to_gpu(c.targets, N * sizeof(int32_t));
    float *loss = gpu->alloc(sizeof(float));
    void *t0 = gpu->timer_create(), *t1 = gpu->timer_create(), *t2 = gpu->timer_create();
    gpu->cross_entropy_fused(loss, logits, NULL, logits, targets, 1.0f / N, N, V); // warm up
    gpu->timer_record(t0);
    for (int r = 0; r < reps; r++)
        gpu->cross_entropy_fused(loss, logits, NULL, logits, targets, 1.0f / N, N, V);
    gpu->timer_record(t1);
    for (int r = 0; r < reps; r++) {
        gpu->cross_entropy_forward(loss, logits, targets, 1.0f / N, N, V);
        gpu->cross_entropy_backward(logits, logits, targets, 1.0f / N, N, V);
    }
    gpu->timer_record(t2);
    float fused = gpu->timer_elapsed_ms(t0, t1) / reps,
          separate = gpu->timer_elapsed_ms(t1, t2) / reps;
    fprintf(stderr,
            "cross entropy of one head chunk [%d, %d]: fused %.3f ms, forward + backward %.3f ms "
            "(x %d chunks per seed step: %.2f ms against %.2f ms)\n",
            N, V, fused, separate, (16384 + N - 1) / N, fused * ((16384 + N - 1) / N),
            separate * ((16384 + N - 1) / N));
    ck_assert(fused > 0.0f && separate > 0.0f);
    gpu->timer_destroy(t0), gpu->timer_destroy(t1), gpu->timer_destroy(t2);
    gpu->free(logits), gpu->free(targets), gpu->free(loss);
    ce_case_free(&c);
}
END_TEST

// ---- the lm_head_loss op ------------------------------------------------------------------

// Rows whose two largest logits are further apart than `gap`: there the argmax cannot
// depend on the order of a GEMM's sums. logits [N, V]; clear [N] out (1 / 0).
static int rows_with_clear_argmax(int *clear, const float *logits, int N, int V, float gap) {
    int count = 0;
    for (int n = 0; n < N; n++) {
        float first = -INFINITY, second = -INFINITY;
        for (int v = 0; v < V; v++) {
            float x = logits[(size_t)n * V + v];
            if (x > first) {
                second = first;
                first = x;
            } else if (x > second) {
                second = x;
            }
        }
        clear[n] = first - second > gap;
        count += clear[n];
    }
    return count;
}

// The device buffers of one lm_head_loss case.
typedef struct HeadOnGpu {
    int N, H, V, chunk;
    float *loss, *yn, *w, *dw, *dyn, *scratch; // [1], [N, H], [V, H], [V, H], [N, H], chunk (V + 8)
    int32_t *targets, *pred;                   // [N]
} HeadOnGpu;

static HeadOnGpu head_on_gpu(const float *yn, const float *w, const int32_t *targets, int N, int H,
                             int V, int chunk) {
    HeadOnGpu g = {.N = N, .H = H, .V = V, .chunk = chunk};
    g.loss = gpu->alloc(sizeof(float));
    g.yn = to_gpu(yn, (size_t)N * H * sizeof(float));
    g.w = to_gpu(w, (size_t)V * H * sizeof(float));
    g.dw = gpu->alloc((size_t)V * H * sizeof(float));
    g.dyn = gpu->alloc((size_t)N * H * sizeof(float));
    g.scratch = gpu->alloc((size_t)chunk * (V + 8) * sizeof(float));
    g.targets = to_gpu(targets, N * sizeof(int32_t));
    g.pred = gpu->alloc(N * sizeof(int32_t));
    return g;
}

static void head_on_gpu_free(HeadOnGpu *g) {
    gpu->free(g->loss), gpu->free(g->yn), gpu->free(g->w), gpu->free(g->dw), gpu->free(g->dyn);
    gpu->free(g->scratch), gpu->free(g->targets), gpu->free(g->pred);
}

// What one call left, on the host (dyn only with the gradient).
typedef struct HeadResult {
    float loss;
    int32_t *pred; // [N]
    float *dyn;    // [N, H] or NULL
    float *dw;     // [V, H]
} HeadResult;

// One lm_head_loss call from loss = start and dw = dw0 (the op adds into both).
static HeadResult head_call(const HeadOnGpu *g, float start, const float *dw0, int with_grad,
                            float scale) {
    const size_t NH = (size_t)g->N * g->H, VH = (size_t)g->V * g->H;
    gpu->copy_from_host(g->loss, &start, sizeof(float));
    gpu->copy_from_host(g->dw, dw0, VH * sizeof(float));
    gpu->zero(g->pred, g->N * sizeof(int32_t));
    gpu->lm_head_loss(g->loss, g->pred, with_grad ? g->dyn : NULL, g->dw, g->scratch, g->yn, g->w,
                      g->targets, scale, g->N, g->H, g->V, g->chunk);
    HeadResult r = {0.0f, from_gpu(g->pred, g->N * sizeof(int32_t)),
                    with_grad ? from_gpu(g->dyn, NH * sizeof(float)) : NULL,
                    from_gpu(g->dw, VH * sizeof(float))};
    gpu->copy_to_host(&r.loss, g->loss, sizeof(float));
    return r;
}

static void head_result_free(HeadResult *r) {
    free(r->pred), free(r->dyn), free(r->dw);
}

// lm_head_loss on the GPU in `precision` against the cpu's on the same inputs (in bf16 mode:
// yn and w rounded to bf16 first, what the GPU multiplies; its dlogits are rounded too, which
// the cpu's are not, hence the looser dyn and dw bounds). Then the same call without the
// gradient: the same loss and predictions, dw untouched.
static void check_lm_head_loss(int N, int H, int V, int chunk, MatmulPrecision precision,
                               uint64_t seed) {
    const int bf16 = precision == MATMUL_BF16;
    CeCase c = ce_case(N, V, seed); // its targets (ignored rows); its logits are unused
    TestRng rng = test_rng(seed + 100);
    float *yn = hs_malloc((size_t)N * H * sizeof(float));
    float *w = hs_malloc((size_t)V * H * sizeof(float));
    float *dw0 = hs_malloc((size_t)V * H * sizeof(float));
    test_fill_normal(&rng, yn, (size_t)N * H, 1.0f);
    test_fill_normal(&rng, w, (size_t)V * H, 0.1f);
    test_fill_normal(&rng, dw0, (size_t)V * H, 1e-3f); // the op adds into dw
    float *yn_cpu =
        bf16 ? test_bf16_rounded_copy(yn, (size_t)N * H) : test_copy_of(yn, (size_t)N * H);
    float *w_cpu = bf16 ? test_bf16_rounded_copy(w, (size_t)V * H) : test_copy_of(w, (size_t)V * H);
    const float scale = 1.0f / N;
    char what[128];
    snprintf(what, sizeof(what), "lm_head_loss %s N=%d H=%d V=%d chunk=%d", bf16 ? "bf16" : "fp32",
             N, H, V, chunk);

    // cpu oracle, and its logits for the argmax check
    float loss_cpu = 0.5f;
    int32_t *pred_cpu = hs_malloc(N * sizeof(int32_t));
    float *dyn_cpu = hs_malloc((size_t)N * H * sizeof(float));
    float *dw_cpu = test_copy_of(dw0, (size_t)V * H);
    float *scratch_cpu = hs_malloc((size_t)chunk * (V + 8) * sizeof(float));
    cpu->lm_head_loss(&loss_cpu, pred_cpu, dyn_cpu, dw_cpu, scratch_cpu, yn_cpu, w_cpu,
                      c.targets_cpu, scale, N, H, V, chunk);
    float *logits_cpu = hs_malloc((size_t)N * V * sizeof(float));
    cpu->linear_forward(logits_cpu, yn_cpu, w_cpu, NULL, N, H, V);
    int *clear = hs_malloc(N * sizeof(int));
    int n_clear = rows_with_clear_argmax(clear, logits_cpu, N, V, 1e-3f);

    gpu->set_matmul_precision(precision);
    HeadOnGpu g = head_on_gpu(yn, w, c.targets, N, H, V, chunk);
    HeadResult with = head_call(&g, 0.5f, dw0, 1, scale);
    fprintf(stderr, "%s: loss cuda %.8g cpu %.8g; argmax checked on %d of %d rows\n", what,
            with.loss, loss_cpu, n_clear, N);
    ck_assert_msg(fabs(with.loss - loss_cpu) <= 2e-5 * fabs(loss_cpu), "%s: loss", what);
    int wrong = 0;
    for (int n = 0; n < N; n++)
        wrong += clear[n] && with.pred[n] != pred_cpu[n];
    ck_assert_msg(wrong == 0, "%s: %d predictions differ", what, wrong);
    ck_assert_msg(n_clear >= N * 9 / 10, "%s: only %d of %d rows have a clear argmax", what,
                  n_clear, N);
    double dyn_scale = 0.0, dw_scale = 0.0;
    for (size_t i = 0; i < (size_t)N * H; i++)
        dyn_scale = fmax(dyn_scale, fabs(dyn_cpu[i]));
    for (size_t i = 0; i < (size_t)V * H; i++)
        dw_scale = fmax(dw_scale, fabs(dw_cpu[i] - dw0[i]));
    const double atol = bf16 ? 1e-2 : 1e-4, rtol = bf16 ? 1e-2 : 2e-3;
    char part[200];
    snprintf(part, sizeof(part), "%s dyn", what);
    expect_floats_close(part, with.dyn, dyn_cpu, (size_t)N * H, atol * dyn_scale, rtol);
    snprintf(part, sizeof(part), "%s dw", what);
    expect_floats_close(part, with.dw, dw_cpu, (size_t)V * H, atol * dw_scale, rtol);

    // Without the gradient: the same loss and predictions, dw as it was.
    HeadResult without = head_call(&g, 0.5f, dw0, 0, scale);
    ck_assert_msg(without.loss == with.loss, "%s: loss without the gradient %.9g, with %.9g", what,
                  without.loss, with.loss);
    snprintf(part, sizeof(part), "%s predictions without the gradient", what);
    expect_ints_equal(part, without.pred, with.pred, N);
    ck_assert_msg(memcmp(without.dw, dw0, (size_t)V * H * sizeof(float)) == 0,
                  "%s: the call without the gradient wrote dw", what);
    head_result_free(&with), head_result_free(&without), head_on_gpu_free(&g);
    gpu->set_matmul_precision(MATMUL_FP32);

    free(yn), free(w), free(dw0), free(yn_cpu), free(w_cpu), free(pred_cpu), free(dyn_cpu);
    free(dw_cpu), free(scratch_cpu), free(logits_cpu), free(clear);
    ce_case_free(&c);
}

// The seed vocabulary (odd: padded rows in bf16 mode) with a tail chunk, a width that is
// not a multiple of 8 (padded yn and w copies) with one chunk larger than N, and the fp32
// path (the composition of the linear and cross-entropy ops).
START_TEST(test_lm_head_loss_bf16) {
    check_lm_head_loss(300, 64, 50257, 128, MATMUL_BF16, 11);
    check_lm_head_loss(77, 40, 1003, 100, MATMUL_BF16, 12);
}
END_TEST

START_TEST(test_lm_head_loss_fp32) {
    check_lm_head_loss(300, 64, 50257, 128, MATMUL_FP32, 13);
    check_lm_head_loss(77, 40, 1003, 100, MATMUL_FP32, 14);
}
END_TEST

// ---- the chunked head of a model ----------------------------------------------------------

// The tiny model with a larger vocabulary, B*T = 96 tokens in chunks of 40 (two full chunks
// and one of 16), trained one step on both backends with want_grad: loss, predictions and
// every gradient agree.
START_TEST(test_model_chunked_head) {
    ModelConfig cfg = model_config_tiny();
    cfg.vocab_size = 1003;
    cfg.seq_len = 48;
    const int B = 2, T = 48, N = B * T;
    Model mc, mg;
    model_build(&mc, &cfg, cpu, NULL, B, T);
    model_build(&mg, &cfg, gpu, NULL, B, T);
    model_init(&mc, 5);
    model_init(&mg, 5);
    model_set_head_chunk(&mc, 40);
    model_set_head_chunk(&mg, 40);
    int32_t tokens[96], targets[96];
    TestRng rng = test_rng(9);
    test_fill_uniform_int(&rng, tokens, N, 0, cfg.vocab_size);
    test_fill_uniform_int(&rng, targets, N, 0, cfg.vocab_size);
    targets[0] = targets[41] = targets[N - 1] = -1;
    int32_t *tokens_gpu = to_gpu(tokens, sizeof(tokens)),
            *targets_gpu = to_gpu(targets, sizeof(targets));
    ForwardArgs args = {.tokens = tokens,
                        .targets = targets,
                        .training = 1,
                        .seed = 3,
                        .step = 1,
                        .ce_scale = 1.0f / (N - 3),
                        .token_scale = 1.0f / N,
                        .seq_scale = 1.0f / B,
                        .want_grad = 1};
    ForwardArgs args_gpu = args;
    args_gpu.tokens = tokens_gpu;
    args_gpu.targets = targets_gpu;
    model_zero_grad(&mc);
    model_zero_grad(&mg);
    model_forward(&mc, &args);
    model_forward(&mg, &args_gpu);
    LossParts lc = model_losses(&mc), lg = model_losses(&mg);
    fprintf(stderr, "chunked head: ce cuda %.8g cpu %.8g\n", lg.ce, lc.ce);
    ck_assert_msg(fabs(lg.ce - lc.ce) <= 1e-5 * fabs(lc.ce), "ce: cuda %g cpu %g", lg.ce, lc.ce);
    int32_t *pred_gpu = from_gpu(mg.predictions, N * sizeof(int32_t));
    expect_ints_equal("model predictions", pred_gpu, mc.predictions, N);
    model_backward(&mc);
    model_backward(&mg);
    const size_t n = mc.layout.n_local;
    float *grads_gpu = from_gpu(mg.grads, n * sizeof(float));
    int failed = 0;
    for (int i = 0; i < mc.layout.n_tensors; i++) {
        const ParamTensor *t = &mc.layout.tensors[i];
        const float *want = mc.grads + t->offset, *got = grads_gpu + t->offset;
        double scale = 0.0; // tolerance relative to the tensor's gradient scale, as in
        for (size_t j = 0; j < t->numel; j++) // test_parity_model.c
            scale = fmax(scale, fabs((double)want[j]));
        if (test_max_rel_err(t->name, got, want, t->numel, 1e-4 * scale + 1e-10, 2e-3) > 1.0)
            failed++;
    }
    ck_assert_msg(failed == 0, "%d gradient tensors differ between cuda and cpu", failed);
    free(pred_gpu), free(grads_gpu);
    gpu->free(tokens_gpu), gpu->free(targets_gpu);
    model_free(&mc);
    model_free(&mg);
}
END_TEST

static Suite *parity_suite(void) {
    Suite *s = suite_create("cuda head parity");
    TCase *tc = tcase_create("head");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_fused_seed_vocabulary);
    tcase_add_test(tc, test_fused_small_odd_vocabulary);
    tcase_add_test(tc, test_fused_aligned_rows);
    tcase_add_test(tc, test_fused_uncached_vocabulary);
    tcase_add_test(tc, test_fused_seed_chunk_timing);
    tcase_add_test(tc, test_lm_head_loss_fp32);
    tcase_add_test(tc, test_lm_head_loss_bf16);
    tcase_add_test(tc, test_model_chunked_head);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_parity_suite(parity_suite, &cpu, &gpu);
}
