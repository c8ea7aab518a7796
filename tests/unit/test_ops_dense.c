// The cpu backend's dense ops: row gather/scatter, elementwise, GELU, RMSNorm, linear and
// the causal depthwise conv. Forward results against naive formulas; every gradient against
// central finite differences of loss = sum(out * proj), proj a fixed random tensor (so the
// analytic gradient is the op's backward called with dout = proj).
//
// Tolerances: the ops compute in double and round outputs to fp32, so a finite difference
// with step eps carries a rounding error of about 1e-7 * |loss| / eps. With eps = 1e-2 and
// losses of order 1-10 that is ~1e-4 relative; the truncation error (eps^2 * f''') is of the
// same order for these smooth ops. We require max relative error < 5e-3 (floor 1e-3 on the
// denominator so near-zero gradients are compared absolutely).
#include "kernels/ops.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const double FD_EPS = 1e-2;
static const double FD_TOL = 5e-3;
static const double FD_FLOOR = 1e-3;

// ---- gather / scatter ----------------------------------------------------------------------

typedef struct GatherCtx {
    float *table, *out, *proj;
    int32_t *idx;
    int M, D, row_offset;
} GatherCtx;

static double gather_loss(void *p) {
    GatherCtx *c = p;
    ops_cpu()->gather_rows(c->out, c->table, c->idx, c->M, c->D, c->row_offset);
    return test_project(c->out, c->proj, (size_t)c->M * c->D);
}

START_TEST(test_gather_scatter) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(1);
    const int rows = 7, D = 5, M = 9, row_offset = 100;
    int32_t idx[9] = {100, 106, 103, 103, 101, 106, 100, 105, 103}; // repeats on purpose
    GatherCtx c = {test_random_buffer(&rng, rows * D, 1),
                   test_zeros(M * D),
                   test_random_buffer(&rng, M * D, 1),
                   idx,
                   M,
                   D,
                   row_offset};
    gather_loss(&c);
    for (int m = 0; m < M; m++)
        for (int d = 0; d < D; d++)
            ck_assert(c.out[m * D + d] == c.table[(idx[m] - row_offset) * D + d]);
    float *dtable = test_zeros(rows * D);
    ops->scatter_add_rows(dtable, c.proj, idx, M, D, row_offset);
    // gather is linear in the table: the difference is exact up to rounding
    ck_assert_double_le(test_grad_check("gather_rows dtable", gather_loss, &c, c.table, rows * D,
                                        dtable, 1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    free(c.table), free(c.out), free(c.proj), free(dtable);
}
END_TEST

// ---- elementwise ---------------------------------------------------------------------------

START_TEST(test_add_axpy_scale) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(2);
    const size_t n = 37;
    float *a = test_random_buffer(&rng, n, 1), *b = test_random_buffer(&rng, n, 1),
          *out = test_zeros(n);
    float *y = test_random_buffer(&rng, n, 1), *y0 = test_zeros(n), *s = test_zeros(n);
    memcpy(y0, y, n * sizeof(float));
    memcpy(s, a, n * sizeof(float));
    ops->add(out, a, b, n);
    ops->axpy(y, -0.75f, a, n);
    ops->scale(s, 3.0f, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert(out[i] == a[i] + b[i]);         // one fp32 addition: exact match
        ck_assert(y[i] == y0[i] + -0.75f * a[i]); // one fused-free multiply-add in fp32
        ck_assert(s[i] == 3.0f * a[i]);
    }
    // in place: out may alias an input
    ops->add(a, a, b, n);
    for (size_t i = 0; i < n; i++)
        ck_assert(a[i] == out[i]);
    free(a), free(b), free(out), free(y), free(y0), free(s);
}
END_TEST

// The backward of y += alpha x with respect to x is itself an axpy: dx += alpha * dy.
typedef struct AxpyCtx {
    float *x, *y0, *y, *proj;
    float alpha;
    size_t n;
} AxpyCtx;

static double axpy_loss(void *p) {
    AxpyCtx *c = p;
    memcpy(c->y, c->y0, c->n * sizeof(float));
    ops_cpu()->axpy(c->y, c->alpha, c->x, c->n);
    return test_project(c->y, c->proj, c->n);
}

START_TEST(test_axpy_grad) {
    TestRng rng = test_rng(3);
    const size_t n = 50;
    AxpyCtx c = {test_random_buffer(&rng, n, 1),
                 test_random_buffer(&rng, n, 1),
                 test_zeros(n),
                 test_random_buffer(&rng, n, 1),
                 1.7f,
                 n};
    float *dx = test_zeros(n);
    ops_cpu()->axpy(dx, c.alpha, c.proj, n);
    ck_assert_double_le(
        test_grad_check("axpy dx", axpy_loss, &c, c.x, n, dx, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    free(c.x), free(c.y0), free(c.y), free(c.proj), free(dx);
}
END_TEST

// ---- GELU ----------------------------------------------------------------------------------

typedef struct GeluCtx {
    float *x, *out, *proj;
    size_t n;
} GeluCtx;

static double gelu_loss(void *p) {
    GeluCtx *c = p;
    ops_cpu()->gelu_forward(c->out, c->x, c->n);
    return test_project(c->out, c->proj, c->n);
}

START_TEST(test_gelu) {
    const Ops *ops = ops_cpu();
    // Known values of the tanh approximation (0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))),
    // computed independently in double.
    float x_known[4] = {0.0f, 1.0f, -1.0f, 3.0f};
    float want[4] = {0.0f, 0.8411919906f, -0.1588080094f, 2.9963626856f};
    float got[4];
    ops->gelu_forward(got, x_known, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(got[i], want[i], 1e-6f);

    TestRng rng = test_rng(4);
    const size_t n = 64;
    GeluCtx c = {test_random_buffer(&rng, n, 2), test_zeros(n), test_random_buffer(&rng, n, 1), n};
    float *dx = test_zeros(n);
    ops->gelu_backward(dx, c.proj, c.x, n);
    ck_assert_double_le(
        test_grad_check("gelu dx", gelu_loss, &c, c.x, n, dx, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    free(c.x), free(c.out), free(c.proj), free(dx);
}
END_TEST

// ---- bf16 storage ---------------------------------------------------------------------------

static float float_of_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

// Rounding to nearest with ties to even, overflow to infinity, signed zeros, subnormals and
// NaN, on fp32 bit patterns whose bf16 is known; then every bf16 widens back exactly.
START_TEST(test_bf16_round_trip) {
    const Ops *ops = ops_cpu();
    const uint32_t in[] = {
        0x3f800000u, // 1.0 -> 0x3f80
        0x3f808000u, // 1 + 2^-8: a tie, the kept bit is even -> down, 0x3f80
        0x3f818000u, // a tie with an odd kept bit -> up, 0x3f82
        0x3f808001u, // just above the tie -> up, 0x3f81
        0x3f807fffu, // just below the tie -> down, 0x3f80
        0x7f7fffffu, // the largest float rounds up to infinity
        0xff7fffffu, // and the most negative to -infinity
        0x80000000u, // -0
        0x00008000u, // a subnormal tie, even -> 0x0000
        0x00018000u, // a subnormal tie, odd -> 0x0002
        0x7f800000u, // infinity stays
        0xc0490fdbu, // -pi -> 0xc049
    };
    const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x3f80, 0x7f80,
                             0xff80, 0x8000, 0x0000, 0x0002, 0x7f80, 0xc049};
    const size_t n = sizeof(in) / sizeof(in[0]);
    float x[sizeof(in) / sizeof(in[0])];
    uint16_t got[sizeof(in) / sizeof(in[0])];
    for (size_t i = 0; i < n; i++)
        x[i] = float_of_bits(in[i]);
    ops->to_bf16(got, x, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "to_bf16(0x%08x) = 0x%04x, want 0x%04x", in[i], got[i],
                      want[i]);

    float nan_in[2] = {float_of_bits(0x7fc00001u), float_of_bits(0xff800001u)};
    uint16_t nan_out[2];
    float nan_back[2];
    ops->to_bf16(nan_out, nan_in, 2);
    ops->from_bf16(nan_back, nan_out, 2);
    ck_assert_msg(isnan(nan_back[0]) && isnan(nan_back[1]), "a NaN did not stay a NaN");

    // Every one of the 65536 bf16 values widens to the fp32 with the same upper bits and
    // rounds back to itself (NaNs aside: their payload may be quieted).
    uint16_t *all = malloc(65536 * sizeof(uint16_t)), *again = malloc(65536 * sizeof(uint16_t));
    float *wide = malloc(65536 * sizeof(float));
    for (uint32_t b = 0; b < 65536; b++)
        all[b] = (uint16_t)b;
    ops->from_bf16(wide, all, 65536);
    ops->to_bf16(again, wide, 65536);
    for (uint32_t b = 0; b < 65536; b++) {
        uint32_t bits;
        memcpy(&bits, &wide[b], sizeof(bits));
        ck_assert_msg(bits == b << 16, "from_bf16(0x%04x) = 0x%08x", b, bits);
        if (!isnan(wide[b]))
            ck_assert_msg(again[b] == b, "bf16 0x%04x did not round back to itself", b);
    }
    free(all), free(again), free(wide);
}
END_TEST

// ---- RMSNorm -------------------------------------------------------------------------------

typedef struct RmsCtx {
    float *x, *w, *out, *rstd, *proj;
    int N, H;
} RmsCtx;

static double rms_loss(void *p) {
    RmsCtx *c = p;
    ops_cpu()->rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->H);
    return test_project(c->out, c->proj, (size_t)c->N * c->H);
}

START_TEST(test_rmsnorm) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(5);
    const int N = 6, H = 16;
    RmsCtx c = {test_random_buffer(&rng, N * H, 1),
                test_random_buffer(&rng, H, 1),
                test_zeros(N * H),
                test_zeros(N),
                test_random_buffer(&rng, N * H, 1),
                N,
                H};
    rms_loss(&c);
    for (int n = 0; n < N; n++) { // naive: x / sqrt(mean(x^2) + 1e-6) * w
        double ms = 0;
        for (int j = 0; j < H; j++)
            ms += (double)c.x[n * H + j] * c.x[n * H + j] / H;
        double r = 1.0 / sqrt(ms + 1e-6);
        ck_assert_double_eq_tol(c.rstd[n], r, 1e-6 * r);
        for (int j = 0; j < H; j++)
            ck_assert_double_eq_tol(c.out[n * H + j], c.x[n * H + j] * r * c.w[j], 1e-5);
    }
    float *dx = test_zeros(N * H), *dw = test_zeros(H);
    ops->rmsnorm_backward(dx, dw, c.proj, c.x, c.w, c.rstd, N, H);
    ck_assert_double_le(
        test_grad_check("rmsnorm dx", rms_loss, &c, c.x, N * H, dx, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    ck_assert_double_le(
        test_grad_check("rmsnorm dw", rms_loss, &c, c.w, H, dw, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    // dx = NULL still produces dw
    float *dw2 = test_zeros(H);
    ops->rmsnorm_backward(NULL, dw2, c.proj, c.x, c.w, c.rstd, N, H);
    ck_assert_double_le(test_max_rel_err("rmsnorm dw (dx NULL)", dw2, dw, H, 1e-7, 1e-6), 1.0);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.proj), free(dx), free(dw), free(dw2);
}
END_TEST

// ---- linear --------------------------------------------------------------------------------

typedef struct LinearCtx {
    float *x, *w, *b, *out, *proj;
    int N, I, O;
} LinearCtx;

static double linear_loss(void *p) {
    LinearCtx *c = p;
    ops_cpu()->linear_forward(c->out, c->x, c->w, c->b, c->N, c->I, c->O);
    return test_project(c->out, c->proj, (size_t)c->N * c->O);
}

START_TEST(test_linear) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(6);
    const int N = 7, I = 9, O = 5;
    LinearCtx c = {test_random_buffer(&rng, N * I, 1),
                   test_random_buffer(&rng, O * I, 1),
                   test_random_buffer(&rng, O, 1),
                   test_zeros(N * O),
                   test_random_buffer(&rng, N * O, 1),
                   N,
                   I,
                   O};
    linear_loss(&c);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) { // naive y = x w^T + b, w [O, I]
            double acc = c.b[o];
            for (int i = 0; i < I; i++)
                acc += (double)c.x[n * I + i] * c.w[o * I + i];
            ck_assert_double_eq_tol(c.out[n * O + o], acc, 1e-5);
        }
    float *dx = test_zeros(N * I), *dw = test_zeros(O * I), *db = test_zeros(O);
    ops->linear_backward(dx, dw, db, c.proj, c.x, c.w, N, I, O);
    ck_assert_double_le(
        test_grad_check("linear dx", linear_loss, &c, c.x, N * I, dx, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    ck_assert_double_le(
        test_grad_check("linear dw", linear_loss, &c, c.w, O * I, dw, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    ck_assert_double_le(
        test_grad_check("linear db", linear_loss, &c, c.b, O, db, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    // b = NULL: no bias in the forward; dx = NULL and db = NULL skip those gradients
    float *out_nobias = test_zeros(N * O), *dw2 = test_zeros(O * I);
    linear_loss(&c); // c.out at the unperturbed inputs
    ops->linear_forward(out_nobias, c.x, c.w, NULL, N, I, O);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            ck_assert_float_eq_tol(out_nobias[n * O + o], c.out[n * O + o] - c.b[o], 1e-5f);
    ops->linear_backward(NULL, dw2, NULL, c.proj, c.x, c.w, N, I, O);
    ck_assert_double_le(test_max_rel_err("linear dw (dx, db NULL)", dw2, dw, O * I, 1e-7, 1e-6),
                        1.0);
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.proj);
    free(dx), free(dw), free(db), free(out_nobias), free(dw2);
}
END_TEST

// ---- causal depthwise conv -----------------------------------------------------------------

typedef struct ConvCtx {
    float *x, *w, *bias, *out, *proj;
    int B, T, H, Kc;
} ConvCtx;

static double conv_loss(void *p) {
    ConvCtx *c = p;
    ops_cpu()->conv_forward(c->out, c->x, c->w, c->bias, c->B, c->T, c->H, c->Kc);
    return test_project(c->out, c->proj, (size_t)c->B * c->T * c->H);
}

START_TEST(test_conv) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(7);
    const int B = 2, T = 7, H = 5, Kc = 4;
    const size_t n = (size_t)B * T * H;
    ConvCtx c = {test_random_buffer(&rng, n, 1),
                 test_random_buffer(&rng, H * Kc, 1),
                 test_random_buffer(&rng, H, 1),
                 test_zeros(n),
                 test_random_buffer(&rng, n, 1),
                 B,
                 T,
                 H,
                 Kc};
    conv_loss(&c);
    for (int b = 0; b < B; b++) // naive, and no leak across the sequence boundary
        for (int t = 0; t < T; t++)
            for (int ch = 0; ch < H; ch++) {
                double acc = c.bias[ch];
                for (int j = 0; j < Kc; j++) {
                    int s = t - Kc + 1 + j;
                    if (s >= 0)
                        acc += (double)c.w[ch * Kc + j] * c.x[(b * T + s) * H + ch];
                }
                ck_assert_double_eq_tol(c.out[(b * T + t) * H + ch], acc, 1e-5);
            }
    float *dx = test_zeros(n), *dw = test_zeros(H * Kc), *db = test_zeros(H);
    ops->conv_backward(dx, dw, db, c.proj, c.x, c.w, B, T, H, Kc);
    ck_assert_double_le(
        test_grad_check("conv dx", conv_loss, &c, c.x, n, dx, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    ck_assert_double_le(
        test_grad_check("conv dw", conv_loss, &c, c.w, H * Kc, dw, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    ck_assert_double_le(
        test_grad_check("conv dbias", conv_loss, &c, c.bias, H, db, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    free(c.x), free(c.w), free(c.bias), free(c.out), free(c.proj), free(dx), free(dw), free(db);
}
END_TEST

// ---- backward ops accumulate (+=) ------------------------------------------------------------

// grads_twice must equal 2 * grads_once: the second call added onto the first.
static void assert_doubled(const char *what, const float *twice, const float *once, size_t n) {
    float *want = test_zeros(n);
    for (size_t i = 0; i < n; i++)
        want[i] = 2.0f * once[i];
    ck_assert_double_le(test_max_rel_err(what, twice, want, n, 1e-6, 1e-5), 1.0);
    free(want);
}

START_TEST(test_backward_accumulates) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(8);
    const int N = 4, I = 6, O = 3, H = 6, B = 2, T = 3, Kc = 2;
    float *x = test_random_buffer(&rng, N * I, 1), *w = test_random_buffer(&rng, O * I, 1);
    float *dout = test_random_buffer(&rng, N * O, 1);
    float *dx = test_zeros(N * I), *dw = test_zeros(O * I), *db = test_zeros(O);
    float *dx2 = test_zeros(N * I), *dw2 = test_zeros(O * I), *db2 = test_zeros(O);
    ops->linear_backward(dx, dw, db, dout, x, w, N, I, O);
    for (int rep = 0; rep < 2; rep++)
        ops->linear_backward(dx2, dw2, db2, dout, x, w, N, I, O);
    assert_doubled("linear dx +=", dx2, dx, N * I);
    assert_doubled("linear dw +=", dw2, dw, O * I);
    assert_doubled("linear db +=", db2, db, O);

    // rmsnorm over [N, H] (H = I here)
    float *rw = test_random_buffer(&rng, H, 1), *rout = test_zeros(N * H), *rstd = test_zeros(N);
    float *rdout = test_random_buffer(&rng, N * H, 1);
    ops->rmsnorm_forward(rout, rstd, x, rw, N, H);
    float *rdx = test_zeros(N * H), *rdw = test_zeros(H), *rdx2 = test_zeros(N * H),
          *rdw2 = test_zeros(H);
    ops->rmsnorm_backward(rdx, rdw, rdout, x, rw, rstd, N, H);
    for (int rep = 0; rep < 2; rep++)
        ops->rmsnorm_backward(rdx2, rdw2, rdout, x, rw, rstd, N, H);
    assert_doubled("rmsnorm dx +=", rdx2, rdx, N * H);
    assert_doubled("rmsnorm dw +=", rdw2, rdw, H);

    // conv over [B, T, H] (B*T = 6 rows of x reused as [B, T, H] with H = 4)
    const int CH = 4;
    float *cw = test_random_buffer(&rng, CH * Kc, 1),
          *cdout = test_random_buffer(&rng, B * T * CH, 1);
    float *cdx = test_zeros(B * T * CH), *cdw = test_zeros(CH * Kc), *cdb = test_zeros(CH);
    float *cdx2 = test_zeros(B * T * CH), *cdw2 = test_zeros(CH * Kc), *cdb2 = test_zeros(CH);
    ops->conv_backward(cdx, cdw, cdb, cdout, x, cw, B, T, CH, Kc);
    for (int rep = 0; rep < 2; rep++)
        ops->conv_backward(cdx2, cdw2, cdb2, cdout, x, cw, B, T, CH, Kc);
    assert_doubled("conv dx +=", cdx2, cdx, B * T * CH);
    assert_doubled("conv dw +=", cdw2, cdw, CH * Kc);
    assert_doubled("conv dbias +=", cdb2, cdb, CH);

    // gelu and scatter_add_rows
    float *gdx = test_zeros(N * I), *gdx2 = test_zeros(N * I);
    ops->gelu_backward(gdx, dx, x, N * I);
    for (int rep = 0; rep < 2; rep++)
        ops->gelu_backward(gdx2, dx, x, N * I);
    assert_doubled("gelu dx +=", gdx2, gdx, N * I);
    int32_t idx[3] = {2, 0, 2};
    float *st = test_zeros(3 * I), *st2 = test_zeros(3 * I);
    ops->scatter_add_rows(st, x, idx, 3, I, 0);
    for (int rep = 0; rep < 2; rep++)
        ops->scatter_add_rows(st2, x, idx, 3, I, 0);
    assert_doubled("scatter_add_rows +=", st2, st, 3 * I);

    free(x), free(w), free(dout), free(dx), free(dw), free(db), free(dx2), free(dw2), free(db2);
    free(rw), free(rout), free(rstd), free(rdout), free(rdx), free(rdw), free(rdx2), free(rdw2);
    free(cw), free(cdout), free(cdx), free(cdw), free(cdb), free(cdx2), free(cdw2), free(cdb2);
    free(gdx), free(gdx2), free(st), free(st2);
}
END_TEST

// ---- results do not depend on the thread count ---------------------------------------------

// Linear backward on a problem big enough to run threaded: 1 thread and 2 threads must give
// bit-identical gradients (dw is parallel over output rows, never over tokens).
START_TEST(test_thread_count_independent) {
#ifdef _OPENMP
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(9);
    const int N = 96, I = 64, O = 48;
    float *x = test_random_buffer(&rng, N * I, 1), *w = test_random_buffer(&rng, O * I, 1);
    float *dout = test_random_buffer(&rng, N * O, 1);
    float *grads[2][3];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        grads[run][0] = test_zeros(N * I), grads[run][1] = test_zeros(O * I),
        grads[run][2] = test_zeros(O);
        ops->linear_backward(grads[run][0], grads[run][1], grads[run][2], dout, x, w, N, I, O);
    }
    ck_assert(memcmp(grads[0][0], grads[1][0], N * I * sizeof(float)) == 0);
    ck_assert(memcmp(grads[0][1], grads[1][1], O * I * sizeof(float)) == 0);
    ck_assert(memcmp(grads[0][2], grads[1][2], O * sizeof(float)) == 0);
    for (int run = 0; run < 2; run++)
        for (int g = 0; g < 3; g++)
            free(grads[run][g]);
    free(x), free(w), free(dout);
#endif
}
END_TEST

// ---- memory functions ----------------------------------------------------------------------

START_TEST(test_memory) {
    const Ops *ops = ops_cpu();
    ck_assert_int_eq(ops->kind, BACKEND_CPU);
    ck_assert_str_eq(ops->name, "cpu");
    ops->init(0);
    float *a = ops->alloc(100 * sizeof(float));
    for (int i = 0; i < 100; i++)
        ck_assert(a[i] == 0.0f); // alloc is zero-filled
    float host[100], back[100];
    for (int i = 0; i < 100; i++)
        host[i] = (float)i * 0.5f;
    ops->copy_from_host(a, host, sizeof(host));
    float *b = ops->alloc(sizeof(host));
    ops->copy(b, a, sizeof(host));
    ops->copy_to_host(back, b, sizeof(back));
    ops->synchronize();
    ck_assert(memcmp(back, host, sizeof(host)) == 0);
    ops->zero(b, 10 * sizeof(float));
    ops->copy_to_host(back, b, sizeof(back));
    ck_assert(back[9] == 0.0f && back[10] == 5.0f);
    ops->free(a);
    ops->free(b);
    ops->shutdown();
}
END_TEST

static Suite *dense_suite(void) {
    Suite *s = suite_create("ops_dense");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, test_memory);
    tcase_add_test(tc, test_gather_scatter);
    tcase_add_test(tc, test_add_axpy_scale);
    tcase_add_test(tc, test_axpy_grad);
    tcase_add_test(tc, test_gelu);
    tcase_add_test(tc, test_bf16_round_trip);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_conv);
    tcase_add_test(tc, test_backward_accumulates);
    tcase_add_test(tc, test_thread_count_independent);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(dense_suite());
}
