// Router: counter-based Gumbel noise, top-n_sel selection per sequence (training) and the
// causal threshold rule (generation), all on the device with no host round trip.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_philox.cuh"

static const int GUMBEL_THREADS = 256;
#define SELECT_THREADS 1024 // select_topn_kernel assumes it (32 warps; SELECT_PER_THREAD)
static const int THRESHOLD_THREADS = 1024;
// select_topn: one block of SELECT_THREADS per sequence, each thread holding up to
// SELECT_PER_THREAD consecutive positions in registers.
static const int SELECT_MAX_T = CUDA_MAX_SEQ_LEN;
#define SELECT_PER_THREAD (CUDA_MAX_SEQ_LEN / SELECT_THREADS)
static_assert(SELECT_PER_THREAD * SELECT_THREADS == CUDA_MAX_SEQ_LEN && SELECT_PER_THREAD <= 32,
              "select_topn marks a thread's positions in 32 bits");

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

// The sum of `value` over lanes 0..lane of the warp (every lane of the warp calls it).
__device__ int warp_inclusive_scan(int value) {
    const int lane = threadIdx.x & 31;
    for (int offset = 1; offset < 32; offset <<= 1) {
        int up = __shfl_up_sync(0xffffffffu, value, offset);
        if (lane >= offset)
            value += up;
    }
    return value;
}

// Exclusive prefix sum over the block (blockDim.x = SELECT_THREADS = 32 warps) of one count
// per thread, in thread order. warp_sums [32] is shared scratch. Every thread calls it.
__device__ int block_exclusive_scan(int count, int *warp_sums) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int inclusive = warp_inclusive_scan(count);
    if (lane == 31)
        warp_sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0)
        warp_sums[lane] = warp_inclusive_scan(warp_sums[lane]); // inclusive over the warps
    __syncthreads();
    const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + inclusive - count;
    __syncthreads(); // warp_sums may be reused
    return before;
}

// One block per sequence. The selection is the n_sel smallest (descending_key(z), position)
// pairs: the n_sel largest z, ties to the lower position. Found without sorting:
//   1. radix select, 8 bits at a time from the top, of tau = the n_sel-th smallest key
//      (a shared histogram of the keys that match the digits found so far, one pass each);
//   2. every key below tau is in, and of the keys equal to tau the `need` at the lowest
//      positions (a prefix count over the block, in position order);
//   3. a prefix count of the chosen positions gives each its place in sel, ascending.
// Thread i holds positions [i E, i E + E), E = ceil(T / blockDim.x), so the prefix counts in
// thread order are in position order.   sel [B, n_sel], z [B, T]
__global__ void __launch_bounds__(SELECT_THREADS)
    select_topn_kernel(int32_t *sel, const float *z, int T, int n_sel) {
    __shared__ int histogram[256];
    __shared__ int warp_sums[32];
    __shared__ uint32_t chosen_digit;
    __shared__ int rank_in_digit;
    const int b = blockIdx.x;
    const int per_thread = (T + SELECT_THREADS - 1) / SELECT_THREADS;
    const int first = threadIdx.x * per_thread;
    uint32_t key[SELECT_PER_THREAD];
#pragma unroll
    for (int e = 0; e < SELECT_PER_THREAD; e++)
        key[e] = e < per_thread && first + e < T ? descending_key(z[(size_t)b * T + first + e]) : 0;
    auto owns = [&](int e) { return e < per_thread && first + e < T; };

    // 1. tau, digit by digit; `rank` is tau's 0-based rank among the keys with the prefix.
    uint32_t prefix = 0, prefix_mask = 0;
    int rank = n_sel - 1;
    for (int shift = 24; shift >= 0; shift -= 8) {
        if (threadIdx.x < 256)
            histogram[threadIdx.x] = 0;
        __syncthreads();
#pragma unroll
        for (int e = 0; e < SELECT_PER_THREAD; e++)
            if (owns(e) && (key[e] & prefix_mask) == prefix)
                atomicAdd(&histogram[(key[e] >> shift) & 255u], 1);
        __syncthreads();
        if (threadIdx.x < 32) { // lane l: digits [8 l, 8 l + 8)
            const int lane = threadIdx.x;
            int sum = 0;
            for (int d = 0; d < 8; d++)
                sum += histogram[8 * lane + d];
            const int inclusive = warp_inclusive_scan(sum);
            int below = inclusive - sum;
            if (below <= rank && rank < inclusive) {
                for (int d = 8 * lane;; d++) {
                    if (rank < below + histogram[d]) {
                        chosen_digit = (uint32_t)d;
                        rank_in_digit = rank - below;
                        break;
                    }
                    below += histogram[d];
                }
            }
        }
        __syncthreads();
        prefix |= chosen_digit << shift;
        prefix_mask |= 255u << shift;
        rank = rank_in_digit;
    }
    const uint32_t tau = prefix;
    const int need = rank + 1; // keys equal to tau that are chosen: the lowest positions

    // 2. the rank among the keys equal to tau, in position order.
    int equal = 0;
#pragma unroll
    for (int e = 0; e < SELECT_PER_THREAD; e++)
        equal += owns(e) && key[e] == tau;
    int equal_before = block_exclusive_scan(equal, warp_sums);
    uint32_t chosen = 0; // bit e: position first + e is selected
#pragma unroll
    for (int e = 0; e < SELECT_PER_THREAD; e++) {
        if (!owns(e))
            continue;
        if (key[e] < tau)
            chosen |= 1u << e;
        else if (key[e] == tau)
            chosen |= (uint32_t)(equal_before++ < need) << e;
    }

    // 3. the chosen positions, ascending.
    int at = block_exclusive_scan(__popc(chosen), warp_sums);
    int32_t *out = sel + (size_t)b * n_sel;
#pragma unroll
    for (int e = 0; e < SELECT_PER_THREAD; e++)
        if (chosen >> e & 1u)
            out[at++] = (int32_t)((size_t)b * T + first + e);
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
                    "select_topn: T = %d exceeds the %d positions one block holds in registers", T,
                    SELECT_MAX_T);
    if (B == 0)
        return;
    select_topn_kernel<<<B, SELECT_THREADS, 0, cuda_stream()>>>(sel, z, T, n_sel);
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
