// Slot memory read-out: softmax weights over a token's K chosen slots, the weighted sum of
// their value rows added to the residual, the routing-entropy loss, and the backwards of the
// read-out and of the scores. The value rows are read where they are (values[idx[n*K + k]]),
// and their gradients added there.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <math.h>
#include <stdlib.h>

// w log w with the limit 0 at w = 0 (padding slots of score -inf get w = 0).
static double w_log_w(double w) {
    return w > 0.0 ? w * log(w) : 0.0;
}

void cpu_slot_read_forward(float *y, float *w, float *loss, const float *h, const float *top_s,
                           const float *values, const int32_t *idx, float scale, int N, int K,
                           int H) {
    // Per-token entropies summed serially afterwards: the loss does not depend on threads.
    double *entropy_of = hs_malloc((size_t)N * sizeof(double)); // [N]
#pragma omp parallel for if (cpu_worth_threads((double)N * K * H))
    for (int n = 0; n < N; n++) {
        const float *s = top_s + (size_t)n * K; // [K]
        float *wn = w + (size_t)n * K;          // [K]
        double max_s = s[0];
        for (int k = 1; k < K; k++)
            if (s[k] > max_s)
                max_s = s[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++)
            sum += exp((double)s[k] - max_s);
        double entropy = 0.0;
        for (int k = 0; k < K; k++) {
            double wk = exp((double)s[k] - max_s) / sum;
            wn[k] = (float)wk;
            entropy -= w_log_w(wk);
        }
        entropy_of[n] = entropy;
        const float *hn = h + (size_t)n * H;       // [H]
        float *yn = y + (size_t)n * H;             // [H]
        const int32_t *rows = idx + (size_t)n * K; // [K]
        for (int j = 0; j < H; j++) {
            double acc = hn[j];
            for (int k = 0; k < K; k++)
                acc += (double)wn[k] * values[(size_t)rows[k] * H + j];
            yn[j] = (float)acc;
        }
    }
    double entropy_sum = 0.0;
    for (int n = 0; n < N; n++)
        entropy_sum += entropy_of[n];
    free(entropy_of);
    loss[0] = (float)(loss[0] + scale * entropy_sum);
}

// dvalues[idx[n*K + k]] += w_nk dy_n, in token order. Tokens that read the same row add
// into it one after another, so the threads split the columns, not the tokens: the sums
// are the same at any thread count.
static void add_value_row_grads(float *dvalues, const float *dy, const float *w, const int32_t *idx,
                                int N, int K, int H) {
    enum { COLUMNS = 64 }; // a few cache lines of a row per thread
    const int chunks = (H + COLUMNS - 1) / COLUMNS;
#pragma omp parallel for if (cpu_worth_threads((double)N * K * H))
    for (int chunk = 0; chunk < chunks; chunk++) {
        const int j0 = chunk * COLUMNS, j1 = j0 + COLUMNS < H ? j0 + COLUMNS : H;
        for (size_t n = 0; n < (size_t)N; n++) {
            const float *dyn = dy + n * H; // [H]
            for (int k = 0; k < K; k++) {
                const float wk = w[n * K + k];
                float *dvk = dvalues + (size_t)idx[n * K + k] * H; // [H]
                for (int j = j0; j < j1; j++)
                    dvk[j] += wk * dyn[j];
            }
        }
    }
}

// y = h + sum_k w_k v_k, E = -sum_k w_k log w_k, w = softmax(s):
//   dh += dy;  dv_k = w_k dy;  dw_k = dy . v_k  (+ scale * dE/dw_k = -scale (log w_k + 1));
//   ds_k = w_k (dw_k - sum_j w_j dw_j).
// The entropy part simplifies to ds_k = -scale w_k (log w_k + E) (the +1 cancels).
void cpu_slot_read_backward(float *dh, float *ds, float *dvalues, const float *dy, const float *w,
                            const float *values, const int32_t *idx, float scale, int N, int K,
                            int H) {
#pragma omp parallel if (cpu_worth_threads((double)N * K * H))
    {
        double *dw = hs_malloc((size_t)K * sizeof(double)); // [K] dy . v_k of one token
#pragma omp for
        for (int n = 0; n < N; n++) {
            const float *dyn = dy + (size_t)n * H; // [H]
            const float *wn = w + (size_t)n * K;   // [K]
            float *dhn = dh + (size_t)n * H;       // [H]
            for (int j = 0; j < H; j++)
                dhn[j] += dyn[j];
            double entropy = 0.0;
            double dw_dot_w = 0.0;
            for (int k = 0; k < K; k++) {
                const float *vk = values + (size_t)idx[(size_t)n * K + k] * H; // [H]
                double acc = 0.0;
                for (int j = 0; j < H; j++)
                    acc += (double)dyn[j] * vk[j];
                dw[k] = acc;
                dw_dot_w += (double)wn[k] * acc;
                entropy -= w_log_w(wn[k]);
            }
            for (int k = 0; k < K; k++) {
                double wk = wn[k];
                double from_read = wk * (dw[k] - dw_dot_w);
                double from_entropy = wk > 0.0 ? -(double)scale * wk * (log(wk) + entropy) : 0.0;
                ds[(size_t)n * K + k] = (float)(from_read + from_entropy);
            }
        }
        free(dw);
    }
    add_value_row_grads(dvalues, dy, w, idx, N, K, H);
}

// s_tk = p_t . krows[t,k] / sqrt(R):  dp_t += sum_k ds_tk krows[t,k] / sqrt(R);
// dkrows[t,k] = ds_tk p_t / sqrt(R) (overwrites).
void cpu_slot_score_backward(float *dp, float *dkrows, const float *ds, const float *p,
                             const float *krows, int N, int K, int R) {
    const double inv_sqrt_r = 1.0 / sqrt((double)R);
#pragma omp parallel for if (cpu_worth_threads((double)N * K * R))
    for (int n = 0; n < N; n++) {
        const float *pn = p + (size_t)n * R; // [R]
        float *dpn = dp + (size_t)n * R;     // [R]
        for (int j = 0; j < R; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)ds[(size_t)n * K + k] * krows[((size_t)n * K + k) * R + j];
            dpn[j] += (float)(acc * inv_sqrt_r);
        }
        for (int k = 0; k < K; k++) {
            double d = ds[(size_t)n * K + k] * inv_sqrt_r;
            float *dk = dkrows + ((size_t)n * K + k) * R; // [R]
            for (int j = 0; j < R; j++)
                dk[j] = (float)(d * pn[j]);
        }
    }
}
