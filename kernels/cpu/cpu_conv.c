// Causal depthwise convolution over time, per sequence and channel:
// out[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-Kc+1+j, c], with x = 0 before t = 0.
// Tap j = Kc-1 is the current token.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <stdlib.h>

void cpu_conv_forward(float *out, const float *x, const float *w, const float *bias, int B, int T,
                      int H, int Kc) {
#pragma omp parallel for if (cpu_worth_threads((double)B * T * H * Kc))
    for (int bt = 0; bt < B * T; bt++) {
        int b = bt / T, t = bt % T;
        float *orow = out + (size_t)bt * H; // [H]
        for (int c = 0; c < H; c++) {
            double acc = bias[c];
            for (int j = 0; j < Kc; j++) {
                int s = t - Kc + 1 + j;
                if (s >= 0)
                    acc += (double)w[(size_t)c * Kc + j] * x[((size_t)b * T + s) * H + c];
            }
            orow[c] = (float)acc;
        }
    }
}

// dx[b,s,c] += sum_j w[c,j] dout[b, s+Kc-1-j, c]  (the taps that read x[b,s,c])
// dw[c,j] += sum_{b,t} dout[b,t,c] x[b, t-Kc+1+j, c];  dbias[c] += sum_{b,t} dout[b,t,c]
void cpu_conv_backward(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                       const float *w, int B, int T, int H, int Kc) {
    if (dx) {
#pragma omp parallel for if (cpu_worth_threads((double)B * T * H * Kc))
        for (int bs = 0; bs < B * T; bs++) {
            int b = bs / T, s = bs % T;
            float *dxrow = dx + (size_t)bs * H; // [H]
            for (int c = 0; c < H; c++) {
                double acc = 0.0;
                for (int j = 0; j < Kc; j++) {
                    int t = s + Kc - 1 - j;
                    if (t < T)
                        acc += (double)w[(size_t)c * Kc + j] * dout[((size_t)b * T + t) * H + c];
                }
                dxrow[c] += (float)acc;
            }
        }
    }
    // Weight and bias sums over every token: serial over tokens, double accumulators.
    double *dw_acc = hs_calloc((size_t)H * Kc, sizeof(double)); // [H, Kc]
    double *db_acc = hs_calloc((size_t)H, sizeof(double));      // [H]
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *drow = dout + ((size_t)b * T + t) * H; // [H]
            for (int c = 0; c < H; c++) {
                db_acc[c] += drow[c];
                for (int j = 0; j < Kc; j++) {
                    int s = t - Kc + 1 + j;
                    if (s >= 0)
                        dw_acc[(size_t)c * Kc + j] +=
                            (double)drow[c] * x[((size_t)b * T + s) * H + c];
                }
            }
        }
    }
    for (size_t i = 0; i < (size_t)H * Kc; i++)
        dw[i] += (float)dw_acc[i];
    for (int c = 0; c < H; c++)
        dbias[c] += (float)db_acc[c];
    free(dw_acc);
    free(db_acc);
}
