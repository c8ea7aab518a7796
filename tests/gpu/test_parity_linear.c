// Parity of the cuda backend's fast paths for the linear layers, the column sums, the conv
// weight gradient and the row gather/scatter against the cpu oracle, at the shapes that
// reach each path: bf16 GEMMs on rounded copies with padded rows (odd I and O, the LM head's
// V = 50257), row chunks of the bf16 copies, the small products that keep fp32 operands;
// column sums over several row chunks, columns off the tile and vector width, unaligned
// inputs (which must give the same bits); lagged sums of the conv (a lag as long as the
// sequence); row copies with and without float4, over the grid's row limit. A last test
// times the seed shapes (stderr). Skips (exit 77) where no CUDA device is visible.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

static const Ops *cpu, *gpu;

// ---- helpers -------------------------------------------------------------------------------

// A backend buffer holding a copy of host[0..n) (n may be 0: one element is allocated).
static float *to_backend(const Ops *ops, const float *host, size_t n) {
    float *buf = ops->alloc((n ? n : 1) * sizeof(float));
    if (n)
        ops->copy_from_host(buf, host, n * sizeof(float));
    return buf;
}

// A host copy (hs_malloc) of a backend buffer.
static float *to_host(const Ops *ops, const float *buf, size_t n) {
    float *host = hs_malloc((n ? n : 1) * sizeof(float));
    if (n)
        ops->copy_to_host(host, buf, n * sizeof(float));
    return host;
}

static float *random_host(TestRng *rng, size_t n, float std) {
    float *x = hs_malloc((n ? n : 1) * sizeof(float));
    test_fill_normal(rng, x, n, std);
    return x;
}

// ||got - want|| / ||want - start|| (start NULL: zeros), in double: an accumulating op is
// judged on its increment, so a missing accumulation shows as an error near 1.
static double norm_rel_err(const float *got, const float *want, const float *start, size_t n) {
    double diff2 = 0.0, ref2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        double r = (double)want[i] - (start ? start[i] : 0.0f);
        diff2 += d * d;
        ref2 += r * r;
    }
    double err = sqrt(diff2) / (ref2 > 0.0 ? sqrt(ref2) : 1.0);
    return isnan(err) ? INFINITY : err;
}

// Counts a failure (returns 1) when the norm-relative error is above tol; prints it either way.
static int norm_fails(const char *what, const float *got, const float *want, const float *start,
                      size_t n, double tol) {
    double err = norm_rel_err(got, want, start, n);
    printf("%-58s norm-relative error %.3g (tolerance %.3g)\n", what, err, tol);
    if (err <= tol)
        return 0;
    fprintf(stderr, "FAIL: %s: norm-relative error %.3g above %.3g\n", what, err, tol);
    return 1;
}

// Counts a failure when |got - want| > atol + rtol |want| anywhere.
static int elementwise_fails(const char *what, const float *got, const float *want, size_t n,
                             double atol, double rtol) {
    double err = test_max_rel_err(what, got, want, n, atol, rtol);
    if (err <= 1.0)
        return 0;
    fprintf(stderr, "FAIL: %s: differs by %.3g x the tolerance\n", what, err);
    return 1;
}

// ---- linear ----------------------------------------------------------------------------------

// One run of every linear op on a backend, from host inputs, with results back on the host:
// forward with and without the bias, a full backward, and a backward with dx and db NULL.
typedef struct LinearOut {
    float *out_bias, *out_bare; // [N, O]
    float *dx, *dw, *db;        // [N, I], [O, I], [O]
    float *dw_alone;            // [O, I]
} LinearOut;

typedef struct LinearIn {
    int N, I, O;
    const float *x, *w, *b, *dout;               // [N, I], [O, I], [O], [N, O]
    const float *dx_start, *dw_start, *db_start; // the gradients before the backward
} LinearIn;

static LinearOut linear_run(const Ops *ops, const LinearIn *in, int with_dw_alone) {
    const int N = in->N, I = in->I, O = in->O;
    const size_t nx = (size_t)N * I, nw = (size_t)O * I, nout = (size_t)N * O;
    float *x = to_backend(ops, in->x, nx), *w = to_backend(ops, in->w, nw);
    float *b = to_backend(ops, in->b, O), *dout = to_backend(ops, in->dout, nout);
    float *out = ops->alloc(nout * sizeof(float));
    float *dx = to_backend(ops, in->dx_start, nx), *dw = to_backend(ops, in->dw_start, nw);
    float *db = to_backend(ops, in->db_start, O);
    LinearOut r = {0};
    ops->linear_forward(out, x, w, b, N, I, O);
    r.out_bias = to_host(ops, out, nout);
    ops->linear_forward(out, x, w, NULL, N, I, O);
    r.out_bare = to_host(ops, out, nout);
    ops->linear_backward(dx, dw, db, dout, x, w, N, I, O);
    r.dx = to_host(ops, dx, nx);
    r.dw = to_host(ops, dw, nw);
    r.db = to_host(ops, db, O);
    if (with_dw_alone) {
        ops->copy_from_host(dw, in->dw_start, nw * sizeof(float));
        ops->linear_backward(NULL, dw, NULL, dout, x, w, N, I, O);
        r.dw_alone = to_host(ops, dw, nw);
    }
    ops->free(x), ops->free(w), ops->free(b), ops->free(dout), ops->free(out);
    ops->free(dx), ops->free(dw), ops->free(db);
    return r;
}

static void linear_out_free(LinearOut *r) {
    free(r->out_bias), free(r->out_bare), free(r->dx), free(r->dw), free(r->db);
    free(r->dw_alone);
}

// One output of a linear run against its expectation (see norm_fails), labelled with the
// mode and shape.
static int linear_output_fails(const char *mode, const LinearIn *in, const char *label,
                               const float *got, const float *want, const float *start, size_t n,
                               double tol) {
    char what[128];
    snprintf(what, sizeof(what), "linear %s N %d I %d O %d %s", mode, in->N, in->I, in->O, label);
    return norm_fails(what, got, want, start, n, tol);
}

// Every output of `got` against `want` within tol (norm-relative; gradients on their
// increments). db_want: the expected db (the bf16 mode's db is an fp32 column sum).
static int linear_compare(const char *mode, const LinearIn *in, const LinearOut *got,
                          const LinearOut *want, const float *db_want, double tol, double db_tol) {
    const size_t nx = (size_t)in->N * in->I, nw = (size_t)in->O * in->I;
    const size_t nout = (size_t)in->N * in->O;
    int failures = 0;
    failures += linear_output_fails(mode, in, "forward (bias)", got->out_bias, want->out_bias, NULL,
                                    nout, tol);
    failures += linear_output_fails(mode, in, "forward (no bias)", got->out_bare, want->out_bare,
                                    NULL, nout, tol);
    failures += linear_output_fails(mode, in, "dx", got->dx, want->dx, in->dx_start, nx, tol);
    failures += linear_output_fails(mode, in, "dw", got->dw, want->dw, in->dw_start, nw, tol);
    failures +=
        linear_output_fails(mode, in, "db", got->db, db_want, in->db_start, (size_t)in->O, db_tol);
    failures += linear_output_fails(mode, in, "dw (dx, db NULL)", got->dw_alone, want->dw,
                                    in->dw_start, nw, tol);
    return failures;
}

// Random inputs of one shape (host), freed with linear_in_free.
static LinearIn linear_in_random(TestRng *rng, int N, int I, int O) {
    LinearIn in = {.N = N, .I = I, .O = O};
    in.x = random_host(rng, (size_t)N * I, 1.0f);
    in.w = random_host(rng, (size_t)O * I, 0.05f);
    in.b = random_host(rng, O, 1.0f);
    in.dout = random_host(rng, (size_t)N * O, 1.0f);
    in.dx_start = random_host(rng, (size_t)N * I, 1.0f);
    in.dw_start = random_host(rng, (size_t)O * I, 1.0f);
    in.db_start = random_host(rng, O, 1.0f);
    return in;
}

static void linear_in_free(LinearIn *in) {
    free((void *)in->x), free((void *)in->w), free((void *)in->b), free((void *)in->dout);
    free((void *)in->dx_start), free((void *)in->dw_start), free((void *)in->db_start);
}

// The same inputs with x, w and dout rounded to bf16 (b and the starting gradients as they
// are): the cpu oracle on these is what the bf16 mode must compute, up to fp32 sums.
static LinearIn linear_in_rounded(const LinearIn *in) {
    LinearIn r = *in;
    r.x = test_bf16_rounded_copy(in->x, (size_t)in->N * in->I);
    r.w = test_bf16_rounded_copy(in->w, (size_t)in->O * in->I);
    r.dout = test_bf16_rounded_copy(in->dout, (size_t)in->N * in->O);
    return r;
}

static void linear_in_rounded_free(LinearIn *r) {
    free((void *)r->x), free((void *)r->w), free((void *)r->dout);
}

// fp32 sums (CUDA cores, round to nearest) against the cpu's double sums: ~1e-6 of the norm
// even over K = 50257 terms.
static const double LINEAR_SUM_TOL = 2e-5;
// The same sums on the tensor cores, whose fp32 accumulation rounds toward zero (a bias that
// can add up to ~1e-4 over 50257 terms). Operands not rounded to nearest (fp32 ones, or
// truncated) are off by ~2.3e-3 against the rounded reference, 10x above this.
static const double BF16_SUM_TOL = 2e-4;

// Shapes with every dimension >= 16 take the bf16 copies in bf16 mode. Against the cpu on
// bf16-rounded inputs the error is the fp32 summation's alone, so BF16_SUM_TOL holds only
// if the GPU rounded to nearest (truncation or fp32 operands would be off by ~2e-3), read
// the padded copies right and reached every row. fp32 and tf32 are checked alongside.
START_TEST(test_linear_bf16_shapes) {
    const struct {
        int N, I, O;
    } shapes[] = {
        {1024, 512, 1024}, // aligned: the packed conversion
        {300, 203, 1001},  // odd I and O: padded x, w and dout copies
        {77, 96, 50257},   // the LM head's V: dout rows padded to 50264
        {130, 36, 20},     // rows of 16-byte multiples, not of 8 elements; small dims
        {16, 16, 16},      // the smallest shape on the bf16 copies
    };
    TestRng rng = test_rng(101);
    int failures = 0;
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        LinearIn in = linear_in_random(&rng, shapes[s].N, shapes[s].I, shapes[s].O);
        LinearIn rounded = linear_in_rounded(&in);
        LinearOut want = linear_run(cpu, &in, 0);
        LinearOut want16 = linear_run(cpu, &rounded, 0);

        gpu->set_matmul_precision(MATMUL_FP32);
        LinearOut got = linear_run(gpu, &in, 1);
        failures +=
            linear_compare("fp32", &in, &got, &want, want.db, LINEAR_SUM_TOL, LINEAR_SUM_TOL);
        linear_out_free(&got);

        gpu->set_matmul_precision(MATMUL_TF32);
        got = linear_run(gpu, &in, 1);
        failures += linear_compare("tf32", &in, &got, &want, want.db, 2e-3, LINEAR_SUM_TOL);
        linear_out_free(&got);

        gpu->set_matmul_precision(MATMUL_BF16);
        got = linear_run(gpu, &in, 1);
        failures +=
            linear_compare("bf16", &in, &got, &want16, want.db, BF16_SUM_TOL, LINEAR_SUM_TOL);
        linear_out_free(&got);

        gpu->set_matmul_precision(MATMUL_FP32);
        linear_out_free(&want), linear_out_free(&want16);
        linear_in_rounded_free(&rounded);
        linear_in_free(&in);
    }
    ck_assert_msg(failures == 0, "linear bf16 shapes: %d check(s) failed (see above)", failures);
}
END_TEST

// A dimension below 16 (the router's single output, a handful of tokens): the bf16 mode
// runs these memory-bound products in plain fp32, so they match the cpu as fp32 does.
START_TEST(test_linear_bf16_small_products) {
    const struct {
        int N, I, O;
    } shapes[] = {
        {256, 512, 1}, // the router
        {100, 8, 40},  // a short input
        {5, 512, 1001} // a handful of tokens
    };
    TestRng rng = test_rng(102);
    int failures = 0;
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        LinearIn in = linear_in_random(&rng, shapes[s].N, shapes[s].I, shapes[s].O);
        LinearOut want = linear_run(cpu, &in, 0);
        gpu->set_matmul_precision(MATMUL_BF16);
        LinearOut got = linear_run(gpu, &in, 1);
        gpu->set_matmul_precision(MATMUL_FP32);
        failures +=
            linear_compare("bf16", &in, &got, &want, want.db, LINEAR_SUM_TOL, LINEAR_SUM_TOL);
        linear_out_free(&got), linear_out_free(&want);
        linear_in_free(&in);
    }
    ck_assert_msg(failures == 0, "linear small products: %d check(s) failed", failures);
}
END_TEST

// Large enough that the bf16 copies of x and dout go in two row chunks (2560 + 140 rows of
// the LM head's shape): the bf16 mode must equal the GPU's fp32 mode on rounded inputs (the
// products exact in both, only the fp32 summation order differs). The fp32 mode is the one
// the other parity tests check against the cpu; the cpu would take minutes here.
START_TEST(test_linear_bf16_row_chunks) {
    const int N = 2700, I = 512, O = 50257;
    TestRng rng = test_rng(103);
    LinearIn in = {.N = N, .I = I, .O = O};
    const size_t nout = (size_t)N * O;
    float *dout = hs_malloc(nout * sizeof(float));
    for (size_t i = 0; i < nout; i++)
        dout[i] = 2.0f * test_uniform(&rng) - 1.0f; // uniform: quicker than normal here
    in.x = random_host(&rng, (size_t)N * I, 1.0f);
    in.w = random_host(&rng, (size_t)O * I, 0.05f);
    in.b = random_host(&rng, O, 1.0f);
    in.dout = dout;
    in.dx_start = random_host(&rng, (size_t)N * I, 1.0f);
    in.dw_start = random_host(&rng, (size_t)O * I, 1.0f);
    in.db_start = random_host(&rng, O, 1.0f);
    LinearIn rounded = linear_in_rounded(&in);

    gpu->set_matmul_precision(MATMUL_FP32);
    LinearOut want = linear_run(gpu, &rounded, 0);
    LinearOut want_db = linear_run(gpu, &in, 0); // db: an fp32 column sum of dout as it is
    gpu->set_matmul_precision(MATMUL_BF16);
    LinearOut got = linear_run(gpu, &in, 1);
    gpu->set_matmul_precision(MATMUL_FP32);
    int failures =
        linear_compare("bf16 (row chunks)", &in, &got, &want, want_db.db, BF16_SUM_TOL, 1e-6);
    linear_out_free(&got), linear_out_free(&want), linear_out_free(&want_db);
    linear_in_rounded_free(&rounded);
    linear_in_free(&in);
    ck_assert_msg(failures == 0, "linear bf16 row chunks: %d check(s) failed", failures);
}
END_TEST

// ---- linear_backward_bf16_input ---------------------------------------------------------

// One shape: x rounded to bf16 bits (x16) on the GPU; linear_backward_bf16_input(x16) must
// equal linear_backward(from_bf16(x16)) on the GPU bit for bit in `precision` (the bf16
// GEMMs read x16 as the operand the fp32 path would round to), and in fp32 the cpu's
// linear_backward_bf16_input within LINEAR_SUM_TOL. Returns the number of failed checks.
static int check_bf16_input_backward(TestRng *rng, int N, int I, int O, MatmulPrecision precision) {
    const size_t nx = (size_t)N * I, nw = (size_t)O * I, nout = (size_t)N * O;
    float *x = random_host(rng, nx, 1.0f), *w = random_host(rng, nw, 0.05f);
    float *dout = random_host(rng, nout, 1.0f), *dx0 = random_host(rng, nx, 1.0f);
    float *dw0 = random_host(rng, nw, 1.0f), *db0 = random_host(rng, O, 1.0f);
    float *x_g = to_backend(gpu, x, nx), *w_g = to_backend(gpu, w, nw);
    float *dout_g = to_backend(gpu, dout, nout), *wide_g = gpu->alloc(nx * sizeof(float));
    uint16_t *x16_g = gpu->alloc(nx * sizeof(uint16_t));
    gpu->to_bf16(x16_g, x_g, nx);
    gpu->from_bf16(wide_g, x16_g, nx);
    float *out[2][3]; // [bf16 input, widened][dx, dw, db]
    for (int run = 0; run < 2; run++) {
        float *dx = to_backend(gpu, dx0, nx), *dw = to_backend(gpu, dw0, nw);
        float *db = to_backend(gpu, db0, O);
        gpu->set_matmul_precision(precision);
        if (run == 0)
            gpu->linear_backward_bf16_input(dx, dw, db, dout_g, x16_g, w_g, N, I, O);
        else
            gpu->linear_backward(dx, dw, db, dout_g, wide_g, w_g, N, I, O);
        gpu->set_matmul_precision(MATMUL_FP32);
        out[run][0] = to_host(gpu, dx, nx), out[run][1] = to_host(gpu, dw, nw);
        out[run][2] = to_host(gpu, db, O);
        gpu->free(dx), gpu->free(dw), gpu->free(db);
    }
    const char *mode = precision == MATMUL_BF16 ? "bf16" : "fp32";
    const size_t sizes[3] = {nx, nw, (size_t)O};
    const char *names[3] = {"dx", "dw", "db"};
    int failures = 0;
    for (int t = 0; t < 3; t++)
        if (memcmp(out[0][t], out[1][t], sizes[t] * sizeof(float)) != 0) {
            fprintf(stderr,
                    "linear_backward_bf16_input %s N=%d I=%d O=%d: %s differs from "
                    "linear_backward on the widened copy\n",
                    mode, N, I, O, names[t]);
            failures++;
        }
    if (precision == MATMUL_FP32) {
        uint16_t *x16 = cpu->alloc(nx * sizeof(uint16_t));
        float *dx = to_backend(cpu, dx0, nx), *dw = to_backend(cpu, dw0, nw);
        float *db = to_backend(cpu, db0, O);
        cpu->to_bf16(x16, x, nx);
        cpu->linear_backward_bf16_input(dx, dw, db, dout, x16, w, N, I, O);
        failures += norm_fails("bf16 input dx", out[0][0], dx, dx0, nx, LINEAR_SUM_TOL);
        failures += norm_fails("bf16 input dw", out[0][1], dw, dw0, nw, LINEAR_SUM_TOL);
        failures += norm_fails("bf16 input db", out[0][2], db, db0, O, LINEAR_SUM_TOL);
        cpu->free(x16), cpu->free(dx), cpu->free(dw), cpu->free(db);
    }
    for (int run = 0; run < 2; run++)
        for (int t = 0; t < 3; t++)
            free(out[run][t]);
    gpu->free(x_g), gpu->free(w_g), gpu->free(dout_g), gpu->free(wide_g), gpu->free(x16_g);
    free(x), free(w), free(dout), free(dx0), free(dw0), free(db0);
    return failures;
}

// linear_forward_keep_bf16 on the GPU in `precision`: out bit for bit linear_forward's, and
// x16 bit for bit to_bf16(x). Returns the number of failed checks.
static int check_keep_bf16_forward(TestRng *rng, int N, int I, int O, MatmulPrecision precision) {
    const size_t nx = (size_t)N * I, nw = (size_t)O * I, nout = (size_t)N * O;
    float *x = random_host(rng, nx, 1.0f), *w = random_host(rng, nw, 0.05f);
    float *b = random_host(rng, O, 1.0f);
    float *x_g = to_backend(gpu, x, nx), *w_g = to_backend(gpu, w, nw),
          *b_g = to_backend(gpu, b, O);
    float *out_keep = gpu->alloc(nout * sizeof(float)),
          *out_plain = gpu->alloc(nout * sizeof(float));
    uint16_t *x16_keep = gpu->alloc(nx * sizeof(uint16_t)),
             *x16_plain = gpu->alloc(nx * sizeof(uint16_t));
    gpu->set_matmul_precision(precision);
    gpu->linear_forward_keep_bf16(out_keep, x16_keep, x_g, w_g, b_g, N, I, O);
    gpu->linear_forward(out_plain, x_g, w_g, b_g, N, I, O);
    gpu->set_matmul_precision(MATMUL_FP32);
    gpu->to_bf16(x16_plain, x_g, nx);
    float *h_keep = to_host(gpu, out_keep, nout), *h_plain = to_host(gpu, out_plain, nout);
    uint16_t *k16 = hs_malloc(nx * sizeof(uint16_t)), *p16 = hs_malloc(nx * sizeof(uint16_t));
    gpu->copy_to_host(k16, x16_keep, nx * sizeof(uint16_t));
    gpu->copy_to_host(p16, x16_plain, nx * sizeof(uint16_t));
    const char *mode = precision == MATMUL_BF16 ? "bf16" : "fp32";
    int failures = 0;
    if (memcmp(h_keep, h_plain, nout * sizeof(float)) != 0) {
        fprintf(stderr, "linear_forward_keep_bf16 %s N=%d I=%d O=%d: out differs\n", mode, N, I, O);
        failures++;
    }
    if (memcmp(k16, p16, nx * sizeof(uint16_t)) != 0) {
        fprintf(stderr, "linear_forward_keep_bf16 %s N=%d I=%d O=%d: x16 differs\n", mode, N, I, O);
        failures++;
    }
    free(x), free(w), free(b), free(h_keep), free(h_plain), free(k16), free(p16);
    gpu->free(x_g), gpu->free(w_g), gpu->free(b_g), gpu->free(out_keep), gpu->free(out_plain);
    gpu->free(x16_keep), gpu->free(x16_plain);
    return failures;
}

// The seed's GEMM inputs kept in bf16 (GELU output into w2, the norm output into the
// compressor), a tiny product (fp32 GEMMs in either mode) and rows not a multiple of 8 (the
// copy is padded, or widened), in both precisions: the backward from a kept copy and the
// forward that keeps it.
START_TEST(test_linear_backward_bf16_input) {
    TestRng rng = test_rng(107);
    const int shapes[4][3] = {{2048, 1024, 512}, {2048, 512, 32}, {100, 24, 8}, {300, 20, 64}};
    int failures = 0;
    for (int s = 0; s < 4; s++) {
        failures +=
            check_bf16_input_backward(&rng, shapes[s][0], shapes[s][1], shapes[s][2], MATMUL_BF16);
        failures +=
            check_bf16_input_backward(&rng, shapes[s][0], shapes[s][1], shapes[s][2], MATMUL_FP32);
        for (int bf16 = 0; bf16 < 2; bf16++)
            failures += check_keep_bf16_forward(&rng, shapes[s][0], shapes[s][1], shapes[s][2],
                                                bf16 ? MATMUL_BF16 : MATMUL_FP32);
    }
    ck_assert_msg(failures == 0, "linear_backward_bf16_input: %d check(s) failed", failures);
}
END_TEST

// ---- column sums (through rmsnorm_backward's dw: a, b and row_scale) ---------------------

// Host inputs of rmsnorm_backward's dw: dout, x [N, H], w, dw_start [H], rstd [N].
typedef struct RmsnormDwCase {
    int N, H;
    float *dout, *x, *w, *dw_start, *rstd;
} RmsnormDwCase;

static RmsnormDwCase rmsnorm_dw_case(TestRng *rng, int N, int H) {
    const size_t n = (size_t)N * H;
    RmsnormDwCase c = {.N = N, .H = H};
    c.dout = random_host(rng, n, 1.0f);
    c.x = random_host(rng, n, 1.0f);
    c.w = random_host(rng, H, 1.0f);
    c.dw_start = random_host(rng, H, 1.0f);
    c.rstd = hs_malloc(N * sizeof(float));
    for (int i = 0; i < N; i++)
        c.rstd[i] = 0.5f + test_uniform(rng);
    return c;
}

static void rmsnorm_dw_case_free(RmsnormDwCase *c) {
    free(c->dout), free(c->x), free(c->w), free(c->dw_start), free(c->rstd);
}

// dw[h] = dw_start[h] + sum_n dout[n, h] x[n, h] rstd[n] on a backend (host result).
static float *rmsnorm_dw_run(const Ops *ops, const RmsnormDwCase *c) {
    const int N = c->N, H = c->H;
    const size_t n = (size_t)N * H;
    float *d_dout = to_backend(ops, c->dout, n), *d_x = to_backend(ops, c->x, n);
    float *d_w = to_backend(ops, c->w, H), *d_rstd = to_backend(ops, c->rstd, N);
    float *d_dw = to_backend(ops, c->dw_start, H);
    ops->rmsnorm_backward(NULL, d_dw, d_dout, d_x, d_w, d_rstd, N, H);
    float *dw = to_host(ops, d_dw, H);
    ops->free(d_dout), ops->free(d_x), ops->free(d_w), ops->free(d_rstd), ops->free(d_dw);
    return dw;
}

// Row counts of one chunk, several, and not a multiple of the chunk; columns on and off the
// float4 tiles (128 columns), odd (the scalar path), a single one.
START_TEST(test_column_sums) {
    const struct {
        int N, H;
    } shapes[] = {
        {16384, 512}, // the seed shape: 128 chunks of 128 rows, float4
        {3001, 1000}, // chunk rows not dividing N, a partial float4 tile
        {100, 1000},  // a few short chunks
        {1, 203},     // one row, odd columns: scalar, one chunk (no second pass)
        {3001, 203},  // odd columns over several chunks
        {513, 4},     // one float4 column group
        {2000, 1},    // the router's db shape
    };
    TestRng rng = test_rng(104);
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const int N = shapes[s].N, H = shapes[s].H;
        RmsnormDwCase c = rmsnorm_dw_case(&rng, N, H);
        float *want = rmsnorm_dw_run(cpu, &c);
        float *got = rmsnorm_dw_run(gpu, &c);
        char what[96];
        snprintf(what, sizeof(what), "column sum (rmsnorm dw) N %d C %d", N, H);
        // sums of N terms of size ~1: fp32 against the cpu's double
        double atol = 2e-6 * sqrt((double)N) * 16.0;
        ck_assert_msg(elementwise_fails(what, got, want, H, atol, 1e-4) == 0, "%s differs", what);
        rmsnorm_dw_case_free(&c);
        free(want), free(got);
    }
}
END_TEST

// The same sums from 16-byte aligned inputs (float4 loads) and from inputs one float off
// (scalar loads) must be the same bits, and so must a second run: the order of the
// additions is fixed by the shape alone.
START_TEST(test_column_sums_deterministic) {
    const int N = 16384, H = 512;
    const size_t n = (size_t)N * H;
    TestRng rng = test_rng(105);
    RmsnormDwCase c = rmsnorm_dw_case(&rng, N, H);
    float *aligned = rmsnorm_dw_run(gpu, &c);
    float *again = rmsnorm_dw_run(gpu, &c);

    float *d_dout = gpu->alloc((n + 1) * sizeof(float)), *d_x = gpu->alloc((n + 1) * sizeof(float));
    gpu->copy_from_host(d_dout + 1, c.dout, n * sizeof(float));
    gpu->copy_from_host(d_x + 1, c.x, n * sizeof(float));
    float *d_w = to_backend(gpu, c.w, H), *d_rstd = to_backend(gpu, c.rstd, N);
    float *d_dw = to_backend(gpu, c.dw_start, H);
    gpu->rmsnorm_backward(NULL, d_dw, d_dout + 1, d_x + 1, d_w, d_rstd, N, H);
    float *shifted = to_host(gpu, d_dw, H);
    int differ_again = 0, differ_shifted = 0;
    for (int h = 0; h < H; h++) {
        differ_again += memcmp(&aligned[h], &again[h], sizeof(float)) != 0;
        differ_shifted += memcmp(&aligned[h], &shifted[h], sizeof(float)) != 0;
    }
    gpu->free(d_dout), gpu->free(d_x), gpu->free(d_w), gpu->free(d_rstd), gpu->free(d_dw);
    rmsnorm_dw_case_free(&c);
    free(aligned), free(again), free(shifted);
    ck_assert_msg(differ_again == 0, "column sum: %d of %d columns changed on a second run",
                  differ_again, H);
    ck_assert_msg(differ_shifted == 0,
                  "column sum: %d of %d columns differ between aligned and unaligned inputs",
                  differ_shifted, H);
}
END_TEST

// ---- conv backward (dw as lagged column sums, dbias) -----------------------------------------

START_TEST(test_conv_backward_shapes) {
    const struct {
        int B, T, H, Kc;
    } shapes[] = {
        {2, 4096, 512, 4}, // the seed shape (two sequences)
        {3, 1000, 200, 4}, // float4, a partial tile, chunks across sequence ends
        {2, 700, 203, 3},  // odd channels: scalar loads
        {4, 3, 64, 5},     // lags 3 and 4 reach past the whole sequence: those taps get 0
        {1, 513, 512, 1},  // one tap: lag 0 only
    };
    TestRng rng = test_rng(106);
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const int B = shapes[s].B, T = shapes[s].T, H = shapes[s].H, Kc = shapes[s].Kc;
        const size_t n = (size_t)B * T * H, nw = (size_t)H * Kc;
        float *x = random_host(&rng, n, 1.0f), *w = random_host(&rng, nw, 0.5f);
        float *dout = random_host(&rng, n, 1.0f), *dx0 = random_host(&rng, n, 1.0f);
        float *dw0 = random_host(&rng, nw, 1.0f), *db0 = random_host(&rng, H, 1.0f);
        float *got[3], *want[3];
        const Ops *both[2] = {cpu, gpu};
        for (int k = 0; k < 2; k++) {
            const Ops *ops = both[k];
            float *d_x = to_backend(ops, x, n), *d_w = to_backend(ops, w, nw);
            float *d_dout = to_backend(ops, dout, n), *d_dx = to_backend(ops, dx0, n);
            float *d_dw = to_backend(ops, dw0, nw), *d_db = to_backend(ops, db0, H);
            ops->conv_backward(d_dx, d_dw, d_db, d_dout, d_x, d_w, B, T, H, Kc);
            float **out = k == 0 ? want : got;
            out[0] = to_host(ops, d_dx, n);
            out[1] = to_host(ops, d_dw, nw);
            out[2] = to_host(ops, d_db, H);
            ops->free(d_x), ops->free(d_w), ops->free(d_dout), ops->free(d_dx);
            ops->free(d_dw), ops->free(d_db);
        }
        char what[96];
        const double atol = 2e-6 * sqrt((double)B * T) * 16.0;
        snprintf(what, sizeof(what), "conv_backward B %d T %d H %d Kc %d dx", B, T, H, Kc);
        ck_assert_msg(elementwise_fails(what, got[0], want[0], n, 1e-5, 1e-5) == 0, "%s", what);
        snprintf(what, sizeof(what), "conv_backward B %d T %d H %d Kc %d dw", B, T, H, Kc);
        ck_assert_msg(elementwise_fails(what, got[1], want[1], nw, atol, 1e-4) == 0, "%s", what);
        snprintf(what, sizeof(what), "conv_backward B %d T %d H %d Kc %d dbias", B, T, H, Kc);
        ck_assert_msg(elementwise_fails(what, got[2], want[2], H, atol, 1e-4) == 0, "%s", what);
        for (int k = 0; k < 3; k++)
            free(got[k]), free(want[k]);
        free(x), free(w), free(dout), free(dx0), free(dw0), free(db0);
    }
}
END_TEST

// ---- gather / scatter ------------------------------------------------------------------------

START_TEST(test_rows_shapes) {
    const struct {
        int M, D, rows, row_offset, misaligned;
    } cases[] = {
        {2048, 512, 5000, 1000, 0}, // float4
        {2048, 203, 300, 7, 0},     // odd width: scalar
        {1000, 512, 300, 0, 1},     // one float off 16-byte alignment: scalar
        {5000, 4, 100, 0, 0},       // one float4 a row, 64 rows a block
        {70000, 1024, 64, 3, 0},    // more rows than the grid's 65535: the row loop; ~1100
                                    // adds into each table row
    };
    TestRng rng = test_rng(107);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const int M = cases[c].M, D = cases[c].D, rows = cases[c].rows;
        const int offset = cases[c].row_offset, shift = cases[c].misaligned;
        const size_t n_table = (size_t)rows * D, n_rows = (size_t)M * D;
        float *table = random_host(&rng, n_table, 1.0f), *drows = random_host(&rng, n_rows, 1.0f);
        int32_t *idx = hs_malloc(M * sizeof(int32_t));
        test_fill_uniform_int(&rng, idx, M, offset, offset + rows);
        idx[M - 1] = idx[0]; // a repeat even in the short cases
        float *gathered[2], *scattered[2];
        const Ops *both[2] = {cpu, gpu};
        for (int k = 0; k < 2; k++) {
            const Ops *ops = both[k];
            float *d_table = ops->alloc((n_table + shift) * sizeof(float));
            float *d_out = ops->alloc((n_rows + shift) * sizeof(float));
            ops->copy_from_host(d_table + shift, table, n_table * sizeof(float));
            int32_t *d_idx = ops->alloc(M * sizeof(int32_t));
            ops->copy_from_host(d_idx, idx, M * sizeof(int32_t));
            ops->gather_rows(d_out + shift, d_table + shift, d_idx, M, D, offset);
            gathered[k] = to_host(ops, d_out + shift, n_rows);
            ops->copy_from_host(d_out + shift, drows, n_rows * sizeof(float));
            ops->scatter_add_rows(d_table + shift, d_out + shift, d_idx, M, D, offset);
            scattered[k] = to_host(ops, d_table + shift, n_table);
            ops->free(d_table), ops->free(d_out), ops->free(d_idx);
        }
        char what[96];
        snprintf(what, sizeof(what), "gather_rows M %d D %d%s", M, D, shift ? " (unaligned)" : "");
        ck_assert_msg(memcmp(gathered[0], gathered[1], n_rows * sizeof(float)) == 0,
                      "%s: cuda differs from cpu", what);
        snprintf(what, sizeof(what), "scatter_add_rows M %d D %d%s", M, D,
                 shift ? " (unaligned)" : "");
        // atomics add in any order: ~1e-7 of the partial sums (up to ~1100 terms of ~1)
        ck_assert_msg(elementwise_fails(what, scattered[1], scattered[0], n_table, 1e-3, 1e-5) == 0,
                      "%s differs", what);
        for (int k = 0; k < 2; k++)
            free(gathered[k]), free(scattered[k]);
        free(table), free(drows), free(idx);
    }
}
END_TEST

// ---- timings at the seed shapes (stderr, for the GPU run's log; nothing asserted) ------------

typedef void (*TimedCall)(void *ctx);

static double time_ms(TimedCall call, void *ctx, int runs) {
    call(ctx); // warm-up: workspace growth, cuBLAS heuristics
    void *start = gpu->timer_create(), *end = gpu->timer_create();
    gpu->timer_record(start);
    for (int r = 0; r < runs; r++)
        call(ctx);
    gpu->timer_record(end);
    double ms = gpu->timer_elapsed_ms(start, end) / runs;
    gpu->timer_destroy(start);
    gpu->timer_destroy(end);
    return ms;
}

typedef struct TimingBufs {
    int N, I, O;
    float *x, *w, *dout, *out, *dx, *dw, *db, *rstd; // GPU
    int32_t *idx;
} TimingBufs;

static void call_linear_forward(void *ctx) {
    TimingBufs *t = ctx;
    gpu->linear_forward(t->out, t->x, t->w, NULL, t->N, t->I, t->O);
}
static void call_linear_backward(void *ctx) {
    TimingBufs *t = ctx;
    gpu->linear_backward(t->dx, t->dw, NULL, t->dout, t->x, t->w, t->N, t->I, t->O);
}
static void call_column_sum(void *ctx) { // rmsnorm dw: a, b and row_scale
    TimingBufs *t = ctx;
    gpu->rmsnorm_backward(NULL, t->db, t->dout, t->x, t->w, t->rstd, t->N, t->I);
}
static void call_conv_backward_dw(void *ctx) { // 4 sequences of 4096, Kc 4, no dx
    TimingBufs *t = ctx;
    gpu->conv_backward(NULL, t->dw, t->db, t->dout, t->x, t->w, 4, t->N / 4, t->I, 4);
}
static void call_gather(void *ctx) {
    TimingBufs *t = ctx;
    gpu->gather_rows(t->out, t->dout, t->idx, t->N, t->I, 0);
}
static void call_scatter(void *ctx) {
    TimingBufs *t = ctx;
    gpu->scatter_add_rows(t->dout, t->out, t->idx, t->N, t->I, 0);
}

static TimingBufs timing_bufs(int N, int I, int O) {
    TimingBufs t = {.N = N, .I = I, .O = O};
    size_t big = (size_t)N * (I > O ? I : O);
    t.x = gpu->alloc((size_t)N * I * sizeof(float));
    t.w = gpu->alloc((size_t)O * I * sizeof(float));
    t.dout = gpu->alloc(big * sizeof(float));
    t.out = gpu->alloc(big * sizeof(float));
    t.dx = gpu->alloc((size_t)N * I * sizeof(float));
    t.dw = gpu->alloc((size_t)O * I * sizeof(float));
    t.db = gpu->alloc(big * sizeof(float) / N + 16);
    float *ones = hs_malloc((size_t)N * sizeof(float));
    for (int i = 0; i < N; i++)
        ones[i] = 1.0f;
    t.rstd = to_backend(gpu, ones, N);
    free(ones);
    int32_t *idx = hs_malloc((size_t)N * sizeof(int32_t));
    TestRng rng = test_rng(108);
    test_fill_uniform_int(&rng, idx, N, 0, N);
    t.idx = gpu->alloc((size_t)N * sizeof(int32_t));
    gpu->copy_from_host(t.idx, idx, (size_t)N * sizeof(int32_t));
    free(idx);
    return t;
}

static void timing_bufs_free(TimingBufs *t) {
    gpu->free(t->x), gpu->free(t->w), gpu->free(t->dout), gpu->free(t->out), gpu->free(t->dx);
    gpu->free(t->dw), gpu->free(t->db), gpu->free(t->rstd), gpu->free(t->idx);
}

START_TEST(test_seed_shape_timings) {
    const struct {
        int N, I, O;
    } gemms[] = {
        {16384, 512, 2048}, // the reflexive MLP's up projection
        {16384, 2048, 512}, // and its down projection
        {1280, 512, 50257}, // one chunk of the LM head
    };
    const MatmulPrecision modes[] = {MATMUL_TF32, MATMUL_BF16};
    const char *mode_names[] = {"tf32", "bf16"};
    for (size_t g = 0; g < sizeof(gemms) / sizeof(gemms[0]); g++) {
        TimingBufs t = timing_bufs(gemms[g].N, gemms[g].I, gemms[g].O);
        double flop = 2.0 * t.N * t.I * t.O;
        for (int m = 0; m < 2; m++) {
            gpu->set_matmul_precision(modes[m]);
            double fwd = time_ms(call_linear_forward, &t, 10);
            double bwd = time_ms(call_linear_backward, &t, 10);
            fprintf(stderr,
                    "linear %s N %d I %d O %d: forward %.3f ms (%.0f TFLOP/s), backward dx+dw "
                    "%.3f ms (%.0f TFLOP/s)\n",
                    mode_names[m], t.N, t.I, t.O, fwd, flop / fwd * 1e-9, bwd,
                    2.0 * flop / bwd * 1e-9);
        }
        gpu->set_matmul_precision(MATMUL_FP32);
        timing_bufs_free(&t);
    }
    TimingBufs t = timing_bufs(16384, 512, 512);
    double bytes = 16384.0 * 512 * 4;
    double colsum = time_ms(call_column_sum, &t, 20);
    double conv = time_ms(call_conv_backward_dw, &t, 20);
    double gather = time_ms(call_gather, &t, 20);
    double scatter = time_ms(call_scatter, &t, 20);
    fprintf(stderr,
            "column sum N 16384 C 512 (a, b, row_scale): %.1f us (%.0f GB/s)\n"
            "conv_backward dw + dbias B 4 T 4096 H 512 Kc 4 (no dx): %.1f us\n"
            "gather_rows M 16384 D 512: %.1f us (%.0f GB/s); scatter_add_rows: %.1f us\n",
            colsum * 1e3, 2.0 * bytes / colsum * 1e-6, conv * 1e3, gather * 1e3,
            2.0 * bytes / gather * 1e-6, scatter * 1e3);
    timing_bufs_free(&t);
}
END_TEST

static Suite *parity_linear_suite(void) {
    Suite *s = suite_create("cuda linear, column sums, rows");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_linear_bf16_shapes);
    tcase_add_test(tc, test_linear_bf16_small_products);
    tcase_add_test(tc, test_linear_bf16_row_chunks);
    tcase_add_test(tc, test_linear_backward_bf16_input);
    tcase_add_test(tc, test_column_sums);
    tcase_add_test(tc, test_column_sums_deterministic);
    tcase_add_test(tc, test_conv_backward_shapes);
    tcase_add_test(tc, test_rows_shapes);
    tcase_add_test(tc, test_seed_shape_timings);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_parity_suite(parity_linear_suite, &cpu, &gpu);
}
