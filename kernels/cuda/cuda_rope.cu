// Rotary position embedding, GPT-NeoX layout: within each head, element i is paired with
// element i + hd/2 and the pair is rotated by pos * theta^(-2i/hd). The angle and its sine
// and cosine are taken in double: pos * inv_freq reaches thousands of radians, where fp32
// would lose the low bits that the cpu oracle keeps.
#include "kernels/cuda/cuda_common.cuh"

static const int ROPE_THREADS = 128;

// One thread per (row m, pair i); it rotates that pair in every head.  x [M, nheads, hd]
__global__ void rope_rotate_kernel(float *x, const int32_t *pos, int M, int nheads, int hd,
                                   float theta, double sign) {
    int half = hd / 2;
    size_t total = (size_t)M * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t m = idx / half;
        int i = (int)(idx % half);
        double inv_freq = pow((double)theta, -2.0 * i / hd);
        double angle = sign * (double)pos[m] * inv_freq;
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
    rope_rotate_kernel<<<cuda_grid(total, ROPE_THREADS), ROPE_THREADS, 0, cuda_stream()>>>(
        x, pos, M, nheads, hd, theta, sign);
    CUDA_CHECK_LAUNCH("rope_rotate_kernel");
}

void cuda_rope_forward(float *x, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(x, pos, M, nheads, hd, theta, 1.0);
}

// The rotation is orthogonal: its transpose (the backward) is the rotation by -angle.
void cuda_rope_backward(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta) {
    rope_rotate(dx, pos, M, nheads, hd, theta, -1.0);
}
