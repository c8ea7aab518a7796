// RMSNorm: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + 1e-6), one rstd per token.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <math.h>
#include <stdlib.h>

static const double RMSNORM_EPS = 1e-6;

void cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int H) {
#pragma omp parallel for if (cpu_worth_threads((double)N * H))
    for (int n = 0; n < N; n++) {
        const float *xrow = x + (size_t)n * H; // [H]
        float *orow = out + (size_t)n * H;     // [H]
        double sum_sq = 0.0;
        for (int j = 0; j < H; j++)
            sum_sq += (double)xrow[j] * xrow[j];
        double r = 1.0 / sqrt(sum_sq / H + RMSNORM_EPS);
        rstd[n] = (float)r;
        for (int j = 0; j < H; j++)
            orow[j] = (float)(xrow[j] * r * w[j]);
    }
}

// With g = dout * w:  dx_j = rstd * g_j - x_j * rstd^3 * mean_i(g_i x_i);
// dw_j = sum_n dout_nj * x_nj * rstd_n.
void cpu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int H) {
    if (dx) {
#pragma omp parallel for if (cpu_worth_threads((double)N * H))
        for (int n = 0; n < N; n++) {
            const float *xrow = x + (size_t)n * H;    // [H]
            const float *drow = dout + (size_t)n * H; // [H]
            float *dxrow = dx + (size_t)n * H;        // [H]
            double r = rstd[n];
            double g_dot_x = 0.0;
            for (int j = 0; j < H; j++)
                g_dot_x += (double)drow[j] * w[j] * xrow[j];
            double coef = r * r * r * g_dot_x / H;
            for (int j = 0; j < H; j++)
                dxrow[j] += (float)(r * drow[j] * w[j] - coef * xrow[j]);
        }
    }
    // dw sums over tokens: serial over n into a double accumulator, so the result does not
    // depend on the thread count.
    double *dw_acc = hs_calloc((size_t)H, sizeof(double)); // [H]
    for (int n = 0; n < N; n++) {
        const float *xrow = x + (size_t)n * H;
        const float *drow = dout + (size_t)n * H;
        double r = rstd[n];
        for (int j = 0; j < H; j++)
            dw_acc[j] += (double)drow[j] * xrow[j] * r;
    }
    for (int j = 0; j < H; j++)
        dw[j] += (float)dw_acc[j];
    free(dw_acc);
}
