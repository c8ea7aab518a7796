// Deterministic scalar reductions shared by the loss ops: one block sums a short vector of
// per-row (or per-block) partial results in a fixed order, in double.
#include "kernels/cuda/cuda_common.cuh"

static const int REDUCE_THREADS = 256;

// loss[0] += scale * sum(values[0..n))
__global__ void add_scaled_sum_kernel(float *loss, const float *values, int n, float scale) {
    __shared__ double partial[REDUCE_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        acc += (double)values[i];
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride)
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        loss[0] += (float)((double)scale * partial[0]);
}

void cuda_add_scaled_sum(float *loss, const float *values, int n, float scale) {
    add_scaled_sum_kernel<<<1, REDUCE_THREADS, 0, cuda_stream()>>>(loss, values, n, scale);
    CUDA_CHECK_LAUNCH("add_scaled_sum_kernel");
}

// Column sums over rows, for the weight gradients that sum over tokens:
// out[c] += sum_n a[n, c] * (b ? b[n, c] : 1) * (row_scale ? row_scale[n] : 1)
// Block (32 columns x 8 row lanes); each lane walks rows in a fixed stride and the 8 lanes
// are summed in a fixed order, so the result is deterministic.
static const int COLSUM_COLS = 32, COLSUM_ROW_LANES = 8;

__global__ void column_sum_kernel(float *out, const float *a, const float *b,
                                  const float *row_scale, int N, int C) {
    __shared__ float partial[COLSUM_ROW_LANES][COLSUM_COLS];
    int c = blockIdx.x * COLSUM_COLS + threadIdx.x;
    float acc = 0.0f;
    if (c < C) {
        for (int n = threadIdx.y; n < N; n += COLSUM_ROW_LANES) {
            float term = a[(size_t)n * C + c];
            if (b)
                term *= b[(size_t)n * C + c];
            if (row_scale)
                term *= row_scale[n];
            acc += term;
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float total = 0.0f;
        for (int lane = 0; lane < COLSUM_ROW_LANES; lane++)
            total += partial[lane][threadIdx.x];
        out[c] += total;
    }
}

void cuda_column_sum(float *out, const float *a, const float *b, const float *row_scale, int N,
                     int C) {
    if (N == 0 || C == 0)
        return;
    dim3 block(COLSUM_COLS, COLSUM_ROW_LANES);
    int grid = (C + COLSUM_COLS - 1) / COLSUM_COLS;
    column_sum_kernel<<<grid, block, 0, cuda_stream()>>>(out, a, b, row_scale, N, C);
    CUDA_CHECK_LAUNCH("column_sum_kernel");
}
