// Losses on the GPU: cross entropy over [N, V] logits (separate forward and backward, and
// fused: both plus the argmax in one kernel) and the router's route loss. Each
// forward writes one value per row (or sequence) to the workspace and adds their scaled sum
// with one block in a fixed order, so the loss is deterministic.
#include "kernels/cuda/cuda_common.cuh"

#define CE_THREADS    512
#define ROUTE_THREADS 1024 // one block a sequence (B blocks): as many threads as a block takes

// One block per row: ce[n] = logsumexp(logits[n]) - logits[n, target] (0 when ignored).
// logits [N, V]; targets [N]; ce [N]
__global__ void cross_entropy_forward_kernel(float *ce, const float *logits, const int32_t *targets,
                                             int V) {
    size_t n = blockIdx.x;
    int32_t target = targets[n];
    // A kernel cannot stop the job the way the cpu backend's check does: a target outside
    // [0, V) is read as ignored rather than read out of bounds (the data sources reject
    // tokens >= V before they get here).
    if (target < 0 || target >= V) { // the whole block takes this branch
        if (threadIdx.x == 0)
            ce[n] = 0.0f;
        return;
    }
    const float *row = logits + n * V;
    float row_max = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        row_max = fmaxf(row_max, row[j]);
    row_max = block_max(row_max);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        sum += expf(row[j] - row_max);
    sum = block_sum(sum);
    if (threadIdx.x == 0)
        ce[n] = logf(sum) + row_max - row[target];
}

// dlogits[n] = scale * (softmax(logits[n]) - onehot(target)), 0 on ignored rows. In place is
// fine: every element is read for the reductions before any is written, and then read and
// written by the same thread.
__global__ void cross_entropy_backward_kernel(float *dlogits, const float *logits,
                                              const int32_t *targets, float scale, int V) {
    size_t n = blockIdx.x;
    int32_t target = targets[n];
    const float *row = logits + n * V;
    float *drow = dlogits + n * V;
    if (target < 0 || target >= V) { // as in the forward
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            drow[j] = 0.0f;
        return;
    }
    float row_max = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        row_max = fmaxf(row_max, row[j]);
    row_max = block_max(row_max);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        sum += expf(row[j] - row_max);
    sum = block_sum(sum);
    float inv_sum = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float prob = expf(row[j] - row_max) * inv_sum;
        drow[j] = scale * (prob - (j == target ? 1.0f : 0.0f));
    }
}

// ---- fused cross entropy: loss, dlogits and argmax in one kernel -------------------------
//
// A block works through rows n = blockIdx.x, + gridDim.x, ... (the grid fills the GPU once:
// launch_cross_entropy_fused). Pass 1 reads a row from global memory once, each thread
// keeping online-softmax statistics of its part (the first maximum and its index, and the
// sum of exp(x - max), rescaled when the maximum rises: no second pass for the sum) and,
// when kCached, the row in shared memory; one block reduction gives the row's maximum,
// argmax and sum; pass 2 writes scale * (softmax - onehot) from the cached row (uncached:
// from global memory again, L2 catching part of it). With the row cached (V floats fit in
// the opt-in shared memory: V <= ~58k on an H100, the seed's 50257 included) each logit
// crosses DRAM once in and once out.
//
// Pass 2 of a row runs in the same sweep as pass 1 of the block's next row: each step issues
// the next row's loads, writes the gradient of the cached floats in the slots those loads go
// to, and only then caches them. With one block per SM (the cached row fills its shared
// memory) loads in flight are what keep DRAM busy, and so they stay in flight while a
// gradient is written; the SM's reads pause only around the one reduction a row. A thread
// visits the same slots in both passes, so it reads back only what it cached itself: the
// cache needs no barrier.
//
// Each thread's order is fixed and the reductions are fixed trees for a given blockDim: the
// results are deterministic (whichever block takes a row). The online sum differs from one
// taken in a second pass over exp(x - row max) by rounding only: a thread's partial sum is
// relative to its own running maximum and is rescaled by exp(old max - new max), exactly 1
// while the maximum stays; the reduction rescales the threads' sums to the row's maximum.

// A candidate (value, index) for the argmax; index CE_NO_INDEX = none yet.
#define CE_NO_INDEX 0x7fffffff

// Keep the better of two candidates: the larger value, ties to the lower index. Written so
// that merging is commutative (every lane of a butterfly ends with the same pair).
__device__ inline void argmax_merge(float &value, int &index, float other_value, int other_index) {
    bool take = index == CE_NO_INDEX ||
                (other_index != CE_NO_INDEX &&
                 (other_value > value || (other_value == value && other_index < index)));
    if (take) {
        value = other_value;
        index = other_index;
    }
}

// A thread's statistics of the part of a row it has read, or after block_row_stats the
// row's: the first maximum and its index (the argmax), and the sum of exp(x - offset) over
// the part, offset = softmax_offset(max). Nothing read yet: {-INFINITY, CE_NO_INDEX, 0}.
struct RowStats {
    float max;
    int argmax;
    float sum;
};

// What exp's argument subtracts from a logit: the maximum, but 0 while that is -inf (only
// -inf read so far), where x - max would be -inf - -inf = NaN in a sum that is still 0.
__device__ __forceinline__ float softmax_offset(float max) {
    return max == -INFINITY ? 0.0f : max;
}

// Fold a thread's next floats into its statistics: x [kLoads * kWidth], x[i * kWidth + e] at
// index first + i * step + e, in increasing index order, so the candidate stays the first
// maximum. The sum so far moves to the new maximum: times exp(old max - new max), which is 1
// while the maximum stays and 0 while the sum is empty.
template <int kLoads, int kWidth>
__device__ __forceinline__ void absorb(RowStats &stats, const float *x, int first, int step) {
    const float old_max = stats.max;
#pragma unroll
    for (int k = 0; k < kLoads * kWidth; k++)
        if (stats.argmax == CE_NO_INDEX || x[k] > stats.max) {
            stats.max = x[k];
            stats.argmax = first + k / kWidth * step + k % kWidth;
        }
    const float offset = softmax_offset(stats.max);
    float sum = stats.sum * expf(old_max - offset);
#pragma unroll
    for (int k = 0; k < kLoads * kWidth; k++)
        sum += expf(x[k] - offset);
    stats.sum = sum;
}

// Merge the statistics of another part of the same row into these. Commutative as
// argmax_merge is: the sum adds two rounded products (__fadd_rn keeps them from being
// contracted into an fma, which would round one side's product and not the other's).
__device__ __forceinline__ void row_stats_merge(RowStats &stats, const RowStats &other) {
    const float old_max = stats.max;
    argmax_merge(stats.max, stats.argmax, other.max, other.argmax);
    const float offset = softmax_offset(stats.max);
    stats.sum = __fadd_rn(stats.sum * expf(old_max - offset), other.sum * expf(other.max - offset));
}

__device__ inline void warp_row_stats(RowStats &stats) {
    for (int lanes = 16; lanes > 0; lanes >>= 1) {
        const RowStats other = {__shfl_xor_sync(0xffffffffu, stats.max, lanes),
                                __shfl_xor_sync(0xffffffffu, stats.argmax, lanes),
                                __shfl_xor_sync(0xffffffffu, stats.sum, lanes)};
        row_stats_merge(stats, other);
    }
}

// The row's statistics from every thread's part, in every thread. blockDim.x must be a
// multiple of 32. Calls may follow one another with no barrier between them: the warps'
// partials are written before the first barrier and read before the second, the result is
// written between the two and read after the second.
__device__ inline RowStats block_row_stats(RowStats stats) {
    __shared__ RowStats warp_stats[32];
    __shared__ RowStats row_stats;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    warp_row_stats(stats);
    if (lane == 0)
        warp_stats[warp] = stats;
    __syncthreads();
    if (warp == 0) {
        stats = lane < n_warps ? warp_stats[lane] : RowStats{-INFINITY, CE_NO_INDEX, 0.0f};
        warp_row_stats(stats);
        if (lane == 0)
            row_stats = stats;
    }
    __syncthreads();
    return row_stats;
}

// Elements [at, at + kWidth) of a row in global or shared memory, kWidth 1 or 4 (then `at` a
// multiple of 4 and the row 16-byte aligned). The row is indexed as float4s: offsetting a
// float pointer instead let the compiler split one of a step's stores into four.
template <int kWidth>
__device__ __forceinline__ void load_floats(float *x, const float *row, int at) {
    static_assert(kWidth == 1 || kWidth == 4);
    if constexpr (kWidth == 4) {
        const float4 v = reinterpret_cast<const float4 *>(row)[at >> 2];
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    } else {
        x[0] = row[at];
    }
}
template <int kWidth>
__device__ __forceinline__ void store_floats(float *row, int at, const float *x) {
    static_assert(kWidth == 1 || kWidth == 4);
    if constexpr (kWidth == 4)
        reinterpret_cast<float4 *>(row)[at >> 2] = make_float4(x[0], x[1], x[2], x[3]);
    else
        row[at] = x[0];
}

// A gradient element in the precision of the dlogits buffer (bf16: rounded to nearest).
__device__ __forceinline__ void store_grad(float *at, float value) {
    *at = value;
}
__device__ __forceinline__ void store_grad(__nv_bfloat16 *at, float value) {
    *at = __float2bfloat16_rn(value);
}

// Gradient elements [at, at + kWidth) of drow, g [kWidth], in one store (as store_floats).
template <int kWidth>
__device__ __forceinline__ void store_grads(float *drow, int at, const float *g) {
    store_floats<kWidth>(drow, at, g);
}
template <int kWidth>
__device__ __forceinline__ void store_grads(__nv_bfloat16 *drow, int at, const float *g) {
    static_assert(kWidth == 1 || kWidth == 4);
    if constexpr (kWidth == 4) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(g[0], g[1]),
                       hi = __floats2bfloat162_rn(g[2], g[3]);
        uint2 packed;
        packed.x = *reinterpret_cast<uint32_t *>(&lo);
        packed.y = *reinterpret_cast<uint32_t *>(&hi);
        reinterpret_cast<uint2 *>(drow)[at >> 2] = packed;
    } else {
        store_grad(drow + at, g[0]);
    }
}

// The row whose gradient pass 2 writes, with its statistics.
template <typename DOut> struct GradRow {
    DOut *drow;       // [ld_out]; NULL: no gradient to write
    const float *row; // [V] its logits in global memory (what the uncached kernel reads)
    int target;       // -1: an ignored row, written zero
    float row_max, inv_sum;
};

// One step of a sweep over kLoads loads of kWidth floats a thread, at first + i * step: pass 2
// writes grad's elements there, from the cached row (uncached: from grad.row); pass 1 reads
// those of `row` (NULL: none), folds them into stats and caches them in the slots pass 2 has
// just read. The loads are issued first, to be in flight while the gradient is written. In
// place (float dlogits aliasing the logits), the uncached kernel reads each element of
// grad.row before the same thread writes it, as the old per-pass kernels did.
template <bool kCached, int kWidth, int kLoads, typename DOut>
__device__ __forceinline__ void sweep_step(RowStats &stats, float *cached_row, const float *row,
                                           const GradRow<DOut> &grad, float scale, int first,
                                           int step) {
    float x[kLoads * kWidth];
    if (row)
#pragma unroll
        for (int i = 0; i < kLoads; i++)
            load_floats<kWidth>(x + i * kWidth, row, first + i * step);
    if (grad.drow)
#pragma unroll
        for (int i = 0; i < kLoads; i++) {
            const int at = first + i * step;
            float g[kWidth] = {};
            if (grad.target >= 0) {
                float logit[kWidth];
                load_floats<kWidth>(logit, kCached ? cached_row : grad.row, at);
#pragma unroll
                for (int e = 0; e < kWidth; e++) {
                    const float prob = expf(logit[e] - grad.row_max) * grad.inv_sum;
                    g[e] = scale * (prob - (at + e == grad.target ? 1.0f : 0.0f));
                }
            }
            store_grads<kWidth>(grad.drow, at, g);
        }
    if (row) {
        if (kCached)
#pragma unroll
            for (int i = 0; i < kLoads; i++)
                store_floats<kWidth>(cached_row, first + i * step, x + i * kWidth);
        absorb<kLoads, kWidth>(stats, x, first, step);
    }
}

// ce [N] (may be NULL), dlogits [N, ld_out] (may be NULL; may alias logits when DOut is
// float and ld_out = ld_in), argmax [N] (may be NULL); logits [N, ld_in] (first V columns);
// targets [N]. Columns [V, ld_out) of dlogits are written zero (the LM head's bf16 dlogits
// are a GEMM operand padded to 8 elements). kWidth 4: ld_in and ld_out multiples of 4, logits
// 16-byte and dlogits 4-element aligned (float4 loads, 4-element stores). Dynamic shared
// memory: V floats when kCached.
template <bool kCached, int kWidth, typename DOut>
__global__ void __launch_bounds__(1024)
    cross_entropy_fused_kernel(float *ce, DOut *dlogits, int ld_out, int32_t *argmax,
                               const float *logits, int ld_in, const int32_t *targets, float scale,
                               int N, int V) {
    extern __shared__ __align__(16) float cached_row[]; // [V] when kCached
    // Loads in flight a thread: 64 bytes as float4s, 32 as floats. One block holds a whole SM
    // when the row is cached, so the bytes in flight per thread set the bandwidth.
    constexpr int kLoads = kWidth == 4 ? 4 : 8;
    const int stride = blockDim.x, step = kWidth * stride;
    const int body = V / kWidth * kWidth; // [body, V): the last V % kWidth, one float a thread
    GradRow<DOut> grad = {NULL, NULL, -1, 0.0f, 0.0f}; // none before the first row
    for (int n = blockIdx.x;; n += gridDim.x) {
        const bool have_row = n < N; // else only the last row's pass 2 is left
        const int32_t target = have_row ? targets[n] : -1;
        // As cross_entropy_forward: a target outside [0, V) counts as ignored.
        const bool ignored = target < 0 || target >= V; // the same for the whole block
        // Pass 1 reads an ignored row only for its argmax.
        const float *row = have_row && (!ignored || argmax) ? logits + (size_t)n * ld_in : NULL;
        // The target's logit, read before any thread can overwrite the row in place (its
        // pass 2 starts after the barriers of its reduction).
        float target_logit = 0.0f;
        if (row && !ignored && threadIdx.x == 0)
            target_logit = row[target];
        RowStats stats = {-INFINITY, CE_NO_INDEX, 0.0f};
        if (row || grad.drow) {
            int first = kWidth * threadIdx.x;
            for (; first + (kLoads - 1) * step < body; first += kLoads * step)
                sweep_step<kCached, kWidth, kLoads>(stats, cached_row, row, grad, scale, first,
                                                    step);
            for (; first < body; first += step)
                sweep_step<kCached, kWidth, 1>(stats, cached_row, row, grad, scale, first, step);
            if (body + threadIdx.x < V) // after every index above
                sweep_step<kCached, 1, 1>(stats, cached_row, row, grad, scale, body + threadIdx.x,
                                          0);
            if (grad.drow)
                for (int k = V + threadIdx.x; k < ld_out; k += stride)
                    store_grad(grad.drow + k, 0.0f);
        }
        if (!have_row)
            break;
        if (row) {
            stats = block_row_stats(stats);
            if (argmax && threadIdx.x == 0)
                argmax[n] = stats.argmax;
        }
        // The row's sum is at least 1 when its maximum is finite (the maximum's own term is
        // exp(0) and rescales by exp(0)), so 1 / sum is finite as in the two-pass kernel.
        if (ce && threadIdx.x == 0)
            ce[n] = ignored ? 0.0f : logf(stats.sum) + stats.max - target_logit;
        grad = {dlogits ? dlogits + (size_t)n * ld_out : NULL, row, ignored ? -1 : target,
                stats.max, ignored ? 0.0f : 1.0f / stats.sum};
    }
}

// selected [B*T] = 1 at every flat index of sel [B*n_sel] (zeroed beforehand)
__global__ void mark_selected_kernel(float *selected, const int32_t *sel, int count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count)
        selected[sel[i]] = 1.0f;
}

__device__ inline float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

// One block per sequence: partial[b] = token_scale * sum_t BCEwithLogits(r_t, selected_t)
//                                    + seq_scale * (mean_t sigmoid(r_t) - rho)^2
__global__ void route_loss_forward_kernel(float *partial, const float *r, const float *selected,
                                          float rho, float token_scale, float seq_scale, int T) {
    size_t b = blockIdx.x;
    float bce = 0.0f, gate_sum = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        float x = r[b * T + t], label = selected[b * T + t];
        // max(x, 0) - x y + log(1 + exp(-|x|)): stable for large |x|
        bce += fmaxf(x, 0.0f) - x * label + log1pf(expf(-fabsf(x)));
        gate_sum += sigmoidf(x);
    }
    bce = block_sum(bce);
    gate_sum = block_sum(gate_sum);
    if (threadIdx.x == 0) {
        float excess = gate_sum / T - rho;
        partial[b] = token_scale * bce + seq_scale * excess * excess;
    }
}

// dr[b, t] += token_scale (sigmoid(r) - selected) + seq_scale 2 (mean - rho) g (1 - g) / T
__global__ void route_loss_backward_kernel(float *dr, const float *r, const float *selected,
                                           float rho, float token_scale, float seq_scale, int T) {
    size_t b = blockIdx.x;
    float gate_sum = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x)
        gate_sum += sigmoidf(r[b * T + t]);
    gate_sum = block_sum(gate_sum);
    float excess = gate_sum / T - rho;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        float gate = sigmoidf(r[b * T + t]);
        dr[b * T + t] += token_scale * (gate - selected[b * T + t]) +
                         seq_scale * 2.0f * excess * gate * (1.0f - gate) / T;
    }
}

void cuda_cross_entropy_forward(float *loss, const float *logits, const int32_t *targets,
                                float scale, int N, int V) {
    if (N == 0)
        return;
    float *ce = (float *)cuda_workspace((size_t)N * sizeof(float)); // [N]
    cross_entropy_forward_kernel<<<N, CE_THREADS, 0, cuda_stream()>>>(ce, logits, targets, V);
    CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
    cuda_add_scaled_sum(loss, ce, N, scale);
}

void cuda_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                 float scale, int N, int V) {
    if (N == 0)
        return;
    cross_entropy_backward_kernel<<<N, CE_THREADS, 0, cuda_stream()>>>(dlogits, logits, targets,
                                                                       scale, V);
    CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

// Threads per row: a large vocabulary wants many loads in flight per block (with the row
// cached, one block fills an SM's shared memory); a small one would leave threads idle.
static int fused_threads(int V) {
    return V >= 8192 ? 1024 : 256;
}

// The most dynamic shared memory one block of this device may opt in to.
static size_t max_shared_per_block(void) {
    int device = 0, bytes = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return (size_t)bytes;
}

// One launch of the fused kernel over N rows, its grid as many blocks as fit on the GPU at
// once (N at most): each block then takes rows in turn, so that it reads the next row while
// it writes the last one's gradient.
template <bool kCached, int kWidth, typename DOut>
static void launch_fused_kernel(float *ce, DOut *dlogits, int ld_out, int32_t *argmax,
                                const float *logits, int ld_in, const int32_t *targets, float scale,
                                int N, int V) {
    auto kernel = cross_entropy_fused_kernel<kCached, kWidth, DOut>;
    const int threads = fused_threads(V);
    const size_t shared_bytes = kCached ? (size_t)V * sizeof(float) : 0;
    if (kCached)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)shared_bytes));
    const int resident = cuda_resident_blocks(kernel, threads, shared_bytes);
    const int blocks = N < resident ? N : resident;
    kernel<<<blocks, threads, shared_bytes, cuda_stream()>>>(ce, dlogits, ld_out, argmax, logits,
                                                             ld_in, targets, scale, N, V);
    CUDA_CHECK_LAUNCH("cross_entropy_fused_kernel");
}

// The fused kernel over N rows: ce [N] per-row losses (NULL: none), see the kernel for the
// rest. Picks the cached kernel when a row fits in shared memory, and 4-element loads and
// stores when the rows are aligned for them (the LM head's padded rows are).
template <typename DOut>
static void launch_cross_entropy_fused(float *ce, DOut *dlogits, int ld_out, int32_t *argmax,
                                       const float *logits, int ld_in, const int32_t *targets,
                                       float scale, int N, int V) {
    if (V <= 0)
        hs_fatal_at(__FILE__, __LINE__, "cross_entropy_fused: vocabulary size %d", V);
    static size_t shared_limit = 0; // queried once: the backend binds one device per process
    if (shared_limit == 0)
        shared_limit = max_shared_per_block();
    // Room left beside the row for the reductions' static shared memory.
    const size_t row_bytes = (size_t)V * sizeof(float), static_bytes = 1024;
    const bool cached = row_bytes + static_bytes <= shared_limit;
    const bool wide = ld_in % 4 == 0 && ((uintptr_t)logits & 15) == 0 &&
                      (dlogits == NULL ||
                       (ld_out % 4 == 0 && ((uintptr_t)dlogits & (4 * sizeof(DOut) - 1)) == 0));
    if (cached && wide)
        launch_fused_kernel<true, 4>(ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, N,
                                     V);
    else if (cached)
        launch_fused_kernel<true, 1>(ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, N,
                                     V);
    else if (wide)
        launch_fused_kernel<false, 4>(ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, N,
                                      V);
    else
        launch_fused_kernel<false, 1>(ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, N,
                                      V);
}

void cuda_cross_entropy_fused(float *loss, float *dlogits, int32_t *argmax, const float *logits,
                              const int32_t *targets, float scale, int N, int V) {
    if (N == 0)
        return;
    float *ce = loss ? (float *)cuda_workspace((size_t)N * sizeof(float)) : NULL; // [N]
    launch_cross_entropy_fused(ce, dlogits, V, argmax, logits, V, targets, scale, N, V);
    if (loss)
        cuda_add_scaled_sum(loss, ce, N, scale);
}

void cuda_cross_entropy_bf16_grad(float *ce, __nv_bfloat16 *dlogits, int ld_out, int32_t *argmax,
                                  const float *logits, int ld_in, const int32_t *targets,
                                  float scale, int N, int V) {
    if (N == 0)
        return;
    launch_cross_entropy_fused(ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, N, V);
}

// The 0/1 selection mask [B*T] in the workspace, followed by `extra` more floats.
static float *selection_mask(const int32_t *sel, int B, int T, int n_sel, size_t extra) {
    size_t cells = (size_t)B * T;
    float *selected = (float *)cuda_workspace((cells + extra) * sizeof(float));
    CUDA_CHECK(cudaMemsetAsync(selected, 0, cells * sizeof(float), cuda_stream()));
    int count = B * n_sel;
    if (count > 0) {
        mark_selected_kernel<<<(count + 255) / 256, 256, 0, cuda_stream()>>>(selected, sel, count);
        CUDA_CHECK_LAUNCH("mark_selected_kernel");
    }
    return selected;
}

void cuda_route_loss_forward(float *loss, const float *r, const int32_t *sel, float rho,
                             float token_scale, float seq_scale, int B, int T, int n_sel) {
    if (B == 0 || T == 0)
        return;
    float *selected = selection_mask(sel, B, T, n_sel, (size_t)B);
    float *partial = selected + (size_t)B * T; // [B]
    route_loss_forward_kernel<<<B, ROUTE_THREADS, 0, cuda_stream()>>>(partial, r, selected, rho,
                                                                      token_scale, seq_scale, T);
    CUDA_CHECK_LAUNCH("route_loss_forward_kernel");
    cuda_add_scaled_sum(loss, partial, B, 1.0f);
}

void cuda_route_loss_backward(float *dr, const float *r, const int32_t *sel, float rho,
                              float token_scale, float seq_scale, int B, int T, int n_sel) {
    if (B == 0 || T == 0)
        return;
    float *selected = selection_mask(sel, B, T, n_sel, 0);
    route_loss_backward_kernel<<<B, ROUTE_THREADS, 0, cuda_stream()>>>(dr, r, selected, rho,
                                                                       token_scale, seq_scale, T);
    CUDA_CHECK_LAUNCH("route_loss_backward_kernel");
}
