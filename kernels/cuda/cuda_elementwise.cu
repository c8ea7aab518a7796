// Elementwise ops (grid-stride loops over flat indices) and row gather/scatter (a row per
// thread row, vectorised: see below).
#include "kernels/cuda/cuda_common.cuh"

static const int ELEMENTWISE_THREADS = 256;

// ---- row gather / scatter -------------------------------------------------------------
// Block (threads_x, rows_per_block), 256 threads: threadIdx.y picks a row m (grid-stride over
// the rows), the x threads walk that row's units of VEC floats, so idx[m] is read once per
// row and a warp's loads and stores are contiguous. VEC = 4 (float4) when D % 4 == 0 and
// both buffers are 16-byte aligned, else 1.
static const int ROWS_THREADS = 256;

// out[m, :] = table[idx[m] - row_offset, :]      out [M, D], table [rows, D], idx [M]
template <int VEC>
__global__ void gather_rows_kernel(float *out, const float *table, const int32_t *idx, int M, int D,
                                   int row_offset) {
    const int units = D / VEC;
    for (int m = blockIdx.y * blockDim.y + threadIdx.y; m < M; m += gridDim.y * blockDim.y) {
        const float *src = table + (size_t)(idx[m] - row_offset) * D;
        float *dst = out + (size_t)m * D;
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < units;
             u += gridDim.x * blockDim.x) {
            if constexpr (VEC == 4)
                reinterpret_cast<float4 *>(dst)[u] = reinterpret_cast<const float4 *>(src)[u];
            else
                dst[u] = src[u];
        }
    }
}

// dtable[idx[m] - row_offset, :] += drows[m, :]. Indices may repeat (a token seen twice,
// a slot read by many tokens), so the adds are atomic: the order of the float additions,
// hence the last bits of the result, varies from run to run (atomic_add_float4 takes four
// floats at once).
template <int VEC>
__global__ void scatter_add_rows_kernel(float *dtable, const float *drows, const int32_t *idx,
                                        int M, int D, int row_offset) {
    const int units = D / VEC;
    for (int m = blockIdx.y * blockDim.y + threadIdx.y; m < M; m += gridDim.y * blockDim.y) {
        float *dst = dtable + (size_t)(idx[m] - row_offset) * D;
        const float *src = drows + (size_t)m * D;
        for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < units;
             u += gridDim.x * blockDim.x) {
            if constexpr (VEC == 4) {
                atomic_add_float4(reinterpret_cast<float4 *>(dst) + u,
                                  reinterpret_cast<const float4 *>(src)[u]);
            } else {
                atomicAdd(dst + u, src[u]);
            }
        }
    }
}

// The launch shape of the row kernels for rows of `units` vectors: x threads cover a row
// (a multiple of 32, at most 256), the rest of the 256 threads take further rows.
static void rows_launch_shape(int units, int M, dim3 *grid, dim3 *block) {
    int threads_x = (units + 31) / 32 * 32;
    if (threads_x > ROWS_THREADS)
        threads_x = ROWS_THREADS;
    const int rows_per_block = ROWS_THREADS / threads_x;
    const int blocks_x = (units + threads_x - 1) / threads_x;
    int blocks_y = (M + rows_per_block - 1) / rows_per_block;
    if (blocks_y > 65535)
        blocks_y = 65535; // the kernels loop over the rest
    *block = dim3(threads_x, rows_per_block);
    *grid = dim3(blocks_x, blocks_y);
}

static int rows_vectorizable(const void *a, const void *b, int D) {
    return D % 4 == 0 && (((uintptr_t)a | (uintptr_t)b) & 15u) == 0;
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
    if (M == 0 || D == 0)
        return;
    dim3 grid, block;
    cudaStream_t stream = cuda_stream();
    if (rows_vectorizable(out, table, D)) {
        rows_launch_shape(D / 4, M, &grid, &block);
        gather_rows_kernel<4><<<grid, block, 0, stream>>>(out, table, idx, M, D, row_offset);
    } else {
        rows_launch_shape(D, M, &grid, &block);
        gather_rows_kernel<1><<<grid, block, 0, stream>>>(out, table, idx, M, D, row_offset);
    }
    CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void cuda_scatter_add_rows(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                           int row_offset) {
    if (M == 0 || D == 0)
        return;
    dim3 grid, block;
    cudaStream_t stream = cuda_stream();
    if (rows_vectorizable(dtable, drows, D)) {
        rows_launch_shape(D / 4, M, &grid, &block);
        scatter_add_rows_kernel<4>
            <<<grid, block, 0, stream>>>(dtable, drows, idx, M, D, row_offset);
    } else {
        rows_launch_shape(D, M, &grid, &block);
        scatter_add_rows_kernel<1>
            <<<grid, block, 0, stream>>>(dtable, drows, idx, M, D, row_offset);
    }
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
