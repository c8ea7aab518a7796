// RMSNorm: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + 1e-6). One block per token.
#include "kernels/cuda/cuda_common.cuh"

static const int RMSNORM_THREADS = 128;
#define RMSNORM_EPS 1e-6f

// out, x [N, H]; w [H]; rstd [N]
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *x, const float *w,
                                       int H) {
    const float *xrow = x + (size_t)blockIdx.x * H;
    float *orow = out + (size_t)blockIdx.x * H;
    float sum_sq = 0.0f;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        sum_sq += xrow[j] * xrow[j];
    sum_sq = block_sum(sum_sq);
    float r = rsqrtf(sum_sq / H + RMSNORM_EPS);
    if (threadIdx.x == 0)
        rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        orow[j] = xrow[j] * r * w[j];
}

// With g = dout * w: dx_j += rstd * g_j - x_j * rstd^3 * mean_i(g_i x_i)
__global__ void rmsnorm_backward_dx_kernel(float *dx, const float *dout, const float *x,
                                           const float *w, const float *rstd, int H) {
    size_t row = blockIdx.x;
    const float *xrow = x + row * H, *drow = dout + row * H;
    float *dxrow = dx + row * H;
    float g_dot_x = 0.0f;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        g_dot_x += drow[j] * w[j] * xrow[j];
    g_dot_x = block_sum(g_dot_x);
    float r = rstd[row];
    float coef = r * r * r * g_dot_x / H;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        dxrow[j] += r * drow[j] * w[j] - coef * xrow[j];
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int H) {
    if (N == 0)
        return;
    rmsnorm_forward_kernel<<<N, RMSNORM_THREADS, 0, cuda_stream()>>>(out, rstd, x, w, H);
    CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void cuda_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                           const float *rstd, int N, int H) {
    if (N == 0)
        return;
    if (dx) {
        rmsnorm_backward_dx_kernel<<<N, RMSNORM_THREADS, 0, cuda_stream()>>>(dx, dout, x, w, rstd,
                                                                             H);
        CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
    }
    // dw_j += sum_n dout_nj * x_nj * rstd_n
    cuda_column_sum(dw, dout, x, rstd, N, H);
}
