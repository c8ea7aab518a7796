// Shared helpers for the Check tests: seeded random fills, tolerance comparisons, and a
// finite-difference gradient checker over any scalar function of a buffer.
#pragma once
#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "model/model.h"

// Deterministic random numbers for test inputs (splitmix64 stream).
typedef struct TestRng {
    uint64_t state;
} TestRng;
TestRng test_rng(uint64_t seed);
float test_uniform(TestRng *rng); // [0, 1)
float test_normal(TestRng *rng);  // N(0, 1)
void test_fill_normal(TestRng *rng, float *x, size_t n, float std);
void test_fill_uniform_int(TestRng *rng, int32_t *x, size_t n, int lo, int hi); // [lo, hi)
// The rows N tokens read from a table of `rows` (rows >= K), as a top-K picks them: K
// distinct rows per token, uniform; with rows < N K some rows are read by several tokens and
// some by none. idx [N, K] (free with free()).
int32_t *test_token_rows(TestRng *rng, int N, int K, int rows);

// Largest |a - b| / (atol + rtol * |b|) over n elements; <= 1 means within tolerance.
// On failure prints the first worst index and the two values under `what`.
double test_max_rel_err(const char *what, const float *a, const float *b, size_t n, double atol,
                        double rtol);

// Central finite differences of f(ctx) w.r.t. x[i] for up to max_checks indices spread
// over [0, n) (all of them when n <= max_checks), compared with analytic[i]. f must return a
// double computed from the current contents of x. Returns the largest relative error
// |fd - an| / max(|fd| + |an|, floor). Prints the worst index under `what`.
typedef double (*test_scalar_fn)(void *ctx);
double test_grad_check(const char *what, test_scalar_fn f, void *ctx, float *x, size_t n,
                       const float *analytic, int max_checks, double eps, double floor);

// Run a Check suite (CK_NORMAL output) and return the process exit status.
int test_run_suite(Suite *s);

// Run a CUDA-vs-CPU parity suite: 77 ("skipped", with a message) where no GPU is visible;
// otherwise sets *cpu and *gpu, initialises both backends on device 0, runs the suite that
// make_suite builds without Check's fork per test (the CUDA context lives in this process),
// and shuts the backends down.
int test_run_parity_suite(Suite *(*make_suite)(void), const Ops **cpu, const Ops **gpu);

// Small buffers for op tests (host, calloc'd, free with free()).
float *test_random_buffer(TestRng *rng, size_t n, float std); // N(0, std^2) entries
float *test_zeros(size_t n);
float *test_copy_of(const float *x, size_t n);
// x rounded to the nearest bf16 (ties to even), kept as a float: what the cuda backend's bf16
// GEMMs multiply. Products of two such values are exact in fp32 (8 + 8 significant bits).
float test_bf16_round(float x);
// A copy of x [n] with every element so rounded (free with free()).
float *test_bf16_rounded_copy(const float *x, size_t n);
// sum_i out[i] * proj[i] in double: the scalar "loss" whose gradient an op test checks.
double test_project(const float *out, const float *proj, size_t n);

// One training step of a model: zero the gradients, forward with args, backward; copies the
// rank's m->layout.n_local gradients into grads_out and returns the loss parts.
LossParts test_model_step(Model *m, const ForwardArgs *args, float *grads_out);
