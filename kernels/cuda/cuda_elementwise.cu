// Elementwise ops and row gather/scatter. Grid-stride loops over flat indices.
#include "kernels/cuda/cuda_common.cuh"

static const int ELEMENTWISE_THREADS = 256;

// out[m, :] = table[idx[m] - row_offset, :]      out [M, D], table [rows, D], idx [M]
__global__ void gather_rows_kernel(float *out, const float *table, const int32_t *idx, int M, int D,
                                   int row_offset) {
    size_t total = (size_t)M * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t m = i / D, d = i % D;
        size_t row = (size_t)(idx[m] - row_offset);
        out[i] = table[row * D + d];
    }
}

// dtable[idx[m] - row_offset, :] += drows[m, :]. Indices may repeat (a token seen twice,
// a slot read by many tokens), so the adds are atomic: the order of the float additions,
// hence the last bits of the result, varies from run to run.
__global__ void scatter_add_rows_kernel(float *dtable, const float *drows, const int32_t *idx,
                                        int M, int D, int row_offset) {
    size_t total = (size_t)M * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t m = i / D, d = i % D;
        size_t row = (size_t)(idx[m] - row_offset);
        atomicAdd(&dtable[row * D + d], drows[i]);
    }
}

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void axpy_kernel(float *y, float alpha, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

__global__ void scale_kernel(float *x, float alpha, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

// GELU, tanh approximation: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Written as x * sigmoid(2u) (the same function, since 1 + tanh(u) = 2 sigmoid(2u)): for
// negative x, 1 + tanh(u) cancels to a few bits in fp32, the sigmoid form does not.
#define GELU_SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_CUBIC          0.044715f

__device__ inline float gelu_inner(float x) {
    return GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
}

__global__ void gelu_forward_kernel(float *out, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float xi = x[i];
        out[i] = xi / (1.0f + expf(-2.0f * gelu_inner(xi)));
    }
}

// dx += dout * GELU'(x); with s = sigmoid(2u): GELU = x s, GELU' = s + 2 x s (1 - s) u'(x)
__global__ void gelu_backward_kernel(float *dx, const float *dout, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float xi = x[i];
        float s = 1.0f / (1.0f + expf(-2.0f * gelu_inner(xi)));
        float dinner = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * xi * xi);
        float grad = s + 2.0f * xi * s * (1.0f - s) * dinner;
        dx[i] += dout[i] * grad;
    }
}

void cuda_gather_rows(float *out, const float *table, const int32_t *idx, int M, int D,
                      int row_offset) {
    size_t total = (size_t)M * D;
    if (total == 0)
        return;
    gather_rows_kernel<<<cuda_grid(total, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0,
                         cuda_stream()>>>(out, table, idx, M, D, row_offset);
    CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void cuda_scatter_add_rows(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                           int row_offset) {
    size_t total = (size_t)M * D;
    if (total == 0)
        return;
    scatter_add_rows_kernel<<<cuda_grid(total, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0,
                              cuda_stream()>>>(dtable, drows, idx, M, D, row_offset);
    CUDA_CHECK_LAUNCH("scatter_add_rows_kernel");
}

void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (n == 0)
        return;
    add_kernel<<<cuda_grid(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, cuda_stream()>>>(out, a,
                                                                                             b, n);
    CUDA_CHECK_LAUNCH("add_kernel");
}

void cuda_axpy(float *y, float alpha, const float *x, size_t n) {
    if (n == 0)
        return;
    axpy_kernel<<<cuda_grid(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, cuda_stream()>>>(
        y, alpha, x, n);
    CUDA_CHECK_LAUNCH("axpy_kernel");
}

void cuda_scale(float *x, float alpha, size_t n) {
    if (n == 0)
        return;
    scale_kernel<<<cuda_grid(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, cuda_stream()>>>(
        x, alpha, n);
    CUDA_CHECK_LAUNCH("scale_kernel");
}

void cuda_gelu_forward(float *out, const float *x, size_t n) {
    if (n == 0)
        return;
    gelu_forward_kernel<<<cuda_grid(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0,
                          cuda_stream()>>>(out, x, n);
    CUDA_CHECK_LAUNCH("gelu_forward_kernel");
}

void cuda_gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    if (n == 0)
        return;
    gelu_backward_kernel<<<cuda_grid(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0,
                           cuda_stream()>>>(dx, dout, x, n);
    CUDA_CHECK_LAUNCH("gelu_backward_kernel");
}
