// The cpu backend's router ops (Gumbel noise, top-n selection, threshold routing), losses
// (cross-entropy with ignored targets, route loss) and optimizer kernels (sum of squares,
// AdamW). Selections against naive formulas, losses against direct sums, gradients against
// central finite differences of the loss the forward op adds, AdamW against a step computed
// by hand.
//
// Tolerances: eps = 1e-2, max relative error < 5e-3 (see test_ops_dense.c), with the floor
// below for gradients of a scalar fp32 loss.
#include "kernels/ops.h"
#include "kernels/philox.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double FD_EPS = 1e-2;
static const double FD_TOL = 5e-3;
// The losses come back as one fp32 scalar: an ulp of a loss of ~2 is 2.4e-7, so finite
// differences carry ~1e-5 absolute noise. Scalar-loss gradients use a floor of 1e-2.
static const double LOSS_FLOOR = 1e-2;

// ---- router --------------------------------------------------------------------------------

START_TEST(test_gumbel_noise) {
    const int B = 3, T = 5;
    const uint64_t seed = 0xfeedbeef12345678ull;
    float out[15];
    ops_cpu()->gumbel_noise(out, seed, 7, 2, 10, B, T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            ck_assert(out[b * T + t] == philox_gumbel(seed, 7, 2, 10 + b, t));
    // a different layer draws different noise
    float other[15];
    ops_cpu()->gumbel_noise(other, seed, 7, 3, 10, B, T);
    ck_assert(memcmp(out, other, sizeof(out)) != 0);
}
END_TEST

// Naive: n_sel passes of "largest remaining z, lowest position on ties", then ascending.
static void naive_topn(int32_t *sel, const float *z, int B, int T, int n_sel) {
    char taken[64];
    for (int b = 0; b < B; b++) {
        memset(taken, 0, sizeof(taken));
        for (int j = 0; j < n_sel; j++) {
            int best = -1;
            for (int t = 0; t < T; t++)
                if (!taken[t] && (best < 0 || z[b * T + t] > z[b * T + best]))
                    best = t;
            taken[best] = 1;
        }
        int written = 0;
        for (int t = 0; t < T; t++)
            if (taken[t])
                sel[b * n_sel + written++] = b * T + t;
    }
}

START_TEST(test_select_topn) {
    const Ops *ops = ops_cpu();
    // ties: three 3s, two chosen: the lower positions 1 and 2
    const float z_tie[6] = {1, 3, 3, 0, 3, 2};
    int32_t sel[64], want[64];
    ops->select_topn(sel, z_tie, 1, 6, 2);
    ck_assert_int_eq(sel[0], 1);
    ck_assert_int_eq(sel[1], 2);
    ops->select_topn(sel, z_tie, 1, 6, 4); // 3s and the 2, ascending
    ck_assert(sel[0] == 1 && sel[1] == 2 && sel[2] == 4 && sel[3] == 5);

    TestRng rng = test_rng(31);
    const int B = 3, T = 17;
    float *z = test_random_buffer(&rng, B * T, 1);
    z[4] = z[9] = z[13] = 0.5f; // ties inside sequence 0 and across the cut
    z[T + 2] = z[T + 3] = 2.0f;
    for (int n_sel = 1; n_sel <= T; n_sel += 4) {
        ops->select_topn(sel, z, B, T, n_sel);
        naive_topn(want, z, B, T, n_sel);
        for (int i = 0; i < B * n_sel; i++)
            ck_assert_int_eq(sel[i], want[i]);
    }
    ops->select_topn(sel, z, B, T, T); // everything, ascending flat indices
    for (int i = 0; i < B * T; i++)
        ck_assert_int_eq(sel[i], i);
    free(z);
}
END_TEST

START_TEST(test_select_threshold) {
    const float r[8] = {-1.0f, 0.0f, 0.3f, 2.0f, -0.0f, 1e-30f, -5.0f, 4.0f};
    int32_t sel[8], count = -1;
    ops_cpu()->select_threshold(sel, &count, r, 8);
    // sigmoid(r) > 0.5 exactly when r > 0: r = 0 is not a query
    const int32_t want[4] = {2, 3, 5, 7};
    ck_assert_int_eq(count, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(sel[i], want[i]);
}
END_TEST

// ---- cross-entropy -------------------------------------------------------------------------

typedef struct CeCtx {
    float *logits;
    const int32_t *targets;
    float scale;
    int N, V;
} CeCtx;

static double ce_loss(void *p) {
    CeCtx *c = p;
    float loss = 0.0f;
    ops_cpu()->cross_entropy_forward(&loss, c->logits, c->targets, c->scale, c->N, c->V);
    return loss;
}

// Query positions: flat index b*T + t -> t, for every sequence b.
START_TEST(test_token_positions) {
    enum { T = 16, M = 5 };
    const int32_t sel[M] = {0, 7, 15, 16 + 3, 3 * 16 + 15};
    const int32_t want[M] = {0, 7, 15, 3, 15};
    int32_t pos[M] = {-1, -1, -1, -1, -1};
    ops_cpu()->token_positions(pos, sel, M, T);
    for (int m = 0; m < M; m++)
        ck_assert_int_eq(pos[m], want[m]);
}
END_TEST

START_TEST(test_cross_entropy) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(32);
    const int N = 6, V = 11;
    const int32_t targets[6] = {3, -1, 0, 10, -1, 7}; // two ignored rows
    CeCtx c = {test_random_buffer(&rng, N * V, 2), targets, 0.25f, N, V};
    float loss = 1.5f; // the op adds to what is there
    ops->cross_entropy_forward(&loss, c.logits, targets, c.scale, N, V);
    double want = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0)
            continue;
        double sum = 0;
        for (int v = 0; v < V; v++)
            sum += exp((double)c.logits[n * V + v]);
        want += log(sum) - c.logits[n * V + targets[n]];
    }
    ck_assert_double_eq_tol(loss, 1.5 + 0.25 * want, 1e-5);
    // large logits stay finite (max subtraction)
    c.logits[0] += 500.0f;
    ck_assert(isfinite(ce_loss(&c)));
    c.logits[0] -= 500.0f;

    float *dlogits = test_random_buffer(&rng, N * V, 1); // garbage: the backward overwrites
    ops->cross_entropy_backward(dlogits, c.logits, targets, c.scale, N, V);
    ck_assert_double_le(test_grad_check("cross_entropy dlogits", ce_loss, &c, c.logits, N * V,
                                        dlogits, 1000, FD_EPS, LOSS_FLOOR),
                        FD_TOL);
    for (int v = 0; v < V; v++) // ignored rows are zero
        ck_assert(dlogits[1 * V + v] == 0.0f && dlogits[4 * V + v] == 0.0f);
    // in place: dlogits aliasing logits gives the same result
    ops->cross_entropy_backward(c.logits, c.logits, targets, c.scale, N, V);
    for (int i = 0; i < N * V; i++)
        ck_assert(c.logits[i] == dlogits[i]);
    free(c.logits), free(dlogits);
}
END_TEST

// ---- route loss ----------------------------------------------------------------------------

typedef struct RouteCtx {
    float *r;
    const int32_t *sel;
    float rho, token_scale, seq_scale;
    int B, T, n_sel;
} RouteCtx;

static double route_loss(void *p) {
    RouteCtx *c = p;
    float loss = 0.0f;
    ops_cpu()->route_loss_forward(&loss, c->r, c->sel, c->rho, c->token_scale, c->seq_scale, c->B,
                                  c->T, c->n_sel);
    return loss;
}

START_TEST(test_route_loss) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(33);
    const int B = 2, T = 6, n_sel = 2;
    const int32_t sel[4] = {1, 4, 6, 11}; // flat indices: (0,1) (0,4) (1,0) (1,5)
    RouteCtx c = {test_random_buffer(&rng, B * T, 2), sel, 0.2f, 0.3f, 1.7f, B, T, n_sel};
    c.r[3] = 40.0f; // far in the tail: the stable BCE form must stay finite and exact
    c.r[7] = -40.0f;
    double want = 0;
    for (int b = 0; b < B; b++) {
        double gate_mean = 0;
        for (int t = 0; t < T; t++) {
            double r = c.r[b * T + t];
            int y = 0;
            for (int j = 0; j < B * n_sel; j++)
                y |= sel[j] == b * T + t;
            // -[y log s(r) + (1-y) log(1 - s(r))], written with log1p for the tails
            double bce = y ? log1p(exp(-r)) : r + log1p(exp(-r));
            if (r < -30)
                bce = y ? -r : 0.0; // exp(-r) would overflow the naive form's precision
            want += 0.3 * bce;
            gate_mean += 1.0 / (1.0 + exp(-r)) / T;
        }
        want += 1.7 * (gate_mean - 0.2) * (gate_mean - 0.2);
    }
    ck_assert_double_eq_tol(route_loss(&c), want, 1e-5 * (1 + fabs(want)));
    c.r[3] = 0.8f, c.r[7] = -0.6f; // back to the smooth region for the finite differences
    float *dr = test_zeros(B * T);
    ops->route_loss_backward(dr, c.r, sel, c.rho, c.token_scale, c.seq_scale, B, T, n_sel);
    ck_assert_double_le(
        test_grad_check("route_loss dr", route_loss, &c, c.r, B * T, dr, 1000, FD_EPS, LOSS_FLOOR),
        FD_TOL);
    // dr accumulates
    float *dr2 = test_zeros(B * T);
    memcpy(dr2, dr, B * T * sizeof(float));
    ops->route_loss_backward(dr2, c.r, sel, c.rho, c.token_scale, c.seq_scale, B, T, n_sel);
    for (int i = 0; i < B * T; i++)
        ck_assert_float_eq_tol(dr2[i], 2 * dr[i], 1e-6f);
    free(c.r), free(dr), free(dr2);
}
END_TEST

// ---- optimizer -----------------------------------------------------------------------------

START_TEST(test_sum_squares) {
    TestRng rng = test_rng(34);
    const size_t n = 1001;
    float *x = test_random_buffer(&rng, n, 3);
    double want = 0;
    for (size_t i = 0; i < n; i++)
        want += (double)x[i] * x[i];
    float out = 2.0f; // accumulates
    ops_cpu()->sum_squares(&out, x, n);
    ck_assert_double_eq_tol(out, 2.0 + want, 1e-6 * want);
    free(x);
}
END_TEST

// Two AdamW steps on a parameter 1.0 with grads 0.5 and 0.25 scaled by 2 (g = 1, 0.5);
// lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01. By hand:
//   t=1: m = 0.1, v = 0.001, m^ = 1, v^ = 1: p = 1 - 0.1 (1/(1+1e-8) + 0.01) = 0.899000001
//   t=2: m = 0.14, v = 0.001249: p = 0.899 - 0.1 (0.14/0.19 / (sqrt(0.001249/0.001999) + 1e-8)
//        + 0.01 * 0.899) = 0.80488304
// A second element with zero gradient only decays: p = 2 (1 - 0.1 * 0.01)^2 = 1.996002.
START_TEST(test_adamw_update) {
    float param[2] = {1.0f, 2.0f}, m[2] = {0, 0}, v[2] = {0, 0};
    float grad1[2] = {0.5f, 0.0f}, grad2[2] = {0.25f, 0.0f};
    ops_cpu()->adamw_update(param, grad1, m, v, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2.0f, 1);
    ck_assert_double_eq_tol(param[0], 0.899000001, 1e-6);
    ck_assert_double_eq_tol(m[0], 0.1, 1e-7);
    // the betas are fp32: 1 - 0.999f = 0.000999987, 1.3e-5 relative off the decimal value
    ck_assert_double_eq_tol(v[0], 0.001, 2e-8);
    ops_cpu()->adamw_update(param, grad2, m, v, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2.0f, 2);
    ck_assert_double_eq_tol(param[0], 0.8048830383, 2e-6);
    ck_assert_double_eq_tol(m[0], 0.14, 1e-7);
    ck_assert_double_eq_tol(v[0], 0.001249, 3e-8);
    ck_assert_double_eq_tol(param[1], 1.996002, 1e-6);
    ck_assert(m[1] == 0.0f && v[1] == 0.0f);
}
END_TEST

static Suite *router_loss_suite(void) {
    Suite *s = suite_create("ops_router_loss");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, test_gumbel_noise);
    tcase_add_test(tc, test_select_topn);
    tcase_add_test(tc, test_select_threshold);
    tcase_add_test(tc, test_token_positions);
    tcase_add_test(tc, test_cross_entropy);
    tcase_add_test(tc, test_route_loss);
    tcase_add_test(tc, test_sum_squares);
    tcase_add_test(tc, test_adamw_update);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(router_loss_suite());
}
