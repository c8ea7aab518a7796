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
    tcase_add_test(tc, test_fused_uncached_vocabulary);
    tcase_add_test(tc, test_fused_seed_chunk_timing);
    tcase_add_test(tc, test_model_chunked_head);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_parity_suite(parity_suite, &cpu, &gpu);
}
