// Deterministic reductions shared by the ops: the scalar sum of the loss ops (one block sums
// a short vector of per-row or per-block partial results in a fixed order, in double) and the
// column sums of the weight gradients (two passes over the whole GPU, see below).
#include "kernels/cuda/cuda_common.cuh"

// loss[0] += scale * sum(values[0..n)), in double, in a fixed order (thread i takes
// i, i + SUM_THREADS, ... in turn, then a tree over the threads). One block: n is a chunk's or
// a micro-batch's per-token losses (at most tens of thousands). The loop is unrolled so
// several loads are in flight at once; the additions keep their order.
static const int SUM_THREADS = 1024;
__global__ void __launch_bounds__(SUM_THREADS)
    add_scaled_sum_kernel(float *loss, const float *values, int n, float scale) {
    __shared__ double partial[SUM_THREADS];
    double acc = 0.0;
#pragma unroll 8
    for (int i = threadIdx.x; i < n; i += SUM_THREADS)
        acc += (double)values[i];
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = SUM_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride)
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        loss[0] += (float)((double)scale * partial[0]);
}

void cuda_add_scaled_sum(float *loss, const float *values, int n, float scale) {
    add_scaled_sum_kernel<<<1, SUM_THREADS, 0, cuda_stream()>>>(loss, values, n, scale);
    CUDA_CHECK_LAUNCH("add_scaled_sum_kernel");
}

// ---- column sums -----------------------------------------------------------------------
// The weight gradients that sum over tokens (db of a linear, dw of RMSNorm, dw and dbias of
// the causal conv) are column sums of [N, C] matrices with N = 16384 tokens and C ~ 512
// columns: a tall, thin reduction. It runs in two passes so that the whole GPU takes part
// and the result stays deterministic (no float atomics):
//   1. blocks of (column tile x chunk of rows): 32 x 8 threads, each thread VEC adjacent
//      columns (float4 loads when rows are 16-byte aligned), the 8 row lanes walking the
//      chunk's rows with stride 8; the lanes are summed in lane order and each block writes
//      one row of partial sums [chunks, C] to the workspace;
//   2. one thread per column sums the chunks (8 lanes with stride 8, then the lanes in
//      order) and adds the total into out.
// Each column's additions happen in an order fixed by N and C alone (the chunking does not
// depend on VEC), so the result repeats bit for bit, whatever the pointers' alignment.
// With one chunk (small N) the first pass adds into out directly.
//
// The general form, which the conv weight gradient also uses, sums lagged products: for
// each lag l in [0, lags),
//   out[c * out_stride + l * lag_step] += sum_n a[n, c] * b[n - l, c] * row_scale[n]
// over the rows n whose position in their sequence (n % period) is at least l, so a row
// never pairs with a row of the previous sequence. b and row_scale may be NULL (factor 1).
// The lag is blockIdx.x, the fastest-varying block index, so the blocks of all lags of one
// tile of rows run together and share its rows in L2.
static const int COLSUM_LANES = 32;    // threads along the columns (a warp)
static const int COLSUM_ROW_LANES = 8; // threads along the rows
static const int COLSUM_MAX_VEC = 4;
// Aim for about this many blocks in the first pass (four 256-thread blocks on each of the
// H100's 132 SMs fit at once), but give every row lane at least 4 rows.
static const int COLSUM_TARGET_BLOCKS = 512;
static const int COLSUM_MIN_CHUNK_ROWS = 4 * COLSUM_ROW_LANES;

template <int VEC> __device__ inline void load_columns(float (&dst)[VEC], const float *src) {
    if constexpr (VEC == 4) {
        float4 q = *reinterpret_cast<const float4 *>(src);
        dst[0] = q.x, dst[1] = q.y, dst[2] = q.z, dst[3] = q.w;
    } else {
        for (int v = 0; v < VEC; v++)
            dst[v] = src[v];
    }
}

// Pass 1. Grid (lags, column tiles of 32 * VEC, chunks of rows_per_chunk rows).
// partials [lags, chunks, C], or NULL: add into out (a single chunk).
template <int VEC>
__global__ void column_sum_partial_kernel(float *partials, float *out, int out_stride, int lag_step,
                                          const float *a, const float *b, const float *row_scale,
                                          int N, int C, int period, int rows_per_chunk) {
    __shared__ float lane_sums[COLSUM_ROW_LANES][COLSUM_LANES * COLSUM_MAX_VEC];
    const int lag = blockIdx.x, tile = blockIdx.y, chunk = blockIdx.z;
    const int tile_cols = COLSUM_LANES * VEC;
    const int c0 = tile * tile_cols + threadIdx.x * VEC; // this thread's first column
    const int row_end = min(N, (chunk + 1) * rows_per_chunk);
    float acc[VEC];
    for (int v = 0; v < VEC; v++)
        acc[v] = 0.0f;
    if (c0 < C) { // VEC = 4 only when C % 4 == 0: then all 4 columns exist
#pragma unroll 4
        for (int n = chunk * rows_per_chunk + threadIdx.y; n < row_end; n += COLSUM_ROW_LANES) {
            if (lag > 0 && n % period < lag)
                continue; // b's row would lie in the previous sequence
            float term[VEC];
            load_columns<VEC>(term, a + (size_t)n * C + c0);
            if (b) {
                float factor[VEC];
                load_columns<VEC>(factor, b + (size_t)(n - lag) * C + c0);
                for (int v = 0; v < VEC; v++)
                    term[v] *= factor[v];
            }
            if (row_scale) {
                float scale = row_scale[n];
                for (int v = 0; v < VEC; v++)
                    term[v] *= scale;
            }
            for (int v = 0; v < VEC; v++)
                acc[v] += term[v];
        }
    }
    for (int v = 0; v < VEC; v++)
        lane_sums[threadIdx.y][threadIdx.x * VEC + v] = acc[v];
    __syncthreads();
    // The tile's columns, one per thread, each summed over the row lanes in lane order.
    const int t = threadIdx.y * COLSUM_LANES + threadIdx.x;
    const int c = tile * tile_cols + t;
    if (t < tile_cols && c < C) {
        float total = 0.0f;
        for (int lane = 0; lane < COLSUM_ROW_LANES; lane++)
            total += lane_sums[lane][t];
        if (partials)
            partials[((size_t)lag * gridDim.z + chunk) * C + c] = total;
        else
            out[(size_t)c * out_stride + (ptrdiff_t)lag * lag_step] += total;
    }
}

// Pass 2. Grid (column tiles of 32, lags). partials [lags, chunks, C].
__global__ void column_sum_finish_kernel(float *out, int out_stride, int lag_step,
                                         const float *partials, int chunks, int C) {
    __shared__ float lane_sums[COLSUM_ROW_LANES][COLSUM_LANES];
    const int lag = blockIdx.y;
    const int c = blockIdx.x * COLSUM_LANES + threadIdx.x;
    const float *mine = partials + (size_t)lag * chunks * C; // [chunks, C]
    float acc = 0.0f;
    if (c < C)
        for (int k = threadIdx.y; k < chunks; k += COLSUM_ROW_LANES)
            acc += mine[(size_t)k * C + c];
    lane_sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float total = 0.0f;
        for (int lane = 0; lane < COLSUM_ROW_LANES; lane++)
            total += lane_sums[lane][threadIdx.x];
        out[(size_t)c * out_stride + (ptrdiff_t)lag * lag_step] += total;
    }
}

static int is_aligned_16(const void *ptr) {
    return ((uintptr_t)ptr & 15u) == 0;
}

// Rows per chunk of pass 1: a multiple of the row lanes, chosen from N, C and lags only
// (never from the alignment), so the order of the additions is a function of the shape.
static int column_sum_chunk_rows(int N, int C, int lags) {
    const int nominal_tiles =
        (C + COLSUM_LANES * COLSUM_MAX_VEC - 1) / (COLSUM_LANES * COLSUM_MAX_VEC);
    const int blocks_per_chunk = nominal_tiles * lags;
    int chunks = (COLSUM_TARGET_BLOCKS + blocks_per_chunk - 1) / blocks_per_chunk;
    int rows = (N + chunks - 1) / chunks;
    rows = (rows + COLSUM_ROW_LANES - 1) / COLSUM_ROW_LANES * COLSUM_ROW_LANES;
    return rows < COLSUM_MIN_CHUNK_ROWS ? COLSUM_MIN_CHUNK_ROWS : rows;
}

// The general form (see the top of this section). lags >= 1; lags > 1 needs b; period >= 1
// (only read when lags > 1). out [C * out_stride] as addressed; a, b [N, C]; row_scale [N].
void cuda_lagged_column_sums(float *out, int out_stride, int lag_step, const float *a,
                             const float *b, const float *row_scale, int N, int C, int period,
                             int lags) {
    if (N == 0 || C == 0)
        return;
    if (lags < 1 || lags > 65535 || (lags > 1 && (!b || period < 1)))
        hs_fatal_at(__FILE__, __LINE__,
                    "cuda_lagged_column_sums: %d lags with b %s and period %d (need 1..65535 "
                    "lags; more than one needs b and a period >= 1)",
                    lags, b ? "given" : "NULL", period);
    const int rows_per_chunk = column_sum_chunk_rows(N, C, lags);
    const int chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    float *partials = NULL; // [lags, chunks, C]
    if (chunks > 1)
        partials = (float *)cuda_workspace((size_t)lags * chunks * C * sizeof(float));
    cudaStream_t stream = cuda_stream();
    const dim3 block(COLSUM_LANES, COLSUM_ROW_LANES);
    const int vec4 = C % 4 == 0 && is_aligned_16(a) && (!b || is_aligned_16(b));
    if (vec4) {
        const dim3 grid(lags, (C + COLSUM_LANES * 4 - 1) / (COLSUM_LANES * 4), chunks);
        column_sum_partial_kernel<4><<<grid, block, 0, stream>>>(
            partials, out, out_stride, lag_step, a, b, row_scale, N, C, period, rows_per_chunk);
    } else {
        const dim3 grid(lags, (C + COLSUM_LANES - 1) / COLSUM_LANES, chunks);
        column_sum_partial_kernel<1><<<grid, block, 0, stream>>>(
            partials, out, out_stride, lag_step, a, b, row_scale, N, C, period, rows_per_chunk);
    }
    CUDA_CHECK_LAUNCH("column_sum_partial_kernel");
    if (!partials)
        return;
    const dim3 finish_grid((C + COLSUM_LANES - 1) / COLSUM_LANES, lags);
    column_sum_finish_kernel<<<finish_grid, block, 0, stream>>>(out, out_stride, lag_step, partials,
                                                                chunks, C);
    CUDA_CHECK_LAUNCH("column_sum_finish_kernel");
}

// out[c] += sum_n a[n, c] * (b ? b[n, c] : 1) * (row_scale ? row_scale[n] : 1)
// out [C]; a, b [N, C]; row_scale [N]. Uses the workspace (see cuda_workspace).
void cuda_column_sum(float *out, const float *a, const float *b, const float *row_scale, int N,
                     int C) {
    cuda_lagged_column_sums(out, 1, 0, a, b, row_scale, N, C, N > 0 ? N : 1, 1);
}
