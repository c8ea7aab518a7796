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
// One block per row. Pass 1 reads the row from global memory once, finding its maximum and
// argmax, and (kCached) keeps the row in shared memory; pass 2 sums exp(x - max); pass 3
// writes scale * (softmax - onehot). With the row cached (V floats fit in the opt-in shared
// memory: V <= ~58k on an H100, the seed's 50257 included) passes 2 and 3 read shared memory,
// so each logit crosses DRAM once in and once out; otherwise they re-read global memory (L2
// catches part of it). Reductions are fixed trees for a given blockDim: deterministic.

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

__device__ inline void warp_argmax(float &value, int &index) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
        int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        argmax_merge(value, index, other_value, other_index);
    }
}

// Every thread of the block gets the block's best (value, index), broadcast through shared
// memory so all threads agree. blockDim.x must be a multiple of 32. Call once per block.
__device__ inline void block_argmax(float &value, int &index) {
    __shared__ float warp_value[32];
    __shared__ int warp_index[32];
    __shared__ float best_value;
    __shared__ int best_index;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    warp_argmax(value, index);
    if (lane == 0) {
        warp_value[warp] = value;
        warp_index[warp] = index;
    }
    __syncthreads();
    if (warp == 0) {
        value = lane < n_warps ? warp_value[lane] : -INFINITY;
        index = lane < n_warps ? warp_index[lane] : CE_NO_INDEX;
        warp_argmax(value, index);
        if (lane == 0) {
            best_value = value;
            best_index = index;
        }
    }
    __syncthreads();
    value = best_value;
    index = best_index;
}

// A gradient element in the precision of the dlogits buffer (bf16: rounded to nearest).
__device__ __forceinline__ void store_grad(float *at, float value) {
    *at = value;
}
__device__ __forceinline__ void store_grad(__nv_bfloat16 *at, float value) {
    *at = __float2bfloat16_rn(value);
}

// An ignored row (target outside [0, V)): no loss, a zero gradient row (its padding
// included). stride = blockDim.x.
template <typename DOut>
__device__ __forceinline__ void write_ignored_row(float *ce, DOut *dlogits, int ld_out, size_t n,
                                                  int stride) {
    if (dlogits)
        for (int j = threadIdx.x; j < ld_out; j += stride)
            store_grad(dlogits + n * ld_out + j, 0.0f);
    if (ce && threadIdx.x == 0)
        ce[n] = 0.0f;
}

// ce [N] (may be NULL), dlogits [N, ld_out] (may be NULL; may alias logits when DOut is
// float and ld_out = ld_in), argmax [N] (may be NULL); logits [N, ld_in] (first V columns);
// targets [N]. Columns [V, ld_out) of dlogits are written zero (the LM head's bf16 dlogits
// are a GEMM operand padded to 8 elements). Dynamic shared memory: V floats when kCached.
template <bool kCached, typename DOut>
__global__ void __launch_bounds__(1024)
    cross_entropy_fused_kernel(float *ce, DOut *dlogits, int ld_out, int32_t *argmax,
                               const float *logits, int ld_in, const int32_t *targets, float scale,
                               int V) {
    extern __shared__ float cached_row[]; // [V] when kCached
    const size_t n = blockIdx.x;
    const int stride = blockDim.x;
    const float *row = logits + n * ld_in; // [V]
    const int32_t target = targets[n];
    // As cross_entropy_forward: a target outside [0, V) counts as ignored.
    const bool ignored = target < 0 || target >= V; // the same for the whole block
    if (ignored && argmax == NULL) {
        write_ignored_row(ce, dlogits, ld_out, n, stride);
        return;
    }
    // The target's logit, read before any thread can overwrite the row in place (pass 3
    // starts after the barriers of the reductions below).
    float target_logit = 0.0f;
    if (!ignored && threadIdx.x == 0)
        target_logit = row[target];

    // Pass 1: four loads in flight per thread, indices visited in increasing order so each
    // thread's candidate is its first maximum. Rows of 16-byte aligned floats (the LM head's
    // padded logits) are read as float4, two in flight: one block holds a whole SM (the
    // cached row fills its shared memory), so the bytes in flight per thread set the
    // bandwidth.
    float best = -INFINITY;
    int best_index = CE_NO_INDEX;
    auto consider = [&](float x, int index) {
        if (kCached)
            cached_row[index] = x;
        if (best_index == CE_NO_INDEX || x > best) {
            best = x;
            best_index = index;
        }
    };
    int j = threadIdx.x;
    if (ld_in % 4 == 0 && ((uintptr_t)logits & 15) == 0) {
        const float4 *row4 = reinterpret_cast<const float4 *>(row); // [V / 4]
        const int quads = V / 4;
        int q = threadIdx.x;
        for (; q + stride < quads; q += 2 * stride) {
            float4 x[2];
#pragma unroll
            for (int u = 0; u < 2; u++)
                x[u] = row4[q + u * stride];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int at = 4 * (q + u * stride);
                consider(x[u].x, at);
                consider(x[u].y, at + 1);
                consider(x[u].z, at + 2);
                consider(x[u].w, at + 3);
            }
        }
        for (; q < quads; q += stride) {
            float4 x = row4[q];
            consider(x.x, 4 * q);
            consider(x.y, 4 * q + 1);
            consider(x.z, 4 * q + 2);
            consider(x.w, 4 * q + 3);
        }
        j = 4 * quads + threadIdx.x; // the last V % 4, after every index above
    } else {
        for (; j + 3 * stride < V; j += 4 * stride) {
            float x[4];
#pragma unroll
            for (int u = 0; u < 4; u++)
                x[u] = row[j + u * stride];
#pragma unroll
            for (int u = 0; u < 4; u++)
                consider(x[u], j + u * stride);
        }
    }
    for (; j < V; j += stride)
        consider(row[j], j);
    block_argmax(best, best_index); // its barriers also publish cached_row
    const float row_max = best;
    if (argmax && threadIdx.x == 0)
        argmax[n] = best_index;
    const float *src = kCached ? cached_row : row; // [V]

    if (ignored) {
        write_ignored_row(ce, dlogits, ld_out, n, stride);
        return;
    }
    // Pass 2
    float sum = 0.0f;
    for (int k = threadIdx.x; k < V; k += stride)
        sum += expf(src[k] - row_max);
    sum = block_sum(sum);
    if (ce && threadIdx.x == 0)
        ce[n] = logf(sum) + row_max - target_logit;
    // Pass 3
    if (dlogits) {
        const float inv_sum = 1.0f / sum;
        DOut *drow = dlogits + n * ld_out; // [ld_out]
        for (int k = threadIdx.x; k < V; k += stride) {
            float prob = expf(src[k] - row_max) * inv_sum;
            store_grad(drow + k, scale * (prob - (k == target ? 1.0f : 0.0f)));
        }
        for (int k = V + threadIdx.x; k < ld_out; k += stride)
            store_grad(drow + k, 0.0f);
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

// The fused kernel over N rows: ce [N] per-row losses (NULL: none), see the kernel for the
// rest. Picks the cached kernel when a row fits in shared memory.
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
    const int threads = fused_threads(V);
    cudaStream_t stream = cuda_stream();
    if (row_bytes + static_bytes <= shared_limit) {
        auto kernel = cross_entropy_fused_kernel<true, DOut>;
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)row_bytes));
        kernel<<<N, threads, row_bytes, stream>>>(ce, dlogits, ld_out, argmax, logits, ld_in,
                                                  targets, scale, V);
        CUDA_CHECK_LAUNCH("cross_entropy_fused_kernel<cached>");
    } else {
        cross_entropy_fused_kernel<false, DOut><<<N, threads, 0, stream>>>(
            ce, dlogits, ld_out, argmax, logits, ld_in, targets, scale, V);
        CUDA_CHECK_LAUNCH("cross_entropy_fused_kernel<uncached>");
    }
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
