// Rotary position embedding, GPT-NeoX layout: within each head, element i is paired with
// element i + hd/2 and the pair is rotated by pos * theta^(-2i/hd). The angle and its sine
// and cosine are taken in double: pos * inv_freq reaches thousands of radians, where fp32
// would lose the low bits that the cpu oracle keeps. The frequencies theta^(-2i/hd) are the
// same for every row: the host computes them once per call, with the oracle's own pow, and
// passes them as a kernel argument (a pow per element cost more than the rest of the kernel).
#include "kernels/cuda/cuda_common.cuh"

#include <math.h>

static const int ROPE_THREADS = 128;

// inv_freq[i] = theta^(-2i/hd) for the pairs i < hd/2.
struct RopeFrequencies {
    double inv_freq[CUDA_MAX_HEAD_DIM / 2];
};

// One thread per (row m, pair i); it rotates that pair in every head.  x [M, nheads, hd]
__global__ void rope_rotate_kernel(float *x, const int32_t *pos, int M, int nheads, int hd,
                                   RopeFrequencies freqs, double sign) {
    const unsigned half = (unsigned)hd / 2;
    const size_t total = (size_t)M * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t m = idx / half;
        const int i = (int)(idx - m * half);
        double angle = sign * (double)pos[m] * freqs.inv_freq[i];
        double s, c;
        sincos(angle, &s, &c);
        for (int h = 0; h < nheads; h++) {
            float *head = x + (m * nheads + h) * hd;
            double x1 = head[i], x2 = head[i + half];
            head[i] = (float)(x1 * c - x2 * s);
            head[i + half] = (float)(x1 * s + x2 * c);
        }
    }
}

static void rope_rotate(float *x, const int32_t *pos, int M, int nheads, int hd, float theta,
                        double sign) {
    size_t total = (size_t)M * (hd / 2);
    if (total == 0)
        return;
    if (hd > CUDA_MAX_HEAD_DIM)
        hs_fatal_at(__FILE__, __LINE__, "rope: head_dim %d exceeds the cuda kernels' %d", hd,
                    CUDA_MAX_HEAD_DIM);
    RopeFrequencies freqs;
    for (int i = 0; i < hd / 2; i++)
        freqs.inv_freq[i] = pow((double)theta, -2.0 * i / hd);
    rope_rotate_kernel<<<cuda_grid(total, ROPE_THREADS), ROPE_THREADS, 0, cuda_stream()>>>(
        x, pos, M, nheads, hd, freqs, sign);
    CUDA_CHECK_LAUNCH("rope_rotate_kernel");
}

void cuda_rope_forward(float *x, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(x, pos, M, nheads, hd, theta, 1.0);
}

// The rotation is orthogonal: its transpose (the backward) is the rotation by -angle.
void cuda_rope_backward(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(dx, pos, M, nheads, hd, theta, -1.0);
}
