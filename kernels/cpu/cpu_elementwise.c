// Elementwise ops: add, axpy, scale, GELU (tanh approximation) with its backward, and the
// conversions to and from bf16 storage.
#include "kernels/cpu/cpu_ops.h"

#include <math.h>
#include <string.h>

void cpu_add(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void cpu_axpy(float *y, float alpha, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

void cpu_scale(float *x, float alpha, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] *= alpha;
}

// GELU(x) = 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2 / pi)
static const double GELU_C = 0.79788456080286535588; // sqrt(2 / pi)
static const double GELU_A = 0.044715;

void cpu_gelu_forward(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        double inner = GELU_C * (xi + GELU_A * xi * xi * xi);
        out[i] = (float)(0.5 * xi * (1.0 + tanh(inner)));
    }
}

// dGELU/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3a x^2),  u = c (x + a x^3)
void cpu_gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        double th = tanh(GELU_C * (xi + GELU_A * xi * xi * xi));
        double dinner = GELU_C * (1.0 + 3.0 * GELU_A * xi * xi);
        double local = 0.5 * (1.0 + th) + 0.5 * xi * (1.0 - th * th) * dinner;
        dx[i] += (float)(local * dout[i]);
    }
}

// Round to nearest, ties to even, by adding just under half a bf16 unit (plus the kept
// bit's parity) to the fp32 bits and truncating; a carry into the exponent is the correct
// rounding up (to infinity at the top). NaN is kept a NaN: the add could carry its payload
// into the sign or turn it into infinity.
static uint16_t bf16_round(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x0040u); // quiet NaN, same sign
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

void cpu_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_round(src[i]);
}

void cpu_from_bf16(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &bits, sizeof(bits));
    }
}
