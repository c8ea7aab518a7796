// SQDK attention: each gathered query attends causally (by its original position qpos) to
// the dense keys of its sequence, through its GQA kv head h / (nh / nkv). Softmax in
// double with the running maximum subtracted; lse is saved so the backward recomputes the
// probabilities without storing them.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <math.h>
#include <stdlib.h>

static double dot_double(const float *a, const float *b, int n) {
    double acc = 0.0;
    for (int i = 0; i < n; i++)
        acc += (double)a[i] * b[i];
    return acc;
}

static void check_shapes(const char *op, int T, int nh, int nkv, const int32_t *qpos, int rows) {
    if (nkv <= 0 || nh % nkv != 0)
        hs_fatal("%s: n_heads %d is not a multiple of n_kv_heads %d", op, nh, nkv);
    for (int m = 0; m < rows; m++)
        if (qpos[m] < 0 || qpos[m] >= T)
            hs_fatal("%s: qpos[%d] = %d outside [0, T = %d)", op, m, qpos[m], T);
}

void cpu_attention_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    check_shapes("attention_forward", T, nh, nkv, qpos, B * Mq);
    const int group = nh / nkv; // query heads per kv head
    const double scale = 1.0 / sqrt((double)hd);
#pragma omp parallel if (cpu_worth_threads((double)B * Mq * nh * (T / 2 + 1) * hd))
    {
        double *scores = hs_malloc((size_t)T * sizeof(double)); // [T] one query's logits
        double *acc = hs_malloc((size_t)hd * sizeof(double));   // [hd] one output row
#pragma omp for
        for (int row = 0; row < B * Mq; row++) {
            int b = row / Mq;
            int last = qpos[row]; // keys 0..last are visible
            for (int h = 0; h < nh; h++) {
                int kvh = h / group;
                const float *qh = q + ((size_t)row * nh + h) * hd; // [hd]
                double max_score = -INFINITY;
                for (int s = 0; s <= last; s++) {
                    const float *ks = k + (((size_t)b * T + s) * nkv + kvh) * hd; // [hd]
                    scores[s] = dot_double(qh, ks, hd) * scale;
                    if (scores[s] > max_score)
                        max_score = scores[s];
                }
                double sum = 0.0;
                for (int d = 0; d < hd; d++)
                    acc[d] = 0.0;
                for (int s = 0; s <= last; s++) {
                    double p = exp(scores[s] - max_score);
                    sum += p;
                    const float *vs = v + (((size_t)b * T + s) * nkv + kvh) * hd; // [hd]
                    for (int d = 0; d < hd; d++)
                        acc[d] += p * vs[d];
                }
                float *oh = o + ((size_t)row * nh + h) * hd; // [hd]
                for (int d = 0; d < hd; d++)
                    oh[d] = (float)(acc[d] / sum);
                lse[(size_t)row * nh + h] = (float)(max_score + log(sum));
            }
        }
        free(scores);
        free(acc);
    }
}

// With P_s = exp(q.k_s * scale - lse), dP_s = dout . v_s, D = sum_s P_s dP_s:
//   dS_s = P_s (dP_s - D);  dq += scale sum_s dS_s k_s;  dk_s += scale dS_s q;  dv_s += P_s dout.
// Parallel over (sequence, kv head): each task owns the dk, dv rows of its kv head in its
// sequence and the dq rows of the query heads that read it, so no two threads write the
// same element and the summation order is fixed.
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *o, const float *lse,
                            const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    (void)o; // D is recomputed from P and dP in double, which is tighter than dout . o
    check_shapes("attention_backward", T, nh, nkv, qpos, B * Mq);
    const int group = nh / nkv;
    const double scale = 1.0 / sqrt((double)hd);
#pragma omp parallel if (cpu_worth_threads((double)B * Mq * nh * (T / 2 + 1) * hd))
    {
        double *prob = hs_malloc((size_t)T * sizeof(double));  // [T] P_s of one query
        double *dprob = hs_malloc((size_t)T * sizeof(double)); // [T] dP_s of one query
        double *dq_acc = hs_malloc((size_t)hd * sizeof(double));
#pragma omp for
        for (int task = 0; task < B * nkv; task++) {
            int b = task / nkv, kvh = task % nkv;
            for (int m = 0; m < Mq; m++) {
                int row = b * Mq + m;
                int last = qpos[row];
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    const float *qh = q + ((size_t)row * nh + h) * hd;     // [hd]
                    const float *doh = dout + ((size_t)row * nh + h) * hd; // [hd]
                    double row_lse = lse[(size_t)row * nh + h];
                    double D = 0.0;
                    for (int s = 0; s <= last; s++) {
                        size_t kv_at = (((size_t)b * T + s) * nkv + kvh) * hd;
                        prob[s] = exp(dot_double(qh, k + kv_at, hd) * scale - row_lse);
                        dprob[s] = dot_double(doh, v + kv_at, hd);
                        D += prob[s] * dprob[s];
                    }
                    for (int d = 0; d < hd; d++)
                        dq_acc[d] = 0.0;
                    for (int s = 0; s <= last; s++) {
                        size_t kv_at = (((size_t)b * T + s) * nkv + kvh) * hd;
                        double dscore = prob[s] * (dprob[s] - D) * scale;
                        const float *ks = k + kv_at;
                        float *dks = dk + kv_at;
                        float *dvs = dv + kv_at;
                        for (int d = 0; d < hd; d++) {
                            dq_acc[d] += dscore * ks[d];
                            dks[d] += (float)(dscore * qh[d]);
                            dvs[d] += (float)(prob[s] * doh[d]);
                        }
                    }
                    float *dqh = dq + ((size_t)row * nh + h) * hd;
                    for (int d = 0; d < hd; d++)
                        dqh[d] += (float)dq_acc[d];
                }
            }
        }
        free(prob);
        free(dprob);
        free(dq_acc);
    }
}
