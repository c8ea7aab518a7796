// The attention gate: selected token idx[m] adds sigmoid(r[idx[m]]) * y[m] to the residual
// stream h (gate fixed at 1 when r is NULL, the attn=dense variant).
#include "kernels/cpu/cpu_ops.h"

#include <math.h>

static double gate_of(const float *r, int32_t token) {
    return r ? 1.0 / (1.0 + exp(-(double)r[token])) : 1.0;
}

// Serial over m: += into h must not race should two rows name the same token.
void cpu_gated_scatter_add(float *h, const float *y, const float *r, const int32_t *idx, int M,
                           int H) {
    for (int m = 0; m < M; m++) {
        double g = gate_of(r, idx[m]);
        float *hrow = h + (size_t)idx[m] * H;  // [H]
        const float *yrow = y + (size_t)m * H; // [H]
        for (int j = 0; j < H; j++)
            hrow[j] += (float)(g * yrow[j]);
    }
}

// dy[m] = g * dh[idx[m]] (overwrites); dr[idx[m]] += g (1 - g) <dh[idx[m]], y[m]>
void cpu_gated_scatter_add_backward(float *dy, float *dr, const float *dh, const float *y,
                                    const float *r, const int32_t *idx, int M, int H) {
    for (int m = 0; m < M; m++) {
        double g = gate_of(r, idx[m]);
        const float *dhrow = dh + (size_t)idx[m] * H; // [H]
        const float *yrow = y + (size_t)m * H;        // [H]
        float *dyrow = dy + (size_t)m * H;            // [H]
        double dh_dot_y = 0.0;
        for (int j = 0; j < H; j++) {
            dyrow[j] = (float)(g * dhrow[j]);
            dh_dot_y += (double)dhrow[j] * yrow[j];
        }
        if (dr && r)
            dr[idx[m]] += (float)(g * (1.0 - g) * dh_dot_y);
    }
}
