// Rotary position embedding, GPT-NeoX layout: within each head, element i is paired with
// element i + hd/2 and the pair is rotated by pos * theta^(-2i/hd).
#include "kernels/cpu/cpu_ops.h"

#include <math.h>

// Rotate every pair of x [M, nheads, hd] by sign * angle (sign -1 undoes the rotation).
static void rope_rotate(float *x, const int32_t *pos, int M, int nheads, int hd, float theta,
                        double sign) {
    int half = hd / 2;
#pragma omp parallel for if (cpu_worth_threads((double)M * hd * nheads))
    for (int m = 0; m < M; m++) {
        for (int i = 0; i < half; i++) {
            double inv_freq = pow((double)theta, -2.0 * i / hd);
            double angle = sign * (double)pos[m] * inv_freq;
            double c = cos(angle), s = sin(angle);
            for (int h = 0; h < nheads; h++) {
                float *head = x + ((size_t)m * nheads + h) * hd; // [hd]
                double x1 = head[i], x2 = head[i + half];
                head[i] = (float)(x1 * c - x2 * s);
                head[i + half] = (float)(x1 * s + x2 * c);
            }
        }
    }
}

void cpu_rope_forward(float *x, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(x, pos, M, nheads, hd, theta, 1.0);
}

// The rotation is orthogonal, so its transpose (the backward) is the rotation by -angle.
void cpu_rope_backward(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(dx, pos, M, nheads, hd, theta, -1.0);
}
