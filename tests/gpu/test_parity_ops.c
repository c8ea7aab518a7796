// Parity of every op of the cuda backend against the cpu oracle (kernels/cpu/), forward and
// backward, at realistic shapes: the same random inputs go to both backends and the outputs
// are compared with a tolerance stated per op (fp32 on the GPU against the cpu's double
// accumulations). Integer outputs (selections, slot ids) must match exactly.
// Backward ops accumulate, so gradients start from the same random values on both sides.
// Skips (exit 77) where no CUDA device is visible.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

static const Ops *cpu, *gpu;

// One float tensor held twice: in cpu memory and in GPU memory.
typedef struct Buf {
    float *cpu, *gpu;
    size_t n;
} Buf;
typedef struct IBuf {
    int32_t *cpu, *gpu;
    size_t n;
} IBuf;

static Buf buf_from_host(const float *host, size_t n) {
    Buf b = {cpu->alloc(n * sizeof(float)), gpu->alloc(n * sizeof(float)), n};
    for (size_t i = 0; i < n; i++)
        b.cpu[i] = host[i];
    gpu->copy_from_host(b.gpu, host, n * sizeof(float));
    return b;
}

static Buf buf_random(TestRng *rng, size_t n, float std) {
    float *host = hs_malloc(n * sizeof(float));
    test_fill_normal(rng, host, n, std);
    Buf b = buf_from_host(host, n);
    free(host);
    return b;
}

static Buf buf_zeros(size_t n) {
    Buf b = {cpu->alloc(n * sizeof(float)), gpu->alloc(n * sizeof(float)), n};
    return b;
}

static IBuf ibuf_from_host(const int32_t *host, size_t n) {
    IBuf b = {cpu->alloc(n * sizeof(int32_t)), gpu->alloc(n * sizeof(int32_t)), n};
    for (size_t i = 0; i < n; i++)
        b.cpu[i] = host[i];
    gpu->copy_from_host(b.gpu, host, n * sizeof(int32_t));
    return b;
}

static IBuf ibuf_zeros(size_t n) {
    IBuf b = {cpu->alloc(n * sizeof(int32_t)), gpu->alloc(n * sizeof(int32_t)), n};
    return b;
}

static void buf_free(Buf *b) {
    cpu->free(b->cpu);
    gpu->free(b->gpu);
}

static void ibuf_free(IBuf *b) {
    cpu->free(b->cpu);
    gpu->free(b->gpu);
}

// The GPU copy must match the cpu copy within |gpu - cpu| <= atol + rtol |cpu|.
static void expect_close(const char *what, Buf b, double atol, double rtol) {
    float *host = hs_malloc(b.n * sizeof(float));
    float *want = hs_malloc(b.n * sizeof(float));
    gpu->copy_to_host(host, b.gpu, b.n * sizeof(float));
    // Equal values are within any tolerance, infinities (padding scores of -inf) included;
    // test_max_rel_err would see inf - inf = NaN there.
    for (size_t i = 0; i < b.n; i++) {
        want[i] = b.cpu[i];
        if (host[i] == want[i])
            host[i] = want[i] = 1.0f;
    }
    double err = test_max_rel_err(what, host, want, b.n, atol, rtol);
    free(host);
    free(want);
    ck_assert_msg(err <= 1.0, "%s: cuda differs from cpu by %.3g x the tolerance", what, err);
}

// Integer outputs must match exactly.
static void expect_equal(const char *what, IBuf b) {
    int32_t *host = hs_malloc(b.n * sizeof(int32_t));
    gpu->copy_to_host(host, b.gpu, b.n * sizeof(int32_t));
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < b.n; i++)
        if (host[i] != b.cpu[i] && mismatches++ == 0)
            first = i;
    if (mismatches)
        fprintf(stderr, "%s: %zu of %zu differ; first at %zu: cuda %d cpu %d\n", what, mismatches,
                b.n, first, host[first], b.cpu[first]);
    free(host);
    ck_assert_msg(mismatches == 0, "%s: %zu of %zu integers differ", what, mismatches, b.n);
}

// Mq distinct positions of [0, T), ascending, for each of B sequences; always including the
// first and the last position (the edges of the causal mask).
static void random_sorted_positions(TestRng *rng, int32_t *qpos, int B, int T, int Mq) {
    unsigned char *taken = hs_malloc((size_t)T);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            taken[t] = 0;
        taken[0] = 1;
        taken[T - 1] = Mq > 1;
        int count = Mq > 1 ? 2 : 1;
        while (count < Mq) {
            int t = (int)(test_uniform(rng) * T);
            if (t < T && !taken[t]) {
                taken[t] = 1;
                count++;
            }
        }
        int written = 0;
        for (int t = 0; t < T; t++)
            if (taken[t])
                qpos[b * Mq + written++] = t;
    }
    free(taken);
}

// One bf16 conversion pair at n elements starting `offset` elements into the buffers (an
// offset or an n that is not a multiple of 8 takes the kernels' scalar path): to_bf16 must
// give the cpu's bits exactly (both round to nearest even), NaNs aside, which need only stay
// NaNs; from_bf16 must give back the same floats.
static void check_bf16_conversion(TestRng *rng, size_t n, size_t offset) {
    const size_t total = n + offset;
    float *host = hs_malloc(total * sizeof(float));
    test_fill_normal(rng, host, total, 3.0f);
    // Values whose rounding is delicate: exact ties (even and odd), just off them, zeros,
    // infinities, a NaN, subnormals and the largest floats (which round to infinity).
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu,
                                0x80000000u, 0x00000000u, 0x7f800000u, 0xff800000u,
                                0x7fc00001u, 0x00018000u, 0x80008000u, 0x7f7fffffu};
    const size_t n_special = sizeof(special) / sizeof(special[0]);
    for (size_t i = 0; i < n_special && i < n; i++)
        memcpy(&host[offset + i * (n / n_special)], &special[i], sizeof(float));
    Buf x = buf_from_host(host, total);
    uint16_t *bits_cpu = cpu->alloc(total * sizeof(uint16_t));
    uint16_t *bits_gpu = gpu->alloc(total * sizeof(uint16_t));
    cpu->to_bf16(bits_cpu + offset, x.cpu + offset, n);
    gpu->to_bf16(bits_gpu + offset, x.gpu + offset, n);
    uint16_t *got = hs_malloc(total * sizeof(uint16_t));
    gpu->copy_to_host(got, bits_gpu, total * sizeof(uint16_t));
    size_t mismatches = 0;
    for (size_t i = offset; i < total; i++) {
        int nan_cpu = (bits_cpu[i] & 0x7fffu) > 0x7f80u, nan_gpu = (got[i] & 0x7fffu) > 0x7f80u;
        if (nan_cpu ? !nan_gpu : got[i] != bits_cpu[i]) {
            if (mismatches++ == 0)
                fprintf(stderr,
                        "to_bf16 n=%zu offset %zu: first mismatch at %zu: x 0x%08x, "
                        "cuda 0x%04x, cpu 0x%04x\n",
                        n, offset, i, *(uint32_t *)&host[i], got[i], bits_cpu[i]);
        }
    }
    ck_assert_msg(mismatches == 0, "to_bf16 n=%zu offset %zu: %zu of %zu differ", n, offset,
                  mismatches, n);
    // Widen the cpu's bits on both sides (so both read identical input).
    gpu->copy_from_host(bits_gpu, bits_cpu, total * sizeof(uint16_t));
    Buf wide = buf_zeros(total);
    cpu->from_bf16(wide.cpu + offset, bits_cpu + offset, n);
    gpu->from_bf16(wide.gpu + offset, bits_gpu + offset, n);
    float *wide_gpu = hs_malloc(total * sizeof(float));
    gpu->copy_to_host(wide_gpu, wide.gpu, total * sizeof(float));
    ck_assert_msg(memcmp(wide_gpu + offset, wide.cpu + offset, n * sizeof(float)) == 0,
                  "from_bf16 n=%zu offset %zu: cuda and cpu differ", n, offset);
    free(host), free(got), free(wide_gpu);
    cpu->free(bits_cpu), gpu->free(bits_gpu);
    buf_free(&x), buf_free(&wide);
}

START_TEST(test_bf16_conversions) {
    TestRng rng = test_rng(31);
    check_bf16_conversion(&rng, (size_t)16384 * 512, 0); // a seed activation, 8 at a time
    check_bf16_conversion(&rng, 1000003, 0);             // scalar path: n not a multiple of 8
    check_bf16_conversion(&rng, 4096, 3);                // scalar path: unaligned buffers
    check_bf16_conversion(&rng, 13, 0);
}
END_TEST

START_TEST(test_elementwise_and_rows) {
    TestRng rng = test_rng(1);
    const size_t n = 1024 * 512;
    Buf a = buf_random(&rng, n, 1.0f), b = buf_random(&rng, n, 1.0f), out = buf_zeros(n);
    cpu->add(out.cpu, a.cpu, b.cpu, n);
    gpu->add(out.gpu, a.gpu, b.gpu, n);
    expect_close("add", out, 0, 1e-7);
    cpu->axpy(out.cpu, -0.37f, a.cpu, n);
    gpu->axpy(out.gpu, -0.37f, a.gpu, n);
    expect_close("axpy", out, 1e-7, 1e-6);
    cpu->scale(out.cpu, 1.7f, n);
    gpu->scale(out.gpu, 1.7f, n);
    expect_close("scale", out, 1e-7, 1e-6);
    Buf x = buf_random(&rng, n, 2.0f), y = buf_zeros(n), dx = buf_random(&rng, n, 1.0f);
    cpu->gelu_forward(y.cpu, x.cpu, n);
    gpu->gelu_forward(y.gpu, x.gpu, n);
    expect_close("gelu_forward", y, 1e-6, 1e-5);
    cpu->gelu_backward(dx.cpu, a.cpu, x.cpu, n);
    gpu->gelu_backward(dx.gpu, a.gpu, x.gpu, n);
    expect_close("gelu_backward", dx, 1e-5, 1e-5); // fast-math expf: ~1e-6 of O(1) terms

    // embedding-style gather from a table shard and the scatter-add back, with repeats
    const int V = 5000, D = 512, M = 2048, offset = 1000;
    Buf table = buf_random(&rng, (size_t)V * D, 1.0f), rows = buf_zeros((size_t)M * D);
    int32_t *idx_host = hs_malloc(M * sizeof(int32_t));
    test_fill_uniform_int(&rng, idx_host, M, offset, offset + V);
    idx_host[1] = idx_host[0]; // a repeated row: the scatter must add twice
    IBuf idx = ibuf_from_host(idx_host, M);
    cpu->gather_rows(rows.cpu, table.cpu, idx.cpu, M, D, offset);
    gpu->gather_rows(rows.gpu, table.gpu, idx.gpu, M, D, offset);
    expect_close("gather_rows", rows, 1e-30, 0);
    cpu->scatter_add_rows(table.cpu, rows.cpu, idx.cpu, M, D, offset);
    gpu->scatter_add_rows(table.gpu, rows.gpu, idx.gpu, M, D, offset);
    expect_close("scatter_add_rows", table, 1e-6, 1e-6);
    free(idx_host);
    buf_free(&a), buf_free(&b), buf_free(&out), buf_free(&x), buf_free(&y), buf_free(&dx);
    buf_free(&table), buf_free(&rows), ibuf_free(&idx);
}
END_TEST

START_TEST(test_rmsnorm) {
    TestRng rng = test_rng(2);
    const int N = 1024, H = 512;
    Buf x = buf_random(&rng, (size_t)N * H, 1.5f), w = buf_random(&rng, H, 1.0f);
    Buf out = buf_zeros((size_t)N * H), rstd = buf_zeros(N);
    cpu->rmsnorm_forward(out.cpu, rstd.cpu, x.cpu, w.cpu, N, H);
    gpu->rmsnorm_forward(out.gpu, rstd.gpu, x.gpu, w.gpu, N, H);
    expect_close("rmsnorm_forward out", out, 1e-5, 1e-5);
    expect_close("rmsnorm_forward rstd", rstd, 0, 1e-5);
    Buf dout = buf_random(&rng, (size_t)N * H, 1.0f), dx = buf_random(&rng, (size_t)N * H, 1.0f);
    Buf dw = buf_random(&rng, H, 1.0f);
    cpu->rmsnorm_backward(dx.cpu, dw.cpu, dout.cpu, x.cpu, w.cpu, rstd.cpu, N, H);
    gpu->rmsnorm_backward(dx.gpu, dw.gpu, dout.gpu, x.gpu, w.gpu, rstd.gpu, N, H);
    expect_close("rmsnorm_backward dx", dx, 1e-5, 1e-4);
    expect_close("rmsnorm_backward dw", dw, 1e-3, 1e-4);
    // dx may be NULL: dw alone
    cpu->rmsnorm_backward(NULL, dw.cpu, dout.cpu, x.cpu, w.cpu, rstd.cpu, N, H);
    gpu->rmsnorm_backward(NULL, dw.gpu, dout.gpu, x.gpu, w.gpu, rstd.gpu, N, H);
    expect_close("rmsnorm_backward dw (dx NULL)", dw, 1e-3, 1e-4);
    buf_free(&x), buf_free(&w), buf_free(&out), buf_free(&rstd), buf_free(&dout), buf_free(&dx);
    buf_free(&dw);
}
END_TEST

// ---- linear, in each matmul precision --------------------------------------------------

// The inputs of the linear test, the cpu oracle's results on them (computed once: the cpu is
// fp32 whatever the setting), and the starting values of the accumulated gradients.
typedef struct LinearCase {
    int N, I, O;
    Buf x, w, b, dout;                     // x [N, I], w [O, I], b [O], dout [N, O]
    Buf out_bias, out_bare;                // [N, O]: forward with and without the bias
    Buf dx, dw, db;                        // [N, I], [O, I], [O]: one full backward
    Buf dw_alone;                          // [O, I]: a backward with dx and db NULL
    float *dx_start, *dw_start, *db_start; // host copies of the gradients before the backward
} LinearCase;

static LinearCase linear_case_create(int N, int I, int O) {
    TestRng rng = test_rng(3);
    LinearCase c = {.N = N, .I = I, .O = O};
    c.x = buf_random(&rng, (size_t)N * I, 1.0f);
    c.w = buf_random(&rng, (size_t)O * I, 0.05f);
    c.b = buf_random(&rng, O, 1.0f);
    c.dout = buf_random(&rng, (size_t)N * O, 1.0f);
    // Garbage in the outputs: the forward overwrites them.
    c.out_bias = buf_random(&rng, (size_t)N * O, 1.0f);
    c.out_bare = buf_random(&rng, (size_t)N * O, 1.0f);
    // Random starting gradients: the backward must add to them, not overwrite them.
    c.dx = buf_random(&rng, (size_t)N * I, 1.0f);
    c.dw = buf_random(&rng, (size_t)O * I, 1.0f);
    c.db = buf_random(&rng, O, 1.0f);
    c.dx_start = test_copy_of(c.dx.cpu, c.dx.n);
    c.dw_start = test_copy_of(c.dw.cpu, c.dw.n);
    c.db_start = test_copy_of(c.db.cpu, c.db.n);
    c.dw_alone = buf_from_host(c.dw_start, c.dw.n);
    cpu->linear_forward(c.out_bias.cpu, c.x.cpu, c.w.cpu, c.b.cpu, N, I, O);
    cpu->linear_forward(c.out_bare.cpu, c.x.cpu, c.w.cpu, NULL, N, I, O);
    cpu->linear_backward(c.dx.cpu, c.dw.cpu, c.db.cpu, c.dout.cpu, c.x.cpu, c.w.cpu, N, I, O);
    cpu->linear_backward(NULL, c.dw_alone.cpu, NULL, c.dout.cpu, c.x.cpu, c.w.cpu, N, I, O);
    return c;
}

static void linear_case_free(LinearCase *c) {
    buf_free(&c->x), buf_free(&c->w), buf_free(&c->b), buf_free(&c->dout);
    buf_free(&c->out_bias), buf_free(&c->out_bare), buf_free(&c->dx), buf_free(&c->dw);
    buf_free(&c->db), buf_free(&c->dw_alone);
    free(c->dx_start), free(c->dw_start), free(c->db_start);
}

// The GPU side of every op of the case, from the same starting gradients as the cpu's.
static void linear_case_run_gpu(const LinearCase *c) {
    const int N = c->N, I = c->I, O = c->O;
    gpu->copy_from_host(c->dx.gpu, c->dx_start, c->dx.n * sizeof(float));
    gpu->copy_from_host(c->dw.gpu, c->dw_start, c->dw.n * sizeof(float));
    gpu->copy_from_host(c->db.gpu, c->db_start, c->db.n * sizeof(float));
    gpu->copy_from_host(c->dw_alone.gpu, c->dw_start, c->dw_alone.n * sizeof(float));
    gpu->linear_forward(c->out_bias.gpu, c->x.gpu, c->w.gpu, c->b.gpu, N, I, O);
    gpu->linear_forward(c->out_bare.gpu, c->x.gpu, c->w.gpu, NULL, N, I, O);
    gpu->linear_backward(c->dx.gpu, c->dw.gpu, c->db.gpu, c->dout.gpu, c->x.gpu, c->w.gpu, N, I, O);
    gpu->linear_backward(NULL, c->dw_alone.gpu, NULL, c->dout.gpu, c->x.gpu, c->w.gpu, N, I, O);
}

// ||gpu - cpu|| / ||cpu - start|| (start NULL: zeros), in double: the GPU's error relative
// to the size of what the op computed. An accumulating op is judged on its increment, so
// the random starting gradient neither dilutes the error nor hides a missing accumulation
// (that would leave an error of about ||start|| / ||increment||, far above any tolerance).
static double norm_rel_err(Buf b, const float *start) {
    float *host = hs_malloc(b.n * sizeof(float));
    gpu->copy_to_host(host, b.gpu, b.n * sizeof(float));
    double diff2 = 0.0, ref2 = 0.0;
    for (size_t i = 0; i < b.n; i++) {
        double d = (double)host[i] - b.cpu[i];
        double r = (double)b.cpu[i] - (start ? start[i] : 0.0f);
        diff2 += d * d;
        ref2 += r * r;
    }
    free(host);
    return sqrt(diff2) / (ref2 > 0.0 ? sqrt(ref2) : 1.0);
}

// The checks below count failures instead of asserting, so that every mode is measured and
// printed in one run and the backend is back in fp32 before the test reports (Check runs
// without fork here: an early assertion would leave the later tests in tf32 or bf16).

// Norm-relative error at most tol (printed either way, for the record). Returns 1 if not.
static int norm_fails(const char *op, const char *mode, const char *what, Buf b, const float *start,
                      double tol, double *err_out) {
    double err = norm_rel_err(b, start);
    printf("%s %s %-26s norm-relative error %.3g (tolerance %.3g)\n", op, mode, what, err, tol);
    if (err_out)
        *err_out = err;
    if (err <= tol)
        return 0;
    fprintf(stderr, "FAIL: %s %s %s: norm-relative error %.3g above %.3g\n", op, mode, what, err,
            tol);
    return 1;
}

// |gpu - cpu| <= atol + rtol |cpu| element by element. Returns 1 if not.
static int linear_elementwise_fails(const char *mode, const char *what, Buf b, double atol,
                                    double rtol) {
    float *host = hs_malloc(b.n * sizeof(float));
    gpu->copy_to_host(host, b.gpu, b.n * sizeof(float));
    double err = test_max_rel_err(what, host, b.cpu, b.n, atol, rtol);
    free(host);
    if (err <= 1.0)
        return 0;
    fprintf(stderr, "FAIL: linear %s %s: cuda differs from cpu by %.3g x the tolerance\n", mode,
            what, err);
    return 1;
}

// fp32: element by element, as tight as fp32 against the cpu's double accumulations allows
// (dw and db sum N = 1024 products of magnitude ~1, hence their atol).
static int check_linear_fp32(const LinearCase *c) {
    int failures = 0;
    failures += linear_elementwise_fails("fp32", "forward (bias)", c->out_bias, 1e-4, 1e-4);
    failures += linear_elementwise_fails("fp32", "forward (no bias)", c->out_bare, 1e-4, 1e-4);
    failures += linear_elementwise_fails("fp32", "backward dx", c->dx, 1e-4, 1e-4);
    failures += linear_elementwise_fails("fp32", "backward dw", c->dw, 2e-3, 1e-4);
    failures += linear_elementwise_fails("fp32", "backward db", c->db, 2e-3, 1e-4);
    failures +=
        linear_elementwise_fails("fp32", "backward dw (dx, db NULL)", c->dw_alone, 2e-3, 1e-4);
    failures += norm_fails("linear", "fp32", "forward (no bias)", c->out_bare, NULL, 1e-5, NULL);
    return failures;
}

// tf32 / bf16: the products' inputs are rounded (TF32 keeps 10 mantissa bits, unit roundoff
// 2^-11 = 4.9e-4; bf16 keeps 7, 2^-8 = 3.9e-3), the sums stay fp32. With round-to-nearest
// the errors of the I or N products are independent and the result's norm-relative error is
// about sqrt(2/3) x the unit roundoff: ~3e-4 for tf32, ~3e-3 for bf16. Tensor cores that
// read fp32 operands may truncate the dropped bits instead, which biases every product the
// same way: up to ~8e-4 (tf32) and ~6e-3 (bf16). The tolerances bound both with margin and
// still tell tf32 from bf16 when rounding to nearest. db is a column sum outside the GEMMs:
// fp32 in every mode.
static int check_linear_reduced(const LinearCase *c, const char *mode, double tol) {
    int failures = 0;
    double err = 0.0;
    failures += norm_fails("linear", mode, "forward (bias)", c->out_bias, NULL, tol, NULL);
    failures += norm_fails("linear", mode, "forward (no bias)", c->out_bare, NULL, tol, &err);
    failures += norm_fails("linear", mode, "backward dx", c->dx, c->dx_start, tol, NULL);
    failures += norm_fails("linear", mode, "backward dw", c->dw, c->dw_start, tol, NULL);
    failures += norm_fails("linear", mode, "backward dw (dx, db NULL)", c->dw_alone, c->dw_start,
                           tol, NULL);
    failures += linear_elementwise_fails(mode, "backward db", c->db, 2e-3, 1e-4);
    // fp32 lands near 1e-7; an error this small means the setting never reached cuBLAS.
    if (err <= 1e-5) {
        fprintf(stderr, "FAIL: linear %s: error %.3g is fp32's: the setting had no effect\n", mode,
                err);
        failures++;
    }
    return failures;
}

START_TEST(test_linear) {
    LinearCase c = linear_case_create(1024, 512, 1024);
    // fp32 twice: first as the default, last to prove that setting it back restores it.
    const MatmulPrecision modes[] = {MATMUL_FP32, MATMUL_TF32, MATMUL_BF16, MATMUL_FP32};
    int failures = 0;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        gpu->set_matmul_precision(modes[i]);
        cpu->set_matmul_precision(modes[i]); // accepted and ignored: the oracle stays fp32
        linear_case_run_gpu(&c);
        if (modes[i] == MATMUL_FP32)
            failures += check_linear_fp32(&c);
        else if (modes[i] == MATMUL_TF32)
            failures += check_linear_reduced(&c, "tf32", 2e-3);
        else
            failures += check_linear_reduced(&c, "bf16", 1e-2);
    }
    gpu->set_matmul_precision(MATMUL_FP32); // the loop ends in fp32; the later tests need it
    linear_case_free(&c);
    ck_assert_msg(failures == 0, "linear: %d check(s) failed (see above)", failures);
}
END_TEST

// One conv shape, forward and backward, against the cpu.
static void check_conv(TestRng *rng, int B, int T, int H, int Kc) {
    const size_t n = (size_t)B * T * H;
    Buf x = buf_random(rng, n, 1.0f), w = buf_random(rng, (size_t)H * Kc, 0.5f);
    Buf bias = buf_random(rng, H, 1.0f), out = buf_zeros(n);
    cpu->conv_forward(out.cpu, x.cpu, w.cpu, bias.cpu, B, T, H, Kc);
    gpu->conv_forward(out.gpu, x.gpu, w.gpu, bias.gpu, B, T, H, Kc);
    expect_close("conv_forward", out, 1e-5, 1e-5);
    Buf dout = buf_random(rng, n, 1.0f), dx = buf_random(rng, n, 1.0f);
    Buf dw = buf_random(rng, (size_t)H * Kc, 1.0f), dbias = buf_random(rng, H, 1.0f);
    cpu->conv_backward(dx.cpu, dw.cpu, dbias.cpu, dout.cpu, x.cpu, w.cpu, B, T, H, Kc);
    gpu->conv_backward(dx.gpu, dw.gpu, dbias.gpu, dout.gpu, x.gpu, w.gpu, B, T, H, Kc);
    expect_close("conv_backward dx", dx, 1e-5, 1e-5);
    expect_close("conv_backward dw", dw, 1e-3, 1e-4);
    expect_close("conv_backward dbias", dbias, 1e-3, 1e-4);
    buf_free(&x), buf_free(&w), buf_free(&bias), buf_free(&out), buf_free(&dout), buf_free(&dx);
    buf_free(&dw), buf_free(&dbias);
}

START_TEST(test_conv) {
    TestRng rng = test_rng(4);
    check_conv(&rng, 2, 512, 512, 4); // float4 channels
    check_conv(&rng, 3, 37, 30, 3);   // H not a multiple of 4: one channel a thread
    check_conv(&rng, 2, 5, 64, 8);    // more taps than some sequences' positions
}
END_TEST

START_TEST(test_router) {
    TestRng rng = test_rng(5);
    const int B = 4, T = 4096, n_sel = 820;
    const uint64_t seed = 0x123456789ABCDEFull;
    Buf noise = buf_zeros((size_t)B * T);
    cpu->gumbel_noise(noise.cpu, seed, 17, 3, 5, B, T);
    gpu->gumbel_noise(noise.gpu, seed, 17, 3, 5, B, T);
    // same Philox bits, same double-precision logs: equal up to the last bit of a log
    expect_close("gumbel_noise", noise, 1e-6, 1e-6);

    Buf z = buf_random(&rng, (size_t)B * T, 1.0f);
    cpu->add(z.cpu, z.cpu, noise.cpu, (size_t)B * T);
    gpu->add(z.gpu, z.gpu, noise.gpu, (size_t)B * T);
    IBuf sel = ibuf_zeros((size_t)B * n_sel);
    cpu->select_topn(sel.cpu, z.cpu, B, T, n_sel);
    gpu->select_topn(sel.gpu, z.gpu, B, T, n_sel);
    expect_equal("select_topn", sel);

    // ties: equal values go to the lower position; odd T (padding of the sort)
    const int T_odd = 1000, n_odd = 333;
    float *ties = hs_malloc(2 * T_odd * sizeof(float));
    for (int i = 0; i < 2 * T_odd; i++)
        ties[i] = (float)((i * 7) % 5); // five distinct values, many ties
    Buf z_ties = buf_from_host(ties, 2 * T_odd);
    IBuf sel_ties = ibuf_zeros(2 * n_odd);
    cpu->select_topn(sel_ties.cpu, z_ties.cpu, 2, T_odd, n_odd);
    gpu->select_topn(sel_ties.gpu, z_ties.gpu, 2, T_odd, n_odd);
    expect_equal("select_topn (ties, odd T)", sel_ties);

    // The longest sequence the kernel takes, one query and every position, and the values a
    // radix select must order right: -0 and +0 equal, infinities, NaN below every number,
    // and many values sharing their top bits (differing only in the lowest byte).
    const int T_max = gpu->max_seq_len;
    float *edge = hs_malloc((size_t)T_max * sizeof(float));
    for (int t = 0; t < T_max; t++) {
        switch (t % 7) {
        case 0:
            edge[t] = (t & 1) ? -0.0f : 0.0f;
            break;
        case 1:
            edge[t] = (t % 3 == 0) ? NAN : 1.0f;
            break;
        case 2:
            edge[t] = (t % 5 == 0) ? INFINITY : -INFINITY;
            break;
        default: {
            uint32_t bits = 0x3F800000u + (uint32_t)(t % 256); // 1 + a few ulps
            memcpy(&edge[t], &bits, sizeof(bits));
        }
        }
    }
    Buf z_edge = buf_from_host(edge, T_max);
    const int n_edge[] = {1, 2, T_max / 5, T_max / 2, T_max - 1, T_max};
    for (size_t i = 0; i < sizeof(n_edge) / sizeof(n_edge[0]); i++) {
        IBuf sel_edge = ibuf_zeros((size_t)n_edge[i]);
        cpu->select_topn(sel_edge.cpu, z_edge.cpu, 1, T_max, n_edge[i]);
        gpu->select_topn(sel_edge.gpu, z_edge.gpu, 1, T_max, n_edge[i]);
        char what[96];
        snprintf(what, sizeof(what), "select_topn (T %d, n_sel %d, zeros, inf, NaN, near ties)",
                 T_max, n_edge[i]);
        expect_equal(what, sel_edge);
        ibuf_free(&sel_edge);
    }
    buf_free(&z_edge);
    free(edge);

    const int N = B * T;
    IBuf thr = ibuf_zeros(N), count = ibuf_zeros(1);
    cpu->select_threshold(thr.cpu, count.cpu, z.cpu, N);
    gpu->select_threshold(thr.gpu, count.gpu, z.gpu, N);
    expect_equal("select_threshold count", count);
    int32_t chosen = count.cpu[0];
    ck_assert_int_gt(chosen, 0);
    IBuf thr_head = {thr.cpu, thr.gpu, (size_t)chosen};
    expect_equal("select_threshold indices", thr_head);

    // Positions of the top-n selection, as the model computes the query positions.
    IBuf qpos = ibuf_zeros((size_t)B * n_sel);
    cpu->token_positions(qpos.cpu, sel.cpu, B * n_sel, T);
    gpu->token_positions(qpos.gpu, sel.gpu, B * n_sel, T);
    expect_equal("token_positions", qpos);
    ibuf_free(&qpos);
    free(ties);
    buf_free(&noise), buf_free(&z), buf_free(&z_ties);
    ibuf_free(&sel), ibuf_free(&sel_ties), ibuf_free(&thr), ibuf_free(&count);
}
END_TEST

START_TEST(test_rope) {
    TestRng rng = test_rng(6);
    const int M = 1024, nheads = 8, hd = 64;
    const size_t n = (size_t)M * nheads * hd;
    int32_t *pos_host = hs_malloc(M * sizeof(int32_t));
    test_fill_uniform_int(&rng, pos_host, M, 0, 4096);
    IBuf pos = ibuf_from_host(pos_host, M);
    Buf x = buf_random(&rng, n, 1.0f);
    cpu->rope_forward(x.cpu, pos.cpu, M, nheads, hd, 10000.0f);
    gpu->rope_forward(x.gpu, pos.gpu, M, nheads, hd, 10000.0f);
    expect_close("rope_forward", x, 1e-6, 1e-5);
    cpu->rope_backward(x.cpu, pos.cpu, M, nheads, hd, 10000.0f);
    gpu->rope_backward(x.gpu, pos.gpu, M, nheads, hd, 10000.0f);
    expect_close("rope_backward", x, 1e-6, 1e-5);
    free(pos_host);
    buf_free(&x), ibuf_free(&pos);
}
END_TEST

// One attention case on both backends: random q, k, v, dout and starting gradients dq, dk,
// dv (the backward accumulates), qpos random sorted (or every position: attn=dense).
typedef struct AttnCase {
    int B, T, Mq, nh, nkv, hd;
    IBuf qpos;
    Buf q, k, v, o, lse, dout, dq, dk, dv;
} AttnCase;

static AttnCase attn_case_create(uint64_t seed, int B, int T, int Mq, int nh, int nkv, int hd,
                                 int dense) {
    TestRng rng = test_rng(seed);
    AttnCase c = {.B = B, .T = T, .Mq = Mq, .nh = nh, .nkv = nkv, .hd = hd};
    const size_t q_n = (size_t)B * Mq * nh * hd, kv_n = (size_t)B * T * nkv * hd;
    int32_t *qpos_host = hs_malloc((size_t)B * Mq * sizeof(int32_t));
    if (dense)
        for (int i = 0; i < B * Mq; i++)
            qpos_host[i] = i % T;
    else
        random_sorted_positions(&rng, qpos_host, B, T, Mq);
    c.qpos = ibuf_from_host(qpos_host, (size_t)B * Mq);
    free(qpos_host);
    c.q = buf_random(&rng, q_n, 1.0f), c.k = buf_random(&rng, kv_n, 1.0f);
    c.v = buf_random(&rng, kv_n, 1.0f);
    c.o = buf_zeros(q_n), c.lse = buf_zeros((size_t)B * Mq * nh);
    c.dout = buf_random(&rng, q_n, 1.0f), c.dq = buf_random(&rng, q_n, 1.0f);
    c.dk = buf_random(&rng, kv_n, 1.0f), c.dv = buf_random(&rng, kv_n, 1.0f);
    return c;
}

static void attn_case_forward(AttnCase *c) {
    cpu->attention_forward(c->o.cpu, c->lse.cpu, c->q.cpu, c->k.cpu, c->v.cpu, c->qpos.cpu, c->B,
                           c->T, c->Mq, c->nh, c->nkv, c->hd);
    gpu->attention_forward(c->o.gpu, c->lse.gpu, c->q.gpu, c->k.gpu, c->v.gpu, c->qpos.gpu, c->B,
                           c->T, c->Mq, c->nh, c->nkv, c->hd);
}

static void attn_case_backward(AttnCase *c) {
    cpu->attention_backward(c->dq.cpu, c->dk.cpu, c->dv.cpu, c->dout.cpu, c->q.cpu, c->k.cpu,
                            c->v.cpu, c->o.cpu, c->lse.cpu, c->qpos.cpu, c->B, c->T, c->Mq, c->nh,
                            c->nkv, c->hd);
    gpu->attention_backward(c->dq.gpu, c->dk.gpu, c->dv.gpu, c->dout.gpu, c->q.gpu, c->k.gpu,
                            c->v.gpu, c->o.gpu, c->lse.gpu, c->qpos.gpu, c->B, c->T, c->Mq, c->nh,
                            c->nkv, c->hd);
}

static void attn_case_free(AttnCase *c) {
    ibuf_free(&c->qpos), buf_free(&c->q), buf_free(&c->k), buf_free(&c->v), buf_free(&c->o);
    buf_free(&c->lse), buf_free(&c->dout), buf_free(&c->dq), buf_free(&c->dk), buf_free(&c->dv);
}

// fp32 mode: the fp32 kernels, element by element against the cpu.
static void check_attention(uint64_t seed, int B, int T, int Mq, int nh, int nkv, int hd,
                            int dense) {
    AttnCase c = attn_case_create(seed, B, T, Mq, nh, nkv, hd, dense);
    attn_case_forward(&c);
    expect_close("attention_forward o", c.o, 2e-5, 1e-4);
    expect_close("attention_forward lse", c.lse, 2e-5, 1e-5);
    attn_case_backward(&c);
    expect_close("attention_backward dq", c.dq, 1e-4, 1e-4);
    expect_close("attention_backward dk", c.dk, 1e-4, 1e-4);
    expect_close("attention_backward dv", c.dv, 1e-4, 1e-4);
    attn_case_free(&c);
}

// bf16 mode: the tensor-core kernels (kernels/cuda/cuda_attention_tc.cu). bf16 products
// with fp32 softmax and accumulation, judged by norm-relative error against the cpu oracle
// (the gradients, which accumulate, on their increments). Expected a few 1e-3 (inputs
// rounded to 8 bits of mantissa); the tolerances leave room for the softmax's amplification.
// Also: an error of fp32 size means the bf16 kernels never ran, and two runs must agree bit
// for bit (no atomics in those kernels).
static int check_attention_bf16(uint64_t seed, int B, int T, int Mq, int nh, int nkv, int hd,
                                int dense) {
    AttnCase c = attn_case_create(seed, B, T, Mq, nh, nkv, hd, dense);
    const size_t q_n = c.q.n;
    float *dq_start = test_copy_of(c.dq.cpu, q_n), *dk_start = test_copy_of(c.dk.cpu, c.dk.n);
    float *dv_start = test_copy_of(c.dv.cpu, c.dv.n);
    char mode[64];
    snprintf(mode, sizeof(mode), "bf16 B%d T%d Mq%d nh%d nkv%d hd%d", B, T, Mq, nh, nkv, hd);

    gpu->set_matmul_precision(MATMUL_BF16);
    attn_case_forward(&c);
    float *o_first = hs_malloc(q_n * sizeof(float));
    gpu->copy_to_host(o_first, c.o.gpu, q_n * sizeof(float));
    int failures = 0;
    double o_err = 0.0;
    failures += norm_fails("attention", mode, "forward o", c.o, NULL, 1e-2, &o_err);
    failures += norm_fails("attention", mode, "forward lse", c.lse, NULL, 1e-2, NULL);
    attn_case_backward(&c);
    failures += norm_fails("attention", mode, "backward dq", c.dq, dq_start, 3e-2, NULL);
    failures += norm_fails("attention", mode, "backward dk", c.dk, dk_start, 3e-2, NULL);
    failures += norm_fails("attention", mode, "backward dv", c.dv, dv_start, 3e-2, NULL);
    if (o_err <= 1e-5) {
        fprintf(stderr, "FAIL: attention %s: error %.3g is fp32's: the bf16 kernels did not run\n",
                mode, o_err);
        failures++;
    }
    // the forward again from the same inputs must give the same bits
    gpu->attention_forward(c.o.gpu, c.lse.gpu, c.q.gpu, c.k.gpu, c.v.gpu, c.qpos.gpu, B, T, Mq, nh,
                           nkv, hd);
    float *o_again = hs_malloc(q_n * sizeof(float));
    gpu->copy_to_host(o_again, c.o.gpu, q_n * sizeof(float));
    if (memcmp(o_first, o_again, q_n * sizeof(float)) != 0) {
        fprintf(stderr, "FAIL: attention %s: a second forward gave other bits\n", mode);
        failures++;
    }
    gpu->set_matmul_precision(MATMUL_FP32);
    free(dq_start), free(dk_start), free(dv_start), free(o_first), free(o_again);
    attn_case_free(&c);
    return failures;
}

START_TEST(test_attention_bf16_tensor_cores) {
    int failures = 0;
    failures += check_attention_bf16(11, 2, 1024, 205, 8, 2, 64, 0); // seed-like: GQA group 4
    failures += check_attention_bf16(12, 1, 300, 300, 8, 2, 64, 1);  // attn=dense, T % 64 != 0
    failures += check_attention_bf16(13, 3, 16, 5, 4, 2, 8, 0);      // the tiny model: hd 8
    failures += check_attention_bf16(14, 1, 257, 40, 6, 6, 128, 0);  // MHA, hd 128, odd T
    failures += check_attention_bf16(15, 2, 200, 37, 6, 2, 40, 0);   // group 3 (idle rows), hd 40
    failures += check_attention_bf16(16, 1, 130, 9, 8, 1, 30, 0);    // group 8; hd 30: scalar loads
    ck_assert_msg(failures == 0, "attention bf16: %d check(s) failed (see above)", failures);
}
END_TEST

START_TEST(test_attention_sparse_queries) {
    check_attention(7, 2, 1024, 205, 8, 2, 64, 0);
}
END_TEST

START_TEST(test_attention_dense_and_small_heads) {
    check_attention(8, 2, 300, 300, 8, 2, 64, 1);  // attn=dense: every token a query
    check_attention(9, 3, 16, 5, 4, 2, 8, 0);      // the tiny model: hd 8
    check_attention(10, 1, 257, 40, 6, 6, 128, 0); // MHA, hd 128, odd T
}
END_TEST

START_TEST(test_gate) {
    TestRng rng = test_rng(11);
    const int B = 2, T = 1024, M = 205, H = 512, N = B * T;
    int32_t *qpos_host = hs_malloc((size_t)B * M * sizeof(int32_t));
    random_sorted_positions(&rng, qpos_host, B, T, M);
    for (int i = 0; i < B * M; i++)
        qpos_host[i] += (i / M) * T; // flat token indices
    IBuf idx = ibuf_from_host(qpos_host, (size_t)B * M);
    Buf h = buf_random(&rng, (size_t)N * H, 1.0f), y = buf_random(&rng, (size_t)B * M * H, 1.0f);
    Buf r = buf_random(&rng, N, 2.0f);
    cpu->gated_scatter_add(h.cpu, y.cpu, r.cpu, idx.cpu, B * M, H);
    gpu->gated_scatter_add(h.gpu, y.gpu, r.gpu, idx.gpu, B * M, H);
    expect_close("gated_scatter_add", h, 1e-6, 1e-5);
    cpu->gated_scatter_add(h.cpu, y.cpu, NULL, idx.cpu, B * M, H);
    gpu->gated_scatter_add(h.gpu, y.gpu, NULL, idx.gpu, B * M, H);
    expect_close("gated_scatter_add (gate 1)", h, 1e-6, 1e-5);
    Buf dy = buf_random(&rng, (size_t)B * M * H, 1.0f), dr = buf_random(&rng, N, 1.0f);
    cpu->gated_scatter_add_backward(dy.cpu, dr.cpu, h.cpu, y.cpu, r.cpu, idx.cpu, B * M, H);
    gpu->gated_scatter_add_backward(dy.gpu, dr.gpu, h.gpu, y.gpu, r.gpu, idx.gpu, B * M, H);
    expect_close("gated_scatter_add_backward dy", dy, 1e-6, 1e-5);
    expect_close("gated_scatter_add_backward dr", dr, 1e-4, 1e-4);
    free(qpos_host);
    ibuf_free(&idx), buf_free(&h), buf_free(&y), buf_free(&r), buf_free(&dy), buf_free(&dr);
}
END_TEST

// ---- slot_topk: the GPU scores in fp32 (a fixed fmaf chain), the cpu oracle in double, so
// near-ties (scores within fp32 rounding) may be ordered differently. Where no near-ties can
// occur (integer-valued inputs: every score is an exact integer times 1/sqrt(R), equal or
// far apart) the two must agree exactly, exact ties included (lower slot first).

// |a - b| within the slot_topk tolerance (equal values, -inf padding included, always are).
static int topk_scores_close(float a, float b) {
    return a == b || fabs((double)a - (double)b) <= 1e-6 + 1e-5 * fabs((double)b);
}

// The score the cpu oracle gives one (token, slot): double accumulation, as cpu_slot_topk.
static float oracle_score(const float *p_row, const float *key, int R) {
    double dot = 0.0;
    for (int r = 0; r < R; r++)
        dot += (double)p_row[r] * key[r];
    return (float)(dot * (1.0 / sqrt((double)R)));
}

// The GPU lists (got_s, got_i [N, K], host) must be a valid top-K of p [N, R] against keys
// [rows, R] (global slots from row_offset) up to rounding, next to the cpu's (want_s, want_i):
// scores close rank by rank; each chosen slot in the shard, its oracle score close to the
// cpu's score at the same rank; no slot twice; sorted (descending, ties: lower slot first);
// padding (-inf, -1) exactly where the cpu pads.
static void expect_valid_topk(const char *what, const float *got_s, const int32_t *got_i,
                              const float *want_s, const int32_t *want_i, const float *p,
                              const float *keys, int N, int R, int rows, int row_offset, int K) {
    size_t failures = 0;
    for (int n = 0; n < N && failures < 5; n++) {
        const float *gs = got_s + (size_t)n * K, *ws = want_s + (size_t)n * K; // [K]
        const int32_t *gi = got_i + (size_t)n * K, *wi = want_i + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            const char *problem = NULL;
            if (!topk_scores_close(gs[k], ws[k]))
                problem = "score differs from the cpu's at this rank";
            else if ((gi[k] == -1) != (wi[k] == -1))
                problem = "padding where the other backend has a slot";
            else if (gi[k] != -1 && (gi[k] < row_offset || gi[k] >= row_offset + rows))
                problem = "slot outside the shard";
            else if (gi[k] != -1 &&
                     (!topk_scores_close(oracle_score(p + (size_t)n * R,
                                                      keys + (size_t)(gi[k] - row_offset) * R, R),
                                         ws[k]) ||
                      !topk_scores_close(gs[k],
                                         oracle_score(p + (size_t)n * R,
                                                      keys + (size_t)(gi[k] - row_offset) * R, R))))
                problem = "chosen slot's oracle score is not the cpu's score at this rank";
            else if (k > 0 && !(gi[k - 1] == -1 && gi[k] == -1) && // padding repeats
                     !(gs[k - 1] > gs[k] ||
                       (gs[k - 1] == gs[k] && (uint32_t)gi[k - 1] < (uint32_t)gi[k])))
                problem = "not sorted (descending score, then ascending slot)";
            for (int j = 0; j < k && !problem; j++)
                if (gi[j] == gi[k] && gi[k] != -1)
                    problem = "slot chosen twice";
            if (problem && failures++ == 0)
                fprintf(stderr, "%s: token %d rank %d: %s (cuda %.9g slot %d, cpu %.9g slot %d)\n",
                        what, n, k, problem, gs[k], gi[k], ws[k], wi[k]);
        }
    }
    ck_assert_msg(failures == 0, "%s: the cuda top-K is not a valid top-K of the cpu oracle", what);
}

// Run slot_topk on both backends and check the GPU's lists against the cpu's: valid up to
// rounding, or (exact) identical slots and close scores.
static void check_slot_topk(const char *what, Buf p, Buf keys, int N, int R, int rows,
                            int row_offset, int K, int exact) {
    Buf top_s = buf_zeros((size_t)N * K);
    IBuf top_i = ibuf_zeros((size_t)N * K);
    cpu->slot_topk(top_s.cpu, top_i.cpu, p.cpu, keys.cpu, N, R, rows, row_offset, K);
    gpu->slot_topk(top_s.gpu, top_i.gpu, p.gpu, keys.gpu, N, R, rows, row_offset, K);
    float *got_s = hs_malloc((size_t)N * K * sizeof(float));
    int32_t *got_i = hs_malloc((size_t)N * K * sizeof(int32_t));
    gpu->copy_to_host(got_s, top_s.gpu, (size_t)N * K * sizeof(float));
    gpu->copy_to_host(got_i, top_i.gpu, (size_t)N * K * sizeof(int32_t));
    expect_valid_topk(what, got_s, got_i, top_s.cpu, top_i.cpu, p.cpu, keys.cpu, N, R, rows,
                      row_offset, K);
    if (exact)
        expect_equal(what, top_i);
    free(got_s);
    free(got_i);
    buf_free(&top_s), ibuf_free(&top_i);
}

// Integers in [-3, 3] as floats: dot products are exact in fp32 and in double.
static Buf buf_small_integers(TestRng *rng, size_t n) {
    int32_t *ints = hs_malloc(n * sizeof(int32_t));
    float *host = hs_malloc(n * sizeof(float));
    test_fill_uniform_int(rng, ints, n, -3, 4);
    for (size_t i = 0; i < n; i++)
        host[i] = (float)ints[i];
    Buf b = buf_from_host(host, n);
    free(ints);
    free(host);
    return b;
}

START_TEST(test_slot_topk_and_merge) {
    TestRng rng = test_rng(12);
    const int N = 1024, R = 32, rows = 65536, K = 8, P = 4;
    Buf p = buf_random(&rng, (size_t)N * R, 1.0f);
    // P shards of one global table; shard j holds rows [j*rows, (j+1)*rows)
    Buf cand_s = buf_zeros((size_t)P * N * K);
    IBuf cand_i = ibuf_zeros((size_t)P * N * K);
    float *got_s = hs_malloc((size_t)P * N * K * sizeof(float));
    int32_t *got_i = hs_malloc((size_t)P * N * K * sizeof(int32_t));
    for (int part = 0; part < P; part++) {
        Buf keys = buf_random(&rng, (size_t)rows * R, 0.02f);
        size_t at = (size_t)part * N * K;
        cpu->slot_topk(cand_s.cpu + at, cand_i.cpu + at, p.cpu, keys.cpu, N, R, rows, part * rows,
                       K);
        gpu->slot_topk(cand_s.gpu + at, cand_i.gpu + at, p.gpu, keys.gpu, N, R, rows, part * rows,
                       K);
        gpu->copy_to_host(got_s + at, cand_s.gpu + at, (size_t)N * K * sizeof(float));
        gpu->copy_to_host(got_i + at, cand_i.gpu + at, (size_t)N * K * sizeof(int32_t));
        expect_valid_topk("slot_topk (random, seed shapes)", got_s + at, got_i + at,
                          cand_s.cpu + at, cand_i.cpu + at, p.cpu, keys.cpu, N, R, rows,
                          part * rows, K);
        buf_free(&keys);
    }
    // The merge is exact: both backends merge the same (the GPU's) candidate lists.
    for (size_t i = 0; i < (size_t)P * N * K; i++) {
        cand_s.cpu[i] = got_s[i];
        cand_i.cpu[i] = got_i[i];
    }
    Buf top_s = buf_zeros((size_t)N * K);
    IBuf top_i = ibuf_zeros((size_t)N * K);
    cpu->slot_topk_merge(top_s.cpu, top_i.cpu, cand_s.cpu, cand_i.cpu, P, N, K);
    gpu->slot_topk_merge(top_s.gpu, top_i.gpu, cand_s.gpu, cand_i.gpu, P, N, K);
    expect_close("slot_topk_merge scores", top_s, 1e-30, 0);
    expect_equal("slot_topk_merge slot ids", top_i);
    free(got_s);
    free(got_i);
    buf_free(&p), buf_free(&cand_s), ibuf_free(&cand_i), buf_free(&top_s), ibuf_free(&top_i);
}
END_TEST

// Every list length and pointer width the kernel instantiates, token counts off the block
// size, shards off the tile size, row offsets, and shards smaller than K (padding). Each
// shape twice: random inputs (a valid top-K up to rounding) and integer inputs (no near
// ties, many exact ties: the same slots exactly).
static void run_slot_topk_shapes(void) {
    struct {
        int N, R, rows, row_offset, K;
    } cases[] = {
        {300, 32, 5000, 777, 8}, // seed widths; tail tokens, a partial last tile
        {130, 8, 3001, 40, 3},   // tiny-test width; K not a power of two
        {65, 5, 1100, 0, 1},     // R not a multiple of 4: 4-byte copies, padded columns
        {129, 20, 2049, 9, 16},  //
        {70, 16, 999, 0, 2},     //
        {100, 64, 700, 3, 32},   // the widest pointer, the longest list
        {64, 48, 513, 0, 5},     //
        {200, 32, 1500, 1, 32},  //
        {77, 32, 5, 40, 8},      // a shard smaller than K: padding (-inf, -1)
        {33, 32, 0, 0, 4},       // an empty shard: all padding
    };
    TestRng rng = test_rng(21);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int N = cases[c].N, R = cases[c].R, rows = cases[c].rows, K = cases[c].K;
        char what[96];
        snprintf(what, sizeof(what), "slot_topk N %d R %d rows %d K %d", N, R, rows, K);
        Buf p = buf_random(&rng, (size_t)N * R, 1.0f);
        Buf keys = buf_random(&rng, (size_t)(rows > 0 ? rows : 1) * R, 0.02f);
        check_slot_topk(what, p, keys, N, R, rows, cases[c].row_offset, K, 0);
        buf_free(&p), buf_free(&keys);
        p = buf_small_integers(&rng, (size_t)N * R);
        keys = buf_small_integers(&rng, (size_t)(rows > 0 ? rows : 1) * R);
        snprintf(what, sizeof(what), "slot_topk integers N %d R %d rows %d K %d", N, R, rows, K);
        check_slot_topk(what, p, keys, N, R, rows, cases[c].row_offset, K, 1);
        buf_free(&p), buf_free(&keys);
    }

    // Every key the same: all scores of a token tie exactly (the same fp32 chain on the
    // GPU, the same double sum on the cpu), across tiles and the threads that share a token,
    // so the list must be the K lowest slots in order.
    const int N = 100, R = 8, rows = 3000, row_offset = 500, K = 8;
    float *keys_host = hs_malloc((size_t)rows * R * sizeof(float));
    test_fill_normal(&rng, keys_host, R, 1.0f);
    for (int i = 1; i < rows; i++)
        for (int r = 0; r < R; r++)
            keys_host[(size_t)i * R + r] = keys_host[r];
    Buf keys = buf_from_host(keys_host, (size_t)rows * R);
    Buf p = buf_random(&rng, (size_t)N * R, 1.0f);
    check_slot_topk("slot_topk equal keys", p, keys, N, R, rows, row_offset, K, 1);
    int32_t *got_i = hs_malloc((size_t)N * K * sizeof(int32_t));
    Buf top_s = buf_zeros((size_t)N * K);
    IBuf top_i = ibuf_zeros((size_t)N * K);
    gpu->slot_topk(top_s.gpu, top_i.gpu, p.gpu, keys.gpu, N, R, rows, row_offset, K);
    gpu->copy_to_host(got_i, top_i.gpu, (size_t)N * K * sizeof(int32_t));
    int misplaced = 0;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            misplaced += got_i[(size_t)n * K + k] != row_offset + k;
    ck_assert_msg(misplaced == 0,
                  "slot_topk equal keys: %d of %d slots are not the lowest, in order", misplaced,
                  N * K);
    free(got_i);
    free(keys_host);
    buf_free(&p), buf_free(&keys), buf_free(&top_s), ibuf_free(&top_i);
}

START_TEST(test_slot_topk_shapes) {
    run_slot_topk_shapes();
}
END_TEST

// The seed shape of one layer (N 16384 tokens, 65536 keys, R 32, K 8): time it (the number
// goes to stderr for the GPU run's log) and check the first and last 64 tokens.
static void run_slot_topk_seed_shape(const char *mode) {
    TestRng rng = test_rng(31);
    const int N = 16384, R = 32, rows = 65536, K = 8, runs = 10, checked = 64;
    Buf p = buf_random(&rng, (size_t)N * R, 1.0f);
    Buf keys = buf_random(&rng, (size_t)rows * R, 0.02f);
    float *top_s = gpu->alloc((size_t)N * K * sizeof(float));
    int32_t *top_i = gpu->alloc((size_t)N * K * sizeof(int32_t));
    gpu->slot_topk(top_s, top_i, p.gpu, keys.gpu, N, R, rows, 0, K); // warm-up
    void *start = gpu->timer_create(), *end = gpu->timer_create();
    gpu->timer_record(start);
    for (int run = 0; run < runs; run++)
        gpu->slot_topk(top_s, top_i, p.gpu, keys.gpu, N, R, rows, 0, K);
    gpu->timer_record(end);
    double ms = gpu->timer_elapsed_ms(start, end) / runs;
    double scores = (double)N * rows;
    fprintf(stderr,
            "slot_topk seed shape, %s (N %d, rows %d, R %d, K %d): %.3f ms per call, %.1f G "
            "token-key scores/s, %.2f TFLOP/s (2 N rows R)\n",
            mode, N, rows, R, K, ms, scores / ms * 1e-6, 2.0 * scores * R / ms * 1e-9);
    gpu->timer_destroy(start);
    gpu->timer_destroy(end);

    float *got_s = hs_malloc((size_t)N * K * sizeof(float));
    int32_t *got_i = hs_malloc((size_t)N * K * sizeof(int32_t));
    gpu->copy_to_host(got_s, top_s, (size_t)N * K * sizeof(float));
    gpu->copy_to_host(got_i, top_i, (size_t)N * K * sizeof(int32_t));
    float *want_s = hs_malloc((size_t)checked * K * sizeof(float));
    int32_t *want_i = hs_malloc((size_t)checked * K * sizeof(int32_t));
    for (int first = 0; first < N; first += N - checked) {
        const float *p_part = p.cpu + (size_t)first * R; // [checked, R]
        cpu->slot_topk(want_s, want_i, p_part, keys.cpu, checked, R, rows, 0, K);
        expect_valid_topk("slot_topk seed shape", got_s + (size_t)first * K,
                          got_i + (size_t)first * K, want_s, want_i, p_part, keys.cpu, checked, R,
                          rows, 0, K);
    }
    free(got_s), free(got_i), free(want_s), free(want_i);
    gpu->free(top_s);
    gpu->free(top_i);
    buf_free(&p), buf_free(&keys);
}

START_TEST(test_slot_topk_seed_shape_timing) {
    run_slot_topk_seed_shape("fp32");
}
END_TEST

// bf16 mode: the tensor-core search (kernels/cuda/cuda_slot_topk_tc.cu) under the same
// checks: its scores are the fp32 chain's, its slots a valid top-K of the oracle, integer
// inputs (exact in bf16) and equal keys give exactly the cpu's slots. Registered last: a
// failed assertion leaves the backend in bf16 mode.
START_TEST(test_slot_topk_bf16_tensor_cores) {
    gpu->set_matmul_precision(MATMUL_BF16);
    run_slot_topk_shapes();
    run_slot_topk_seed_shape("bf16 tensor cores");
    gpu->set_matmul_precision(MATMUL_FP32);
}
END_TEST

// The value row gradients of slot_read_backward, dvalues[idx[n*K + k]] += w_nk dy_n, against
// the cpu's: both add the same fp32 products into a row, in another order (the cuda kernel's
// atomics), so each element may differ by the rounding of m additions, m the adds into its
// row: |cuda - cpu| <= 2 m 2^-24 (|start| + sum |w dy|) + 1e-6 |cpu|. A missed or doubled
// product is far outside that. idx [N, K], w [N, K], dy [N, H], start [rows, H] (host).
static void expect_row_grads_close(Buf dvalues, const int32_t *idx, const float *w, const float *dy,
                                   const float *start, int N, int K, int H) {
    const size_t rows = dvalues.n / H;
    double *abs_sum = hs_calloc(dvalues.n, sizeof(double)); // [rows, H]
    int *adds = hs_calloc(rows, sizeof(int));               // [rows]
    for (size_t e = 0; e < (size_t)N * K; e++) {
        adds[idx[e]]++;
        for (int j = 0; j < H; j++)
            abs_sum[(size_t)idx[e] * H + j] += fabs((double)w[e] * dy[e / K * H + j]);
    }
    float *got = hs_malloc(dvalues.n * sizeof(float));
    gpu->copy_to_host(got, dvalues.gpu, dvalues.n * sizeof(float));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < dvalues.n; i++) {
        const double want = dvalues.cpu[i];
        const double tol =
            2.0 * adds[i / H] * 0x1p-24 * (fabs(start[i]) + abs_sum[i]) + 1e-6 * fabs(want);
        if (!(fabs(got[i] - want) <= tol) && bad++ == 0)
            first = i;
    }
    if (bad)
        fprintf(stderr,
                "slot_read_backward dvalues: %zu of %zu outside the bound; first at %zu: "
                "cuda %.9g cpu %.9g\n",
                bad, dvalues.n, first, got[first], dvalues.cpu[first]);
    free(abs_sum), free(adds), free(got);
    ck_assert_msg(bad == 0, "slot_read_backward dvalues: cuda differs from cpu");
}

// slot_read_forward and slot_read_backward at one shape, N tokens reading K rows each of a
// table of `rows` (top-K-like: distinct within a token, shared across tokens). The cuda
// kernels take float4 loads when H % 4 == 0 (else single floats) and load the value rows in
// groups of 1, 2, 4 or 8 (K rounded up; groups of 8 past that), so the shapes below cover
// each path; few rows make many tokens add into one gradient row at once (the atomics).
static void check_slot_read(uint64_t seed, int N, int K, int H, int rows) {
    TestRng rng = test_rng(seed);
    const float scale = 0.001f / N;
    char what[96];
    snprintf(what, sizeof(what), "slot_read N=%d K=%d H=%d rows=%d", N, K, H, rows);
    fprintf(stderr, "%s\n", what);
    Buf h = buf_random(&rng, (size_t)N * H, 1.0f), top_s = buf_random(&rng, (size_t)N * K, 2.0f);
    Buf values = buf_random(&rng, (size_t)rows * H, 0.5f);
    int32_t *host_idx = test_token_rows(&rng, N, K, rows);
    IBuf idx = ibuf_from_host(host_idx, (size_t)N * K);
    Buf y = buf_zeros((size_t)N * H), w = buf_zeros((size_t)N * K);
    float half = 0.5f;
    Buf loss = buf_from_host(&half, 1);
    cpu->slot_read_forward(y.cpu, w.cpu, loss.cpu, h.cpu, top_s.cpu, values.cpu, idx.cpu, scale, N,
                           K, H);
    gpu->slot_read_forward(y.gpu, w.gpu, loss.gpu, h.gpu, top_s.gpu, values.gpu, idx.gpu, scale, N,
                           K, H);
    expect_close("slot_read_forward y", y, 1e-5, 1e-5);
    expect_close("slot_read_forward w", w, 1e-7, 1e-5);
    expect_close("slot_read_forward entropy loss", loss, 0, 1e-6);
    Buf dy = buf_random(&rng, (size_t)N * H, 1.0f), dh = buf_random(&rng, (size_t)N * H, 1.0f);
    // dvalues accumulates: start from values already there
    Buf ds = buf_zeros((size_t)N * K), dvalues = buf_random(&rng, (size_t)rows * H, 1.0f);
    float *start = test_copy_of(dvalues.cpu, dvalues.n);
    const float entropy_scale = 100.0f * scale; // large enough that the entropy term matters
    cpu->slot_read_backward(dh.cpu, ds.cpu, dvalues.cpu, dy.cpu, w.cpu, values.cpu, idx.cpu,
                            entropy_scale, N, K, H);
    gpu->slot_read_backward(dh.gpu, ds.gpu, dvalues.gpu, dy.gpu, w.gpu, values.gpu, idx.gpu,
                            entropy_scale, N, K, H);
    expect_close("slot_read_backward dh", dh, 1e-6, 1e-6);
    expect_close("slot_read_backward ds", ds, 1e-5, 1e-4);
    expect_row_grads_close(dvalues, host_idx, w.cpu, dy.cpu, start, N, K, H);
    free(host_idx), free(start);
    buf_free(&h), buf_free(&top_s), buf_free(&values), buf_free(&y), buf_free(&w), buf_free(&loss);
    buf_free(&dy), buf_free(&dh), buf_free(&ds), buf_free(&dvalues), ibuf_free(&idx);
}

// The atomics under the heaviest contention, with sums that are exact in any order: every
// token reads the same K = 8 rows, with equal scores (w = 1/8 exactly) and integer dy, so
// every product and partial sum is a multiple of 1/8 below 2^20: the cuda gradients must
// be the cpu's bit for bit.
static void check_slot_read_exact_row_sums(void) {
    TestRng rng = test_rng(31);
    const int N = 2048, K = 8, H = 512, rows = K;
    int32_t *host_idx = test_token_rows(&rng, N, K, rows);
    IBuf idx = ibuf_from_host(host_idx, (size_t)N * K);
    free(host_idx);
    int32_t *ints = hs_malloc((size_t)N * H * sizeof(int32_t));
    test_fill_uniform_int(&rng, ints, (size_t)N * H, -8, 8);
    float *host_dy = hs_malloc((size_t)N * H * sizeof(float));
    for (size_t i = 0; i < (size_t)N * H; i++)
        host_dy[i] = (float)ints[i];
    Buf dy = buf_from_host(host_dy, (size_t)N * H);
    free(ints), free(host_dy);
    Buf h = buf_random(&rng, (size_t)N * H, 1.0f),
        values = buf_random(&rng, (size_t)rows * H, 1.0f);
    Buf top_s = buf_zeros((size_t)N * K), y = buf_zeros((size_t)N * H),
        w = buf_zeros((size_t)N * K);
    Buf loss = buf_zeros(1), dh = buf_zeros((size_t)N * H), ds = buf_zeros((size_t)N * K);
    Buf dvalues = buf_zeros((size_t)rows * H);
    cpu->slot_read_forward(y.cpu, w.cpu, loss.cpu, h.cpu, top_s.cpu, values.cpu, idx.cpu, 0.0f, N,
                           K, H);
    gpu->slot_read_forward(y.gpu, w.gpu, loss.gpu, h.gpu, top_s.gpu, values.gpu, idx.gpu, 0.0f, N,
                           K, H);
    ck_assert(w.cpu[0] == 0.125f);
    cpu->slot_read_backward(dh.cpu, ds.cpu, dvalues.cpu, dy.cpu, w.cpu, values.cpu, idx.cpu, 0.0f,
                            N, K, H);
    gpu->slot_read_backward(dh.gpu, ds.gpu, dvalues.gpu, dy.gpu, w.gpu, values.gpu, idx.gpu, 0.0f,
                            N, K, H);
    float *got = hs_malloc(dvalues.n * sizeof(float));
    gpu->copy_to_host(got, dvalues.gpu, dvalues.n * sizeof(float));
    ck_assert_msg(memcmp(got, dvalues.cpu, dvalues.n * sizeof(float)) == 0,
                  "slot_read_backward dvalues, exact sums: cuda differs from cpu");
    free(got);
    Buf all[] = {dy, h, values, top_s, y, w, loss, dh, ds, dvalues};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        buf_free(&all[i]);
    ibuf_free(&idx);
}

START_TEST(test_slot_read) {
    check_slot_read_exact_row_sums();
    check_slot_read(13, 1024, 8, 512, 4096); // the seed's K and H: float4, one group of 8
    check_slot_read(23, 300, 5, 510, 700);   // single floats; a group of 8 with 3 ignored rows
    check_slot_read(24, 200, 12, 512, 12);   // two groups: 8 + 4; every token reads all 12 rows
    check_slot_read(25, 100, 1, 64, 1000);   // groups of 1; most rows read by no token
    check_slot_read(26, 100, 2, 36, 150);    // groups of 2
    check_slot_read(27, 64, 3, 7, 20);       // groups of 4, odd H
    check_slot_read(28, 64, 32, 40, 64);     // the largest K the kernels take
}
END_TEST

START_TEST(test_slot_score_backward) {
    TestRng rng = test_rng(29);
    const int N = 1024, K = 8, R = 32;
    Buf p = buf_random(&rng, (size_t)N * R, 1.0f),
        krows = buf_random(&rng, (size_t)N * K * R, 1.0f);
    Buf dp = buf_random(&rng, (size_t)N * R, 1.0f), dkrows = buf_zeros((size_t)N * K * R);
    Buf ds = buf_random(&rng, (size_t)N * K, 0.1f);
    cpu->slot_score_backward(dp.cpu, dkrows.cpu, ds.cpu, p.cpu, krows.cpu, N, K, R);
    gpu->slot_score_backward(dp.gpu, dkrows.gpu, ds.gpu, p.gpu, krows.gpu, N, K, R);
    expect_close("slot_score_backward dp", dp, 1e-5, 1e-5);
    expect_close("slot_score_backward dkrows", dkrows, 1e-7, 1e-5);
    buf_free(&ds), buf_free(&p), buf_free(&krows), buf_free(&dp), buf_free(&dkrows);
}
END_TEST

START_TEST(test_cross_entropy) {
    TestRng rng = test_rng(14);
    const int N = 300, V = 50257;
    const float scale = 1.0f / N;
    Buf logits = buf_random(&rng, (size_t)N * V, 3.0f);
    int32_t *targets_host = hs_malloc(N * sizeof(int32_t));
    test_fill_uniform_int(&rng, targets_host, N, 0, V);
    targets_host[7] = -1; // ignored rows
    targets_host[N - 1] = -1;
    IBuf targets = ibuf_from_host(targets_host, N);
    float start = 0.25f;
    Buf loss = buf_from_host(&start, 1);
    cpu->cross_entropy_forward(loss.cpu, logits.cpu, targets.cpu, scale, N, V);
    gpu->cross_entropy_forward(loss.gpu, logits.gpu, targets.gpu, scale, N, V);
    expect_close("cross_entropy_forward", loss, 0, 1e-5);
    Buf dlogits = buf_zeros((size_t)N * V);
    cpu->cross_entropy_backward(dlogits.cpu, logits.cpu, targets.cpu, scale, N, V);
    gpu->cross_entropy_backward(dlogits.gpu, logits.gpu, targets.gpu, scale, N, V);
    expect_close("cross_entropy_backward", dlogits, 1e-9, 1e-4);
    // in place, as the model uses it
    cpu->cross_entropy_backward(logits.cpu, logits.cpu, targets.cpu, scale, N, V);
    gpu->cross_entropy_backward(logits.gpu, logits.gpu, targets.gpu, scale, N, V);
    expect_close("cross_entropy_backward (in place)", logits, 1e-9, 1e-4);
    free(targets_host);
    buf_free(&logits), ibuf_free(&targets), buf_free(&loss), buf_free(&dlogits);
}
END_TEST

START_TEST(test_route_loss) {
    TestRng rng = test_rng(15);
    const int B = 2, T = 1024, n_sel = 205;
    Buf r = buf_random(&rng, (size_t)B * T, 2.0f);
    IBuf sel = ibuf_zeros((size_t)B * n_sel);
    cpu->select_topn(sel.cpu, r.cpu, B, T, n_sel);
    gpu->select_topn(sel.gpu, r.gpu, B, T, n_sel);
    expect_equal("select_topn (route loss input)", sel);
    float start = 1.0f;
    Buf loss = buf_from_host(&start, 1);
    const float token_scale = 0.01f / (B * T), seq_scale = 0.01f / B;
    cpu->route_loss_forward(loss.cpu, r.cpu, sel.cpu, 0.2f, token_scale, seq_scale, B, T, n_sel);
    gpu->route_loss_forward(loss.gpu, r.gpu, sel.gpu, 0.2f, token_scale, seq_scale, B, T, n_sel);
    expect_close("route_loss_forward", loss, 0, 1e-6);
    Buf dr = buf_random(&rng, (size_t)B * T, 1e-4f);
    cpu->route_loss_backward(dr.cpu, r.cpu, sel.cpu, 0.2f, token_scale, seq_scale, B, T, n_sel);
    gpu->route_loss_backward(dr.gpu, r.gpu, sel.gpu, 0.2f, token_scale, seq_scale, B, T, n_sel);
    expect_close("route_loss_backward", dr, 1e-10, 1e-5);
    buf_free(&r), ibuf_free(&sel), buf_free(&loss), buf_free(&dr);
}
END_TEST

START_TEST(test_optimizer_ops) {
    TestRng rng = test_rng(16);
    const size_t n = 3 * 1000 * 1000 + 17;
    Buf x = buf_random(&rng, n, 1.0f);
    float start = 2.0f;
    Buf sum = buf_from_host(&start, 1);
    cpu->sum_squares(sum.cpu, x.cpu, n);
    gpu->sum_squares(sum.gpu, x.gpu, n);
    expect_close("sum_squares", sum, 0, 1e-5);
    // deterministic: the same sum bit for bit a second time
    float first = 0.0f, again = 0.0f;
    gpu->copy_to_host(&first, sum.gpu, sizeof(float));
    gpu->zero(sum.gpu, sizeof(float));
    gpu->sum_squares(sum.gpu, x.gpu, n);
    gpu->copy_to_host(&again, sum.gpu, sizeof(float));
    ck_assert_msg(again == first - 2.0f || fabsf(again - (first - 2.0f)) <= 1e-6f * first,
                  "sum_squares changed between runs: %.9g then %.9g", first - 2.0f, again);

    const size_t np = 1000 * 1000;
    Buf param = buf_random(&rng, np, 1.0f), grad = buf_random(&rng, np, 0.1f);
    Buf m = buf_random(&rng, np, 0.01f), v = buf_zeros(np);
    // Pieces at offsets of every alignment (as the optimizer's per-tensor views are), some
    // shorter than a float4; then one call whose four buffers are misaligned differently
    // (the element-by-element path).
    const size_t cuts[] = {0, 1, 3, 7, 10, 1003, 4096, 500001, np};
    for (int t = 1; t <= 3; t++) {
        for (int piece = 0; piece + 1 < (int)(sizeof(cuts) / sizeof(cuts[0])); piece++) {
            size_t at = cuts[piece], len = cuts[piece + 1] - cuts[piece];
            cpu->adamw_update(param.cpu + at, grad.cpu + at, m.cpu + at, v.cpu + at, len, 1e-3f,
                              0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, t);
            gpu->adamw_update(param.gpu + at, grad.gpu + at, m.gpu + at, v.gpu + at, len, 1e-3f,
                              0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, t);
        }
    }
    cpu->adamw_update(param.cpu, grad.cpu + 1, m.cpu + 2, v.cpu + 3, np - 3, 1e-3f, 0.9f, 0.95f,
                      1e-8f, 0.1f, 0.5f, 4);
    gpu->adamw_update(param.gpu, grad.gpu + 1, m.gpu + 2, v.gpu + 3, np - 3, 1e-3f, 0.9f, 0.95f,
                      1e-8f, 0.1f, 0.5f, 4);
    expect_close("adamw param", param, 1e-6, 1e-5);
    expect_close("adamw m", m, 1e-8, 1e-5);
    expect_close("adamw v", v, 1e-10, 1e-5);
    buf_free(&x), buf_free(&sum), buf_free(&param), buf_free(&grad), buf_free(&m), buf_free(&v);
}
END_TEST

static Suite *parity_suite(void) {
    Suite *s = suite_create("cuda op parity");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_elementwise_and_rows);
    tcase_add_test(tc, test_bf16_conversions);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_conv);
    tcase_add_test(tc, test_router);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_attention_sparse_queries);
    tcase_add_test(tc, test_attention_dense_and_small_heads);
    tcase_add_test(tc, test_attention_bf16_tensor_cores);
    tcase_add_test(tc, test_gate);
    tcase_add_test(tc, test_slot_topk_and_merge);
    tcase_add_test(tc, test_slot_topk_shapes);
    tcase_add_test(tc, test_slot_topk_seed_shape_timing);
    tcase_add_test(tc, test_slot_read);
    tcase_add_test(tc, test_slot_score_backward);
    tcase_add_test(tc, test_cross_entropy);
    tcase_add_test(tc, test_route_loss);
    tcase_add_test(tc, test_optimizer_ops);
    tcase_add_test(tc, test_slot_topk_bf16_tensor_cores);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_parity_suite(parity_suite, &cpu, &gpu);
}
