// The cpu backend's contextual stream: RoPE, SQDK attention (GQA, sparse queries at their
// original positions) and the sigmoid gate that scatters the attention output back.
// Forward results against naive formulas; gradients against central finite differences of
// loss = sum(out * proj) with proj a fixed random tensor.
//
// Tolerances: outputs are fp32 roundings of double computations; with eps = 1e-2 the finite
// difference carries ~1e-4 relative rounding error and a comparable truncation error. We
// require max relative error < 5e-3 with a 1e-3 floor on the denominator.
#include "kernels/ops.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double FD_EPS = 1e-2;
static const double FD_TOL = 5e-3;
static const double FD_FLOOR = 1e-3;
// Attention sums hundreds of rounded outputs into the loss, so its finite differences carry
// an absolute noise of ~1e-5; its gradients (typically 0.01-1) are compared with a floor of
// 1e-2, i.e. an absolute tolerance of 5e-5 for near-zero entries.
static const double ATTN_FLOOR = 1e-2;

// ---- RoPE ----------------------------------------------------------------------------------

typedef struct RopeCtx {
    float *x, *work, *proj;
    const int32_t *pos;
    int M, nheads, hd;
    float theta;
} RopeCtx;

static double rope_loss(void *p) {
    RopeCtx *c = p;
    size_t n = (size_t)c->M * c->nheads * c->hd;
    memcpy(c->work, c->x, n * sizeof(float));
    ops_cpu()->rope_forward(c->work, c->pos, c->M, c->nheads, c->hd, c->theta);
    return test_project(c->work, c->proj, n);
}

START_TEST(test_rope) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(11);
    const int M = 5, nheads = 3, hd = 8;
    const float theta = 10000.0f;
    const int32_t pos[5] = {0, 1, 7, 300, 4095};
    const size_t n = (size_t)M * nheads * hd;
    RopeCtx c = {test_random_buffer(&rng, n, 1),
                 test_zeros(n),
                 test_random_buffer(&rng, n, 1),
                 pos,
                 M,
                 nheads,
                 hd,
                 theta};
    rope_loss(&c);
    // naive: NeoX pairs (i, i + hd/2), angle pos * theta^(-2i/hd)
    for (int m = 0; m < M; m++)
        for (int h = 0; h < nheads; h++)
            for (int i = 0; i < hd / 2; i++) {
                double angle = pos[m] * pow(theta, -2.0 * i / hd);
                const float *xh = c.x + (m * nheads + h) * hd;
                const float *oh = c.work + (m * nheads + h) * hd;
                double want1 = xh[i] * cos(angle) - xh[i + hd / 2] * sin(angle);
                double want2 = xh[i] * sin(angle) + xh[i + hd / 2] * cos(angle);
                ck_assert_double_eq_tol(oh[i], want1, 1e-5);
                ck_assert_double_eq_tol(oh[i + hd / 2], want2, 1e-5);
                if (pos[m] == 0) // position 0 is the identity
                    ck_assert(oh[i] == xh[i] && oh[i + hd / 2] == xh[i + hd / 2]);
            }
    // the backward undoes the forward (the rotation is orthogonal)
    float *round_trip = test_copy_of(c.work, n);
    ops->rope_backward(round_trip, pos, M, nheads, hd, theta);
    ck_assert_double_le(test_max_rel_err("rope backward(forward(x))", round_trip, c.x, n, 1e-5, 0),
                        1.0);
    float *dx = test_copy_of(c.proj, n);
    ops->rope_backward(dx, pos, M, nheads, hd, theta);
    ck_assert_double_le(
        test_grad_check("rope dx", rope_loss, &c, c.x, n, dx, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    free(c.x), free(c.work), free(c.proj), free(round_trip), free(dx);
}
END_TEST

// ---- attention -----------------------------------------------------------------------------

typedef struct AttnCtx {
    float *q, *k, *v, *o, *lse, *proj;
    const int32_t *qpos;
    int B, T, Mq, nh, nkv, hd;
} AttnCtx;

static double attn_loss(void *p) {
    AttnCtx *c = p;
    ops_cpu()->attention_forward(c->o, c->lse, c->q, c->k, c->v, c->qpos, c->B, c->T, c->Mq, c->nh,
                                 c->nkv, c->hd);
    return test_project(c->o, c->proj, (size_t)c->B * c->Mq * c->nh * c->hd);
}

// Naive attention of one query row and head: the full [T] score row with the causal mask.
static void naive_attention_row(const AttnCtx *c, int row, int h, double *o_out, double *lse_out) {
    int b = row / c->Mq, kvh = h / (c->nh / c->nkv);
    double scores[64], max_s = -INFINITY;
    for (int s = 0; s < c->T; s++) {
        if (s > c->qpos[row]) {
            scores[s] = -INFINITY;
            continue;
        }
        double dot = 0;
        for (int d = 0; d < c->hd; d++)
            dot += (double)c->q[(row * c->nh + h) * c->hd + d] *
                   c->k[((b * c->T + s) * c->nkv + kvh) * c->hd + d];
        scores[s] = dot / sqrt((double)c->hd);
        max_s = fmax(max_s, scores[s]);
    }
    double sum = 0;
    for (int s = 0; s < c->T; s++)
        sum += exp(scores[s] - max_s);
    for (int d = 0; d < c->hd; d++) {
        o_out[d] = 0;
        for (int s = 0; s < c->T; s++)
            o_out[d] +=
                exp(scores[s] - max_s) / sum * c->v[((b * c->T + s) * c->nkv + kvh) * c->hd + d];
    }
    *lse_out = max_s + log(sum);
}

static void check_attention(int Mq, const int32_t *qpos, uint64_t seed) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(seed);
    const int B = 2, T = 7, nh = 4, nkv = 2, hd = 4;
    const size_t nq = (size_t)B * Mq * nh * hd, nkvbuf = (size_t)B * T * nkv * hd;
    AttnCtx c = {test_random_buffer(&rng, nq, 1),
                 test_random_buffer(&rng, nkvbuf, 1),
                 test_random_buffer(&rng, nkvbuf, 1),
                 test_zeros(nq),
                 test_zeros((size_t)B * Mq * nh),
                 test_random_buffer(&rng, nq, 1),
                 qpos,
                 B,
                 T,
                 Mq,
                 nh,
                 nkv,
                 hd};
    attn_loss(&c);
    for (int row = 0; row < B * Mq; row++)
        for (int h = 0; h < nh; h++) {
            double o_want[8], lse_want;
            naive_attention_row(&c, row, h, o_want, &lse_want);
            ck_assert_double_eq_tol(c.lse[row * nh + h], lse_want, 1e-5 * (1 + fabs(lse_want)));
            for (int d = 0; d < hd; d++)
                ck_assert_double_eq_tol(c.o[(row * nh + h) * hd + d], o_want[d], 1e-5);
        }
    float *dq = test_zeros(nq), *dk = test_zeros(nkvbuf), *dv = test_zeros(nkvbuf);
    ops->attention_backward(dq, dk, dv, c.proj, c.q, c.k, c.v, c.o, c.lse, qpos, B, T, Mq, nh, nkv,
                            hd);
    ck_assert_double_le(
        test_grad_check("attention dq", attn_loss, &c, c.q, nq, dq, 1000, FD_EPS, ATTN_FLOOR),
        FD_TOL);
    ck_assert_double_le(
        test_grad_check("attention dk", attn_loss, &c, c.k, nkvbuf, dk, 1000, FD_EPS, ATTN_FLOOR),
        FD_TOL);
    ck_assert_double_le(
        test_grad_check("attention dv", attn_loss, &c, c.v, nkvbuf, dv, 1000, FD_EPS, ATTN_FLOOR),
        FD_TOL);
    // keys after the last query of a sequence get no gradient (causality)
    for (int b = 0; b < B; b++) {
        int last = -1;
        for (int m = 0; m < Mq; m++)
            last = qpos[b * Mq + m] > last ? qpos[b * Mq + m] : last;
        for (int s = last + 1; s < T; s++)
            for (int i = 0; i < nkv * hd; i++) {
                ck_assert(dk[(b * T + s) * nkv * hd + i] == 0.0f);
                ck_assert(dv[(b * T + s) * nkv * hd + i] == 0.0f);
            }
    }
    // backward accumulates: a second call doubles every gradient
    float *dq2 = test_copy_of(dq, nq), *dk2 = test_copy_of(dk, nkvbuf),
          *dv2 = test_copy_of(dv, nkvbuf);
    attn_loss(&c); // o, lse at the unperturbed inputs
    ops->attention_backward(dq2, dk2, dv2, c.proj, c.q, c.k, c.v, c.o, c.lse, qpos, B, T, Mq, nh,
                            nkv, hd);
    for (size_t i = 0; i < nq; i++)
        ck_assert_float_eq_tol(dq2[i], 2 * dq[i], 1e-5f * (1 + fabsf(dq[i])));
    for (size_t i = 0; i < nkvbuf; i++) {
        ck_assert_float_eq_tol(dk2[i], 2 * dk[i], 1e-5f * (1 + fabsf(dk[i])));
        ck_assert_float_eq_tol(dv2[i], 2 * dv[i], 1e-5f * (1 + fabsf(dv[i])));
    }
    free(c.q), free(c.k), free(c.v), free(c.o), free(c.lse), free(c.proj);
    free(dq), free(dk), free(dv), free(dq2), free(dk2), free(dv2);
}

// Sparse queries: 3 of 7 positions per sequence, including position 0 (sees one key) and
// a gap after the last query (keys there must get no gradient).
START_TEST(test_attention_sparse) {
    const int32_t qpos[6] = {0, 2, 5, 1, 3, 4};
    check_attention(3, qpos, 12);
}
END_TEST

// attn=dense: every position is a query.
START_TEST(test_attention_dense) {
    int32_t qpos[14];
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 7; t++)
            qpos[b * 7 + t] = t;
    check_attention(7, qpos, 13);
}
END_TEST

// A sparse query at position t equals the dense query at position t (same q, k, v).
START_TEST(test_attention_sparse_matches_dense) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(14);
    const int B = 1, T = 9, nh = 4, nkv = 2, hd = 8, Mq = 3;
    const int32_t sparse_pos[3] = {2, 6, 8};
    int32_t dense_pos[9];
    for (int t = 0; t < T; t++)
        dense_pos[t] = t;
    float *qd = test_random_buffer(&rng, T * nh * hd, 1),
          *k = test_random_buffer(&rng, T * nkv * hd, 1);
    float *v = test_random_buffer(&rng, T * nkv * hd, 1);
    float *qs = test_zeros(Mq * nh * hd), *od = test_zeros(T * nh * hd),
          *os = test_zeros(Mq * nh * hd);
    float *lsed = test_zeros(T * nh), *lses = test_zeros(Mq * nh);
    ops->gather_rows(qs, qd, sparse_pos, Mq, nh * hd, 0);
    ops->attention_forward(od, lsed, qd, k, v, dense_pos, B, T, T, nh, nkv, hd);
    ops->attention_forward(os, lses, qs, k, v, sparse_pos, B, T, Mq, nh, nkv, hd);
    for (int m = 0; m < Mq; m++)
        for (int i = 0; i < nh * hd; i++)
            ck_assert(os[m * nh * hd + i] == od[sparse_pos[m] * nh * hd + i]);
    free(qd), free(k), free(v), free(qs), free(od), free(os), free(lsed), free(lses);
}
END_TEST

// ---- gated scatter-add -----------------------------------------------------------------------

typedef struct GateCtx {
    float *h0, *h, *y, *r, *proj;
    const int32_t *idx;
    int N, M, H;
} GateCtx;

static double gate_loss(void *p) {
    GateCtx *c = p;
    memcpy(c->h, c->h0, (size_t)c->N * c->H * sizeof(float));
    ops_cpu()->gated_scatter_add(c->h, c->y, c->r, c->idx, c->M, c->H);
    return test_project(c->h, c->proj, (size_t)c->N * c->H);
}

START_TEST(test_gated_scatter_add) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(15);
    const int N = 8, M = 3, H = 5;
    const int32_t idx[3] = {1, 4, 6};
    GateCtx c = {test_random_buffer(&rng, N * H, 1),
                 test_zeros(N * H),
                 test_random_buffer(&rng, M * H, 1),
                 test_random_buffer(&rng, N, 2),
                 test_random_buffer(&rng, N * H, 1),
                 idx,
                 N,
                 M,
                 H};
    gate_loss(&c);
    for (int n = 0; n < N; n++) { // naive: h + sigmoid(r) y on selected rows, h elsewhere
        int m = -1;
        for (int j = 0; j < M; j++)
            if (idx[j] == n)
                m = j;
        for (int j = 0; j < H; j++) {
            double want = c.h0[n * H + j];
            if (m >= 0)
                want += c.y[m * H + j] / (1.0 + exp(-(double)c.r[n]));
            ck_assert_double_eq_tol(c.h[n * H + j], want, 1e-6);
        }
    }
    float *dy = test_random_buffer(&rng, M * H, 1); // garbage: dy overwrites
    float *dr = test_zeros(N);
    ops->gated_scatter_add_backward(dy, dr, c.proj, c.y, c.r, idx, M, H);
    ck_assert_double_le(
        test_grad_check("gate dy", gate_loss, &c, c.y, M * H, dy, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    ck_assert_double_le(
        test_grad_check("gate dr", gate_loss, &c, c.r, N, dr, 1000, FD_EPS, FD_FLOOR), FD_TOL);
    for (int n = 0; n < N; n++)
        if (n != 1 && n != 4 && n != 6)
            ck_assert(dr[n] == 0.0f); // unselected tokens get no gate gradient
    // dr accumulates, dy overwrites
    float *dy2 = test_copy_of(dy, M * H), *dr2 = test_copy_of(dr, N);
    ops->gated_scatter_add_backward(dy2, dr2, c.proj, c.y, c.r, idx, M, H);
    for (int i = 0; i < M * H; i++)
        ck_assert(dy2[i] == dy[i]);
    for (int n = 0; n < N; n++)
        ck_assert_float_eq_tol(dr2[n], 2 * dr[n], 1e-6f);
    // dr = NULL is allowed
    ops->gated_scatter_add_backward(dy2, NULL, c.proj, c.y, c.r, idx, M, H);
    for (int i = 0; i < M * H; i++)
        ck_assert(dy2[i] == dy[i]);

    // r = NULL: the gate is fixed at 1 (attn=dense)
    float *r_saved = c.r;
    c.r = NULL;
    gate_loss(&c);
    for (int m = 0; m < M; m++)
        for (int j = 0; j < H; j++)
            ck_assert(c.h[idx[m] * H + j] == c.h0[idx[m] * H + j] + c.y[m * H + j]);
    float *dy_open = test_zeros(M * H);
    ops->gated_scatter_add_backward(dy_open, NULL, c.proj, c.y, NULL, idx, M, H);
    ck_assert_double_le(test_grad_check("gate dy (r NULL)", gate_loss, &c, c.y, M * H, dy_open,
                                        1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    free(c.h0), free(c.h), free(c.y), free(r_saved), free(c.proj);
    free(dy), free(dr), free(dy2), free(dr2), free(dy_open);
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("ops_attention");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_attention_sparse);
    tcase_add_test(tc, test_attention_dense);
    tcase_add_test(tc, test_attention_sparse_matches_dense);
    tcase_add_test(tc, test_gated_scatter_add);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(attention_suite());
}
