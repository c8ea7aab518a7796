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

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float bias_correction1, float bias_correction2) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float m_i = beta1 * m[i] + (1.0f - beta1) * g;
        float v_i = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = m_i;
        v[i] = v_i;
        float m_hat = m_i / bias_correction1;
        float v_hat = v_i / bias_correction2;
        param[i] -= lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * param[i]);
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
    adamw_kernel<<<cuda_grid(n, ADAMW_THREADS), ADAMW_THREADS, 0, cuda_stream()>>>(
        param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, bias_correction1,
        bias_correction2);
    CUDA_CHECK_LAUNCH("adamw_kernel");
}
