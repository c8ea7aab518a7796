// Router: counter-based Gumbel noise, top-n_sel selection per sequence (training), and the
// causal threshold rule (generation).
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"
#include "kernels/philox.h"

#include <math.h>
#include <stdlib.h>

void cpu_gumbel_noise(float *out, uint64_t seed, uint32_t step, uint32_t layer, uint32_t seq_offset,
                      int B, int T) {
#pragma omp parallel for if (cpu_worth_threads((double)B * T * 64))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            out[(size_t)b * T + t] =
                philox_gumbel(seed, step, layer, seq_offset + (uint32_t)b, (uint32_t)t);
}

typedef struct ScoredPosition {
    float z;
    int t;
} ScoredPosition;

// Order: larger z first, ties (and equal NaNs) lower position first; NaN ranks below
// every number, so a NaN logit is never preferred.
static int compare_scored_desc(const void *pa, const void *pb) {
    const ScoredPosition *a = pa, *b = pb;
    int a_nan = isnan(a->z), b_nan = isnan(b->z);
    if (a_nan != b_nan)
        return a_nan ? 1 : -1;
    if (!a_nan && a->z != b->z)
        return a->z > b->z ? -1 : 1;
    return (a->t > b->t) - (a->t < b->t);
}

void cpu_select_topn(int32_t *sel, const float *z, int B, int T, int n_sel) {
    if (n_sel < 1 || n_sel > T)
        hs_fatal("select_topn: n_sel = %d must lie in [1, T = %d]", n_sel, T);
    ScoredPosition *order = hs_malloc((size_t)T * sizeof(ScoredPosition)); // [T]
    unsigned char *chosen = hs_malloc((size_t)T);                          // [T] 0/1
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            order[t].z = z[(size_t)b * T + t];
            order[t].t = t;
            chosen[t] = 0;
        }
        qsort(order, (size_t)T, sizeof(ScoredPosition), compare_scored_desc);
        for (int j = 0; j < n_sel; j++)
            chosen[order[j].t] = 1;
        // written back in ascending position order
        int32_t *out = sel + (size_t)b * n_sel;
        int written = 0;
        for (int t = 0; t < T; t++)
            if (chosen[t])
                out[written++] = (int32_t)((size_t)b * T + t);
    }
    free(order);
    free(chosen);
}

void cpu_select_threshold(int32_t *sel, int32_t *count, const float *r, int N) {
    int32_t written = 0;
    for (int n = 0; n < N; n++)
        if (r[n] > 0.0f) // sigmoid(r) > 0.5
            sel[written++] = n;
    count[0] = written;
}

void cpu_token_positions(int32_t *pos, const int32_t *idx, int M, int T) {
    for (int m = 0; m < M; m++)
        pos[m] = idx[m] % T;
}
