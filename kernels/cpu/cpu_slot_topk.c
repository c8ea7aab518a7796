// Slot selection: the K best slots of each token over one table shard, and the merge of the
// per-shard candidate lists into the global K best.
//
// Order everywhere: higher score first; equal scores, lower global slot first. A list that
// has fewer than K real candidates (a shard of fewer than K rows) is padded with score
// -inf and slot -1, which rank after every real slot.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <math.h>
#include <stdlib.h>

// Does (score a, slot ia) rank before (score b, slot ib)? Slot -1 (padding) compares as the
// largest unsigned id, so it loses every tie.
static int ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != b)
        return a > b;
    return (uint32_t)ia < (uint32_t)ib;
}

// Insert (score, slot) into the sorted list (s, ids) [K] if it beats the last entry.
static void topk_insert(float *s, int32_t *ids, int K, float score, int32_t slot) {
    if (!ranks_before(score, slot, s[K - 1], ids[K - 1]))
        return;
    int at = K - 1;
    while (at > 0 && ranks_before(score, slot, s[at - 1], ids[at - 1])) {
        s[at] = s[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }
    s[at] = score;
    ids[at] = slot;
}

static void topk_clear(float *s, int32_t *ids, int K) {
    for (int k = 0; k < K; k++) {
        s[k] = -INFINITY;
        ids[k] = -1;
    }
}

// Streams over the keys keeping each token's top K: no [N, rows] score matrix.
void cpu_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                   int rows, int row_offset, int K) {
    if (K < 1)
        hs_fatal("slot_topk: K = %d must be at least 1", K);
    const double inv_sqrt_r = 1.0 / sqrt((double)R);
#pragma omp parallel for if (cpu_worth_threads((double)N * rows * R))
    for (int n = 0; n < N; n++) {
        const float *pn = p + (size_t)n * R; // [R]
        float *s = top_s + (size_t)n * K;    // [K]
        int32_t *ids = top_i + (size_t)n * K;
        topk_clear(s, ids, K);
        for (int i = 0; i < rows; i++) {
            const float *key = keys + (size_t)i * R; // [R]
            double dot = 0.0;
            for (int j = 0; j < R; j++)
                dot += (double)pn[j] * key[j];
            topk_insert(s, ids, K, (float)(dot * inv_sqrt_r), row_offset + i);
        }
    }
}

void cpu_slot_topk_merge(float *top_s, int32_t *top_i, const float *cand_s, const int32_t *cand_i,
                         int P, int N, int K) {
#pragma omp parallel for if (cpu_worth_threads((double)N * P * K * K))
    for (int n = 0; n < N; n++) {
        float *s = top_s + (size_t)n * K; // [K]
        int32_t *ids = top_i + (size_t)n * K;
        topk_clear(s, ids, K);
        for (int part = 0; part < P; part++) {
            size_t at = ((size_t)part * N + n) * K; // cand [P, N, K]
            for (int k = 0; k < K; k++)
                topk_insert(s, ids, K, cand_s[at + k], cand_i[at + k]);
        }
    }
}
