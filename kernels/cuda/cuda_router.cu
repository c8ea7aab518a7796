// Router: counter-based Gumbel noise, top-n_sel selection per sequence (training) and the
// causal threshold rule (generation), all on the device with no host round trip.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_philox.cuh"

static const int GUMBEL_THREADS = 256;
static const int SELECT_THREADS = 1024;
static const int THRESHOLD_THREADS = 1024;
// select_topn sorts one sequence in shared memory: 8 bytes per position, padded to a power
// of two. 16384 positions = 128 KiB, within an H100 block's 227 KiB.
static const int SELECT_MAX_T = CUDA_MAX_SEQ_LEN;

// out [B, T]
__global__ void gumbel_noise_kernel(float *out, uint64_t seed, uint32_t step, uint32_t layer,
                                    uint32_t seq_offset, int B, int T) {
    size_t total = (size_t)B * T;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t b = (uint32_t)(i / T), t = (uint32_t)(i % T);
        out[i] = philox_gumbel_device(seed, step, layer, seq_offset + b, t);
    }
}

// A 32-bit key that orders floats from largest to smallest as unsigned integers: the IEEE
// bits made monotone (flip all bits of negatives, the sign bit of positives), then inverted.
// -0 is folded into +0 (they compare equal); NaN sorts after every number.
__device__ inline uint32_t descending_key(float z) {
    if (isnan(z))
        return 0xFFFFFFFFu;
    if (z == 0.0f)
        z = 0.0f;
    uint32_t bits = __float_as_uint(z);
    uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ~ascending;
}

// Bitonic sort, ascending, of n (a power of two) 64-bit keys in shared memory.
__device__ void bitonic_sort_shared(unsigned long long *keys, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                int partner = i ^ stride;
                if (partner > i) {
                    bool ascending = (i & size) == 0;
                    unsigned long long a = keys[i], b = keys[partner];
                    if ((a > b) == ascending) {
                        keys[i] = b;
                        keys[partner] = a;
                    }
                }
            }
        }
    }
    __syncthreads();
}

// One block per sequence. Sort (descending z, ascending position) packed into one 64-bit key
// so ties go to the lower position; the first n_sel entries are the selection. A second
// sort of their positions writes them ascending.   sel [B, n_sel], z [B, T]
__global__ void select_topn_kernel(int32_t *sel, const float *z, int T, int n_sel, int padded_T) {
    extern __shared__ unsigned long long sort_keys[]; // [padded_T]
    int b = blockIdx.x;
    const float *zrow = z + (size_t)b * T;
    for (int t = threadIdx.x; t < padded_T; t += blockDim.x)
        sort_keys[t] =
            t < T ? ((unsigned long long)descending_key(zrow[t]) << 32) | (unsigned long long)t
                  : ~0ull;
    bitonic_sort_shared(sort_keys, padded_T);
    // Keep the chosen positions, push the rest past them, and sort again by position.
    for (int i = threadIdx.x; i < padded_T; i += blockDim.x)
        sort_keys[i] = i < n_sel ? (sort_keys[i] & 0xFFFFFFFFull) : ~0ull;
    bitonic_sort_shared(sort_keys, padded_T);
    for (int i = threadIdx.x; i < n_sel; i += blockDim.x)
        sel[(size_t)b * n_sel + i] = (int32_t)((size_t)b * T + (sort_keys[i] & 0xFFFFFFFFull));
}

// One block: a running prefix count over chunks of blockDim.x tokens writes the indices of
// tokens with r > 0 in ascending order.   sel [N], count [1], r [N]
__global__ void select_threshold_kernel(int32_t *sel, int32_t *count, const float *r, int N) {
    __shared__ int warp_totals[32];
    __shared__ int running;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    if (threadIdx.x == 0)
        running = 0;
    __syncthreads();
    for (int base = 0; base < N; base += blockDim.x) {
        int n = base + threadIdx.x;
        int is_query = (n < N && r[n] > 0.0f) ? 1 : 0; // sigmoid(r) > 0.5
        unsigned ballot = __ballot_sync(0xffffffffu, is_query);
        int rank_in_warp = __popc(ballot & ((1u << lane) - 1u));
        if (lane == 0)
            warp_totals[warp] = __popc(ballot);
        __syncthreads();
        int before = running;
        for (int w = 0; w < warp; w++)
            before += warp_totals[w];
        if (is_query)
            sel[before + rank_in_warp] = n;
        __syncthreads();
        if (threadIdx.x == 0)
            for (int w = 0; w < n_warps; w++)
                running += warp_totals[w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        count[0] = running;
}

void cuda_gumbel_noise(float *out, uint64_t seed, uint32_t step, uint32_t layer,
                       uint32_t seq_offset, int B, int T) {
    size_t total = (size_t)B * T;
    if (total == 0)
        return;
    gumbel_noise_kernel<<<cuda_grid(total, GUMBEL_THREADS), GUMBEL_THREADS, 0, cuda_stream()>>>(
        out, seed, step, layer, seq_offset, B, T);
    CUDA_CHECK_LAUNCH("gumbel_noise_kernel");
}

void cuda_select_topn(int32_t *sel, const float *z, int B, int T, int n_sel) {
    if (n_sel < 1 || n_sel > T)
        hs_fatal_at(__FILE__, __LINE__, "select_topn: n_sel = %d must lie in [1, T = %d]", n_sel,
                    T);
    if (T > SELECT_MAX_T)
        hs_fatal_at(__FILE__, __LINE__,
                    "select_topn: T = %d exceeds the %d positions one block sorts in shared "
                    "memory",
                    T, SELECT_MAX_T);
    if (B == 0)
        return;
    int padded_T = 1;
    while (padded_T < T)
        padded_T <<= 1;
    size_t shared_bytes = (size_t)padded_T * sizeof(unsigned long long);
    // Ask only for what this T needs: GPUs with less shared memory per block than the
    // 128 KiB of T = 16384 (sm_86/89: 99 KiB) still run the usual lengths.
    CUDA_CHECK(cudaFuncSetAttribute(select_topn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)shared_bytes));
    select_topn_kernel<<<B, SELECT_THREADS, shared_bytes, cuda_stream()>>>(sel, z, T, n_sel,
                                                                           padded_T);
    CUDA_CHECK_LAUNCH("select_topn_kernel");
}

void cuda_select_threshold(int32_t *sel, int32_t *count, const float *r, int N) {
    select_threshold_kernel<<<1, THRESHOLD_THREADS, 0, cuda_stream()>>>(sel, count, r, N);
    CUDA_CHECK_LAUNCH("select_threshold_kernel");
}

// pos [M] = idx [M] % T
__global__ void token_positions_kernel(int32_t *pos, const int32_t *idx, int M, int T) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m < M)
        pos[m] = idx[m] % T;
}

void cuda_token_positions(int32_t *pos, const int32_t *idx, int M, int T) {
    if (M <= 0)
        return;
    token_positions_kernel<<<(M + 255) / 256, 256, 0, cuda_stream()>>>(pos, idx, M, T);
    CUDA_CHECK_LAUNCH("token_positions_kernel");
}
