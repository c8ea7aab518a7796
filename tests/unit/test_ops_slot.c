// The cpu backend's slot memory: top-K slot selection over a table shard (ties, row
// offsets, short shards), the merge of per-shard candidates, the softmax read-out with its
// entropy loss, and the score backward. Selections against a naive full-matrix selection;
// gradients against central finite differences of loss = sum(out * proj) (+ the entropy
// loss the op adds).
//
// Tolerances: see test_ops_dense.c. eps = 1e-2, max relative error < 5e-3, floor 1e-3.
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

// Naive top-K: every score of the [N, rows] matrix, then K passes of "best remaining"
// (higher score, ties lower slot).
static void naive_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N,
                       int R, int rows, int row_offset, int K) {
    float *scores = test_zeros((size_t)rows);
    char *taken = calloc((size_t)rows, 1);
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < rows; i++) {
            double dot = 0;
            for (int j = 0; j < R; j++)
                dot += (double)p[n * R + j] * keys[i * R + j];
            scores[i] = (float)(dot / sqrt((double)R));
            taken[i] = 0;
        }
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int i = 0; i < rows; i++)
                if (!taken[i] && (best < 0 || scores[i] > scores[best]))
                    best = i; // strict >: the first (lowest) slot wins a tie
            taken[best] = 1;
            top_s[n * K + k] = scores[best];
            top_i[n * K + k] = row_offset + best;
        }
    }
    free(scores);
    free(taken);
}

// Token 0's pointer, scaled, copied into keys 3, 11 and 17: three exactly equal top scores.
static void plant_ties(float *keys, const float *p, int R) {
    const int dup[3] = {3, 11, 17};
    for (int d = 0; d < 3; d++)
        for (int j = 0; j < R; j++)
            keys[dup[d] * R + j] = 3.0f * p[j];
}

START_TEST(test_slot_topk) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(21);
    const int N = 6, R = 8, rows = 20, K = 4, row_offset = 37;
    float *p = test_random_buffer(&rng, N * R, 1), *keys = test_random_buffer(&rng, rows * R, 1);
    plant_ties(keys, p, R);
    float *top_s = test_zeros(N * K), *want_s = test_zeros(N * K);
    int32_t top_i[24], want_i[24];
    ops->slot_topk(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    naive_topk(want_s, want_i, p, keys, N, R, rows, row_offset, K);
    for (int i = 0; i < N * K; i++) {
        ck_assert_int_eq(top_i[i], want_i[i]);
        ck_assert_float_eq_tol(top_s[i], want_s[i], 1e-6f * (1 + fabsf(want_s[i])));
    }
    // token 0: the three tied keys come first, lower slot first, with equal scores
    ck_assert_int_eq(top_i[0], row_offset + 3);
    ck_assert_int_eq(top_i[1], row_offset + 11);
    ck_assert_int_eq(top_i[2], row_offset + 17);
    ck_assert(top_s[0] == top_s[1] && top_s[1] == top_s[2]);
    for (int n = 0; n < N; n++) // descending
        for (int k = 1; k < K; k++)
            ck_assert(top_s[n * K + k - 1] >= top_s[n * K + k]);
    free(p), free(keys), free(top_s), free(want_s);
}
END_TEST

// A shard with fewer rows than K pads with score -inf and slot -1.
START_TEST(test_slot_topk_short_shard) {
    TestRng rng = test_rng(22);
    const int N = 2, R = 4, rows = 2, K = 4;
    float *p = test_random_buffer(&rng, N * R, 1), *keys = test_random_buffer(&rng, rows * R, 1);
    float top_s[8];
    int32_t top_i[8];
    ops_cpu()->slot_topk(top_s, top_i, p, keys, N, R, rows, 10, K);
    for (int n = 0; n < N; n++) {
        ck_assert(top_i[n * K] >= 10 && top_i[n * K] < 12);
        ck_assert(top_i[n * K + 1] >= 10 && top_i[n * K + 1] < 12);
        ck_assert(top_i[n * K] != top_i[n * K + 1]);
        for (int k = 2; k < K; k++) {
            ck_assert_int_eq(top_i[n * K + k], -1);
            ck_assert(isinf(top_s[n * K + k]) && top_s[n * K + k] < 0);
        }
    }
    free(p), free(keys);
}
END_TEST

// Split the table into P shards, take each shard's top K, merge: the same as the top K of
// the whole table, ties included (the tied keys 3, 11, 17 sit in three different shards).
START_TEST(test_slot_topk_merge) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(23);
    const int N = 7, R = 8, rows = 20, K = 4, P = 3, row_offset = 0;
    const int shard_start[4] = {0, 7, 14, 20};
    float *p = test_random_buffer(&rng, N * R, 1), *keys = test_random_buffer(&rng, rows * R, 1);
    plant_ties(keys, p, R);
    float *cand_s = test_zeros(P * N * K);
    int32_t *cand_i = calloc(P * N * K, sizeof(int32_t));
    for (int part = 0; part < P; part++)
        ops->slot_topk(
            cand_s + part * N * K, cand_i + part * N * K, p, keys + shard_start[part] * R, N, R,
            shard_start[part + 1] - shard_start[part], row_offset + shard_start[part], K);
    float merged_s[28], whole_s[28];
    int32_t merged_i[28], whole_i[28];
    ops->slot_topk_merge(merged_s, merged_i, cand_s, cand_i, P, N, K);
    ops->slot_topk(whole_s, whole_i, p, keys, N, R, rows, row_offset, K);
    for (int i = 0; i < N * K; i++) {
        ck_assert_int_eq(merged_i[i], whole_i[i]);
        ck_assert(merged_s[i] == whole_s[i]);
    }
    ck_assert_int_eq(merged_i[0], 3);
    ck_assert_int_eq(merged_i[1], 11);
    ck_assert_int_eq(merged_i[2], 17);
    // merging a single list is the identity
    float one_s[28];
    int32_t one_i[28];
    ops->slot_topk_merge(one_s, one_i, whole_s, whole_i, 1, N, K);
    for (int i = 0; i < N * K; i++)
        ck_assert(one_i[i] == whole_i[i] && one_s[i] == whole_s[i]);
    free(p), free(keys), free(cand_s), free(cand_i);
}
END_TEST

// ---- slot read-out -------------------------------------------------------------------------

typedef struct ReadCtx {
    float *h, *top_s, *y, *w, *proj;
    float *values; // [rows, H]
    int32_t *idx;  // [N, K]
    float scale;   // entropy loss weight
    int N, K, H;
} ReadCtx;

// sum(y * proj) + scale * sum_t entropy_t (the part slot_read_forward adds to loss)
static double read_loss(void *p) {
    ReadCtx *c = p;
    float loss = 0.0f;
    ops_cpu()->slot_read_forward(c->y, c->w, &loss, c->h, c->top_s, c->values, c->idx, c->scale,
                                 c->N, c->K, c->H);
    return test_project(c->y, c->proj, (size_t)c->N * c->H) + loss;
}

static ReadCtx read_ctx(TestRng *rng, int N, int K, int H, int rows, float score_std,
                        float proj_std, float scale) {
    ReadCtx c = {.N = N, .K = K, .H = H, .scale = scale};
    c.h = test_random_buffer(rng, N * H, 1);
    c.top_s = test_random_buffer(rng, N * K, score_std);
    c.values = test_random_buffer(rng, rows * H, 1);
    c.idx = test_token_rows(rng, N, K, rows);
    c.y = test_zeros(N * H);
    c.w = test_zeros(N * K);
    c.proj = proj_std > 0 ? test_random_buffer(rng, N * H, proj_std) : test_zeros(N * H);
    return c;
}

static void read_ctx_free(ReadCtx *c) {
    free(c->h), free(c->top_s), free(c->values), free(c->idx), free(c->y), free(c->w);
    free(c->proj);
}

START_TEST(test_slot_read) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(24);
    const int N = 5, K = 4, H = 6, rows = 9; // 20 reads of 9 rows: most rows read twice or more
    ReadCtx c = read_ctx(&rng, N, K, H, rows, 1, 1, 0.7f);
    float loss = 0.25f; // the op adds to what is there
    ops->slot_read_forward(c.y, c.w, &loss, c.h, c.top_s, c.values, c.idx, c.scale, N, K, H);
    double entropy_sum = 0;
    for (int n = 0; n < N; n++) { // naive softmax, read-out and entropy
        double max_s = -INFINITY, sum = 0;
        for (int k = 0; k < K; k++)
            max_s = fmax(max_s, c.top_s[n * K + k]);
        for (int k = 0; k < K; k++)
            sum += exp(c.top_s[n * K + k] - max_s);
        for (int k = 0; k < K; k++) {
            double wk = exp(c.top_s[n * K + k] - max_s) / sum;
            ck_assert_double_eq_tol(c.w[n * K + k], wk, 1e-6);
            entropy_sum -= wk * log(wk);
        }
        for (int j = 0; j < H; j++) {
            double want = c.h[n * H + j];
            for (int k = 0; k < K; k++)
                want += (double)c.w[n * K + k] * c.values[c.idx[n * K + k] * H + j];
            ck_assert_double_eq_tol(c.y[n * H + j], want, 1e-5);
        }
    }
    ck_assert_double_eq_tol(loss, 0.25 + 0.7 * entropy_sum, 1e-5);

    float *dh = test_zeros(N * H), *ds = test_random_buffer(&rng, N * K, 1); // ds overwrites
    float *dv = test_zeros(rows * H);                                        // dvalues accumulates
    ops->slot_read_backward(dh, ds, dv, c.proj, c.w, c.values, c.idx, c.scale, N, K, H);
    ck_assert_double_le(
        test_grad_check("slot_read dh", read_loss, &c, c.h, N * H, dh, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    ck_assert_double_le(test_grad_check("slot_read dtop_s (with entropy)", read_loss, &c, c.top_s,
                                        N * K, ds, 1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    // every row of the table, those read by several tokens and those read by none
    ck_assert_double_le(test_grad_check("slot_read dvalues", read_loss, &c, c.values, rows * H, dv,
                                        1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    // dh and dvalues accumulate; ds overwrites
    read_loss(&c); // w at the unperturbed inputs
    float *dh2 = test_copy_of(dh, N * H), *ds2 = test_copy_of(ds, N * K),
          *dv2 = test_copy_of(dv, rows * H);
    ops->slot_read_backward(dh2, ds2, dv2, c.proj, c.w, c.values, c.idx, c.scale, N, K, H);
    for (int i = 0; i < N * H; i++)
        ck_assert_float_eq_tol(dh2[i], 2 * dh[i], 1e-6f * (1 + fabsf(dh[i])));
    for (int i = 0; i < N * K; i++)
        ck_assert(ds2[i] == ds[i]);
    for (int i = 0; i < rows * H; i++)
        ck_assert_float_eq_tol(dv2[i], 2 * dv[i], 1e-6f * (1 + fabsf(dv[i])));
    read_ctx_free(&c);
    free(dh), free(ds), free(dv), free(dh2), free(ds2), free(dv2);
}
END_TEST

// The value rows' gradients add up in token order whatever the thread count: the same
// bits with one thread and with several.
START_TEST(test_slot_read_backward_thread_independent) {
#ifdef _OPENMP
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(26);
    const int N = 512, K = 8, H = 256, rows = 256; // 4 column chunks; each row read 16 times
    ReadCtx c = read_ctx(&rng, N, K, H, rows, 1, 1, 0.1f);
    read_loss(&c);
    float *dv[2], *dh = test_zeros(N * H), *ds = test_zeros(N * K);
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run == 0 ? 1 : 3);
        dv[run] = test_zeros(rows * H);
        ops->slot_read_backward(dh, ds, dv[run], c.proj, c.w, c.values, c.idx, c.scale, N, K, H);
    }
    omp_set_num_threads(1);
    ck_assert(memcmp(dv[0], dv[1], (size_t)rows * H * sizeof(float)) == 0);
    read_ctx_free(&c);
    free(dv[0]), free(dv[1]), free(dh), free(ds);
#endif
}
END_TEST

// The entropy term alone (dy = 0): its gradient pushes towards uniform weights, and the
// read-out term vanishes.
START_TEST(test_slot_read_entropy_only) {
    TestRng rng = test_rng(25);
    const int N = 3, K = 5, H = 4, rows = 11;
    ReadCtx c = read_ctx(&rng, N, K, H, rows, 2, 0, 1.3f); // proj = 0: only the entropy loss
    read_loss(&c);
    float *dh = test_zeros(N * H), *ds = test_zeros(N * K), *dv = test_zeros(rows * H);
    ops_cpu()->slot_read_backward(dh, ds, dv, c.proj, c.w, c.values, c.idx, c.scale, N, K, H);
    ck_assert_double_le(test_grad_check("slot_read dtop_s (entropy only)", read_loss, &c, c.top_s,
                                        N * K, ds, 1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    for (int n = 0; n < N; n++) { // the largest score's gradient is negative (lower it)
        int best = 0;
        for (int k = 1; k < K; k++)
            if (c.top_s[n * K + k] > c.top_s[n * K + best])
                best = k;
        ck_assert(ds[n * K + best] < 0.0f);
    }
    read_ctx_free(&c);
    free(dh), free(ds), free(dv);
}
END_TEST

// ---- score backward, chained through slot_topk and gather_rows as the model uses them ------

typedef struct ScoreCtx {
    float *p, *keys, *top_s, *proj;
    int32_t *top_i;
    int N, R, rows, K;
} ScoreCtx;

static double score_loss(void *ctx) {
    ScoreCtx *c = ctx;
    ops_cpu()->slot_topk(c->top_s, c->top_i, c->p, c->keys, c->N, c->R, c->rows, 0, c->K);
    return test_project(c->top_s, c->proj, (size_t)c->N * c->K);
}

START_TEST(test_slot_score_backward) {
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(26);
    const int N = 4, R = 6, rows = 12, K = 3;
    // Spread-out scores so an eps step never changes which slots are chosen.
    ScoreCtx c = {test_random_buffer(&rng, N * R, 3),
                  test_random_buffer(&rng, rows * R, 3),
                  test_zeros(N * K),
                  test_random_buffer(&rng, N * K, 1),
                  calloc(N * K, sizeof(int32_t)),
                  N,
                  R,
                  rows,
                  K};
    score_loss(&c);
    int32_t chosen[12];
    memcpy(chosen, c.top_i, sizeof(chosen));
    float *krows = test_zeros(N * K * R);
    ops->gather_rows(krows, c.keys, c.top_i, N * K, R, 0);
    float *dp = test_zeros(N * R),
          *dkrows = test_random_buffer(&rng, N * K * R, 1); // dkrows overwrites
    ops->slot_score_backward(dp, dkrows, c.proj, c.p, krows, N, K, R);
    float *dkeys = test_zeros(rows * R);
    ops->scatter_add_rows(dkeys, dkrows, c.top_i, N * K, R, 0);
    ck_assert_double_le(
        test_grad_check("slot_score dp", score_loss, &c, c.p, N * R, dp, 1000, FD_EPS, FD_FLOOR),
        FD_TOL);
    ck_assert_double_le(test_grad_check("slot_score dkeys", score_loss, &c, c.keys, rows * R, dkeys,
                                        1000, FD_EPS, FD_FLOOR),
                        FD_TOL);
    score_loss(&c);
    ck_assert(memcmp(chosen, c.top_i, sizeof(chosen)) == 0);
    // dp accumulates, dkrows overwrites
    float *dp2 = test_copy_of(dp, N * R), *dk2 = test_copy_of(dkrows, N * K * R);
    ops->slot_score_backward(dp2, dk2, c.proj, c.p, krows, N, K, R);
    for (int i = 0; i < N * R; i++)
        ck_assert_float_eq_tol(dp2[i], 2 * dp[i], 1e-6f * (1 + fabsf(dp[i])));
    for (int i = 0; i < N * K * R; i++)
        ck_assert(dk2[i] == dkrows[i]);
    free(c.p), free(c.keys), free(c.top_s), free(c.proj), free(c.top_i);
    free(krows), free(dp), free(dkrows), free(dkeys), free(dp2), free(dk2);
}
END_TEST

static Suite *slot_suite(void) {
    Suite *s = suite_create("ops_slot");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, test_slot_topk);
    tcase_add_test(tc, test_slot_topk_short_shard);
    tcase_add_test(tc, test_slot_topk_merge);
    tcase_add_test(tc, test_slot_read);
    tcase_add_test(tc, test_slot_read_entropy_only);
    tcase_add_test(tc, test_slot_read_backward_thread_independent);
    tcase_add_test(tc, test_slot_score_backward);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(slot_suite());
}
