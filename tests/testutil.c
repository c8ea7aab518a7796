#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestRng test_rng(uint64_t seed) {
    TestRng rng = {seed * 0x9E3779B97F4A7C15ull + 1};
    return rng;
}

static uint64_t splitmix64(TestRng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float test_uniform(TestRng *rng) {
    return (float)((splitmix64(rng) >> 40) * (1.0 / 16777216.0));
}

float test_normal(TestRng *rng) {
    double u1 = ((splitmix64(rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void test_fill_normal(TestRng *rng, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * test_normal(rng);
}

void test_fill_uniform_int(TestRng *rng, int32_t *x, size_t n, int lo, int hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (int32_t)(splitmix64(rng) % (uint64_t)(hi - lo));
}

int32_t *test_token_rows(TestRng *rng, int N, int K, int rows) {
    ck_assert_msg(rows >= K, "test_token_rows: %d rows cannot give %d distinct", rows, K);
    int32_t *idx = malloc((size_t)N * K * sizeof(int32_t));
    for (size_t n = 0; n < (size_t)N; n++)
        for (int k = 0; k < K; k++) {
            int fresh;
            do { // draw again until the row is not among the token's earlier ones
                test_fill_uniform_int(rng, &idx[n * K + k], 1, 0, rows);
                fresh = 1;
                for (int j = 0; j < k; j++)
                    fresh &= idx[n * K + j] != idx[n * K + k];
            } while (!fresh);
        }
    return idx;
}

double test_max_rel_err(const char *what, const float *a, const float *b, size_t n, double atol,
                        double rtol) {
    double worst = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(err <= worst)) { // also catches NaN
            worst = isnan(err) ? INFINITY : err;
            worst_i = i;
        }
    }
    if (worst > 1.0)
        fprintf(stderr, "%s: worst at %zu: got %.8g want %.8g (err %.3g of tolerance)\n", what,
                worst_i, a[worst_i], b[worst_i], worst);
    return worst;
}

double test_grad_check(const char *what, test_scalar_fn f, void *ctx, float *x, size_t n,
                       const float *analytic, int max_checks, double eps, double floor) {
    size_t stride = (n <= (size_t)max_checks) ? 1 : n / (size_t)max_checks;
    double worst = 0.0, worst_fd = 0.0, worst_an = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i += stride) {
        float saved = x[i];
        x[i] = saved + (float)eps;
        double up = f(ctx);
        x[i] = saved - (float)eps;
        double down = f(ctx);
        x[i] = saved;
        // the step actually taken in fp32, not the nominal eps
        double h = ((double)(saved + (float)eps) - (double)(saved - (float)eps));
        double fd = (up - down) / h;
        double an = analytic[i];
        double rel = fabs(fd - an) / fmax(fabs(fd) + fabs(an), floor);
        if (!(rel <= worst)) {
            worst = isnan(rel) ? INFINITY : rel;
            worst_i = i, worst_fd = fd, worst_an = an;
        }
    }
    fprintf(stderr, "%-40s max rel err %.3g (at %zu: fd %.6g analytic %.6g)\n", what, worst,
            worst_i, worst_fd, worst_an);
    return worst;
}

int test_run_suite(Suite *s) {
    SRunner *runner = srunner_create(s);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

float *test_random_buffer(TestRng *rng, size_t n, float std) {
    float *x = test_zeros(n);
    test_fill_normal(rng, x, n, std);
    return x;
}

float *test_zeros(size_t n) {
    float *x = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(x);
    return x;
}

float *test_copy_of(const float *x, size_t n) {
    float *y = test_zeros(n);
    memcpy(y, x, n * sizeof(float));
    return y;
}

double test_project(const float *out, const float *proj, size_t n) {
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += (double)out[i] * proj[i];
    return acc;
}

int test_run_parity_suite(Suite *(*make_suite)(void), const Ops **cpu, const Ops **gpu) {
    *gpu = ops_cuda();
    if (!*gpu) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    setenv("CK_FORK", "no", 1);
    *cpu = ops_cpu();
    (*cpu)->init(0);
    (*gpu)->init(0);
    int status = test_run_suite(make_suite());
    (*gpu)->shutdown();
    (*cpu)->shutdown();
    return status;
}

LossParts test_model_step(Model *m, const ForwardArgs *args, float *grads_out) {
    model_zero_grad(m);
    model_forward(m, args);
    model_backward(m);
    memcpy(grads_out, m->grads, m->layout.n_local * sizeof(float));
    return model_losses(m);
}

float test_bf16_round(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return x; // NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

float *test_bf16_rounded_copy(const float *x, size_t n) {
    float *r = test_zeros(n);
    for (size_t i = 0; i < n; i++)
        r[i] = test_bf16_round(x[i]);
    return r;
}
