// Optimizer ops on the GPU: the sum of squares for the global gradient norm (a deterministic
// two-pass reduction: fixed per-block partials, then one block sums them in order) and the
// AdamW update on fp32 master weights.
#include "kernels/cuda/cuda_common.cuh"

#define SUMSQ_THREADS    256
#define SUMSQ_MAX_BLOCKS 1024
#define ADAMW_THREADS    256

// partial[block] = sum of x^2 over the block's grid-stride share. The grid depends only on n,
// so the result is the same every run.
__global__ void sum_squares_partial_kernel(float *partial, const float *x, size_t n) {
    float acc = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = acc;
}

// The AdamW settings of one call, the bias corrections included.
struct AdamwHyper {
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bias_correction1, bias_correction2;
};

// One parameter's update (the cpu oracle's formula, kernels/cpu/cpu_optim.c).
__device__ __forceinline__ void adamw_step(float &param, float grad, float &m, float &v,
                                           const AdamwHyper &h) {
    float g = grad * h.grad_scale;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    float m_hat = m / h.bias_correction1;
    float v_hat = v / h.bias_correction2;
    param -= h.lr * (m_hat / (sqrtf(v_hat) + h.eps) + h.weight_decay * param);
}

// Elements [head, head + 4 n4) as float4 (16-byte aligned in all four buffers), the rest one
// at a time. The update is bandwidth-bound (28 bytes an element); four 16-byte loads per
// thread and iteration keep more bytes in flight than scalar loads do.
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             size_t head, size_t n4, AdamwHyper h) {
    const size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float4 *p4 = reinterpret_cast<float4 *>(param + head);
    const float4 *g4 = reinterpret_cast<const float4 *>(grad + head);
    float4 *m4 = reinterpret_cast<float4 *>(m + head);
    float4 *v4 = reinterpret_cast<float4 *>(v + head);
    for (size_t i = first; i < n4; i += stride) {
        float4 p = p4[i], g = g4[i], mi = m4[i], vi = v4[i];
        adamw_step(p.x, g.x, mi.x, vi.x, h);
        adamw_step(p.y, g.y, mi.y, vi.y, h);
        adamw_step(p.z, g.z, mi.z, vi.z, h);
        adamw_step(p.w, g.w, mi.w, vi.w, h);
        p4[i] = p;
        m4[i] = mi;
        v4[i] = vi;
    }
    // the unaligned head and the tail: fewer than 4 + 3 elements
    const size_t rest = n - 4 * n4; // head + tail
    for (size_t r = first; r < rest; r += stride) {
        size_t i = r < head ? r : head + 4 * n4 + (r - head);
        adamw_step(param[i], grad[i], m[i], v[i], h);
    }
}

void cuda_sum_squares(float *out, const float *x, size_t n) {
    if (n == 0)
        return;
    int blocks = cuda_grid(n, SUMSQ_THREADS);
    if (blocks > SUMSQ_MAX_BLOCKS)
        blocks = SUMSQ_MAX_BLOCKS;
    float *partial = (float *)cuda_workspace((size_t)blocks * sizeof(float)); // [blocks]
    sum_squares_partial_kernel<<<blocks, SUMSQ_THREADS, 0, cuda_stream()>>>(partial, x, n);
    CUDA_CHECK_LAUNCH("sum_squares_partial_kernel");
    cuda_add_scaled_sum(out, partial, blocks, 1.0f);
}

void cuda_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                       int t) {
    if (n == 0)
        return;
    if (t < 1)
        hs_fatal_at(__FILE__, __LINE__, "adamw_update: step t = %d must be at least 1", t);
    // 1 - beta^t in double: for beta2 = 0.999 and small t the fp32 power loses digits.
    float bias_correction1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bias_correction2 = (float)(1.0 - pow((double)beta2, (double)t));
    const AdamwHyper h = {
        lr, beta1, beta2, eps, weight_decay, grad_scale, bias_correction1, bias_correction2};
    // The four buffers share their alignment when they are views at one offset into
    // allocations aligned alike (the optimizer's flat buffers); otherwise every element goes
    // the scalar way.
    const uintptr_t misalign = (uintptr_t)param & 15;
    const bool shared = ((uintptr_t)grad & 15) == misalign && ((uintptr_t)m & 15) == misalign &&
                        ((uintptr_t)v & 15) == misalign && misalign % sizeof(float) == 0;
    size_t head = shared ? ((16 - misalign) & 15) / sizeof(float) : n;
    if (head > n)
        head = n;
    const size_t n4 = (n - head) / 4;
    adamw_kernel<<<cuda_grid(n4 > 0 ? n4 : n, ADAMW_THREADS), ADAMW_THREADS, 0, cuda_stream()>>>(
        param, grad, m, v, n, head, n4, h);
    CUDA_CHECK_LAUNCH("adamw_kernel");
}
