// SQDK attention on the GPU: gathered queries attend causally (by their position qpos) to
// the dense keys of their sequence, through GQA kv head h / (nh / nkv).
//
// Tiling (forward and backward alike): a block takes one sequence b, one kv head, and a
// tile of ATT_PAIRS (query, query head) pairs that read that kv head. It walks the keys
// 0..max(qpos)+1 in tiles of 32 staged in shared memory. Within a warp each lane owns one
// key of the tile for the scores (a full dot product per lane, no shuffles), and owns
// head dims d = lane + 32 c (c < DIMS_PER_LANE) for the output rows. The forward keeps an
// online softmax (running max m, running sum l) per pair, so no [Mq, T] score matrix ever
// exists; the backward recomputes P = exp(score - lse) from the saved lse.
//
// Determinism: the forward and dq are written by one warp each, in a fixed order. dk and dv
// gather contributions from many query tiles: they are summed per block in shared memory
// and added to global memory with atomicAdd, so their last bits vary from run to run.
#include "kernels/cuda/cuda_common.cuh"

#define ATT_WARPS          8
#define ATT_PAIRS_PER_WARP 4
#define ATT_PAIRS          (ATT_WARPS * ATT_PAIRS_PER_WARP)
#define ATT_KEYS           32
#define ATT_MAX_HD         CUDA_MAX_HEAD_DIM

// Which pairs a block holds: queries [q0, q0 + queries_per_block) of sequence b, heads
// [head0, head0 + heads_here) of kv head kvh. Pair p is (query p / heads_per_block,
// head p % heads_per_block).
struct AttnTiling {
    int group;             // query heads per kv head, nh / nkv
    int heads_per_block;   // min(group, ATT_PAIRS)
    int queries_per_block; // ATT_PAIRS / heads_per_block
    int head_tiles;        // blocks needed to cover the group's heads
};

static AttnTiling attention_tiling(int nh, int nkv) {
    AttnTiling tiling;
    tiling.group = nh / nkv;
    tiling.heads_per_block = tiling.group < ATT_PAIRS ? tiling.group : ATT_PAIRS;
    tiling.queries_per_block = ATT_PAIRS / tiling.heads_per_block;
    tiling.head_tiles = (tiling.group + tiling.heads_per_block - 1) / tiling.heads_per_block;
    return tiling;
}

// The block's pairs: row of q (b*Mq + query) and head, or qpos -1 for an idle pair.
struct BlockPairs {
    int b, kvh;
    int kv_end; // keys [0, kv_end) are visible to some pair of the block
};

__device__ inline BlockPairs load_block_pairs(AttnTiling tiling, const int32_t *qpos, int Mq,
                                              int nh, int *pair_row, int *pair_head,
                                              int *pair_qpos) {
    __shared__ int kv_end;
    BlockPairs blk;
    blk.b = blockIdx.z;
    blk.kvh = blockIdx.y / tiling.head_tiles;
    int head0 = blk.kvh * tiling.group + (blockIdx.y % tiling.head_tiles) * tiling.heads_per_block;
    int head_end = (blk.kvh + 1) * tiling.group;
    int q0 = blockIdx.x * tiling.queries_per_block;
    if (threadIdx.x == 0)
        kv_end = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < ATT_PAIRS; p += blockDim.x) {
        int query = q0 + p / tiling.heads_per_block;
        int head = head0 + p % tiling.heads_per_block;
        bool valid = p < tiling.queries_per_block * tiling.heads_per_block && query < Mq &&
                     head < head_end && head < nh;
        pair_row[p] = valid ? blk.b * Mq + query : 0;
        pair_head[p] = valid ? head : 0;
        pair_qpos[p] = valid ? qpos[blk.b * Mq + query] : -1;
        if (valid)
            atomicMax(&kv_end, pair_qpos[p] + 1);
    }
    __syncthreads();
    blk.kv_end = kv_end;
    return blk;
}

// rows [ATT_PAIRS, hd] of a [B*Mq, nh, hd] tensor for the block's pairs (0 for idle pairs)
__device__ inline void load_pair_rows(float *dst, const float *src, const int *pair_row,
                                      const int *pair_head, const int *pair_qpos, int nh, int hd) {
    for (int idx = threadIdx.x; idx < ATT_PAIRS * hd; idx += blockDim.x) {
        int p = idx / hd, d = idx % hd;
        dst[idx] =
            pair_qpos[p] >= 0 ? src[((size_t)pair_row[p] * nh + pair_head[p]) * hd + d] : 0.0f;
    }
}

// keys [s0, s0 + 32) of one kv head into a [32, stride] tile (0 past kv_end)
__device__ inline void load_key_tile(float *dst, int stride, const float *src, int b, int kvh,
                                     int s0, int kv_end, int T, int nkv, int hd) {
    for (int idx = threadIdx.x; idx < ATT_KEYS * hd; idx += blockDim.x) {
        int j = idx / hd, d = idx % hd;
        int s = s0 + j;
        dst[j * stride + d] = s < kv_end ? src[(((size_t)b * T + s) * nkv + kvh) * hd + d] : 0.0f;
    }
}

// o [B*Mq, nh, hd]; lse [B*Mq, nh]; q [B*Mq, nh, hd]; k, v [B, T, nkv, hd]; qpos [B*Mq]
template <int DIMS_PER_LANE>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_forward_kernel(float *o, float *lse, const float *q, const float *k, const float *v,
                             const int32_t *qpos, AttnTiling tiling, int T, int Mq, int nh, int nkv,
                             int hd, float scale) {
    extern __shared__ float smem[];
    float *q_tile = smem;                         // [ATT_PAIRS, hd]
    float *k_tile = q_tile + ATT_PAIRS * hd;      // [ATT_KEYS, hd + 1] (padded: no bank clash)
    float *v_tile = k_tile + ATT_KEYS * (hd + 1); // [ATT_KEYS, hd]
    __shared__ int pair_row[ATT_PAIRS], pair_head[ATT_PAIRS], pair_qpos[ATT_PAIRS];

    BlockPairs blk = load_block_pairs(tiling, qpos, Mq, nh, pair_row, pair_head, pair_qpos);
    load_pair_rows(q_tile, q, pair_row, pair_head, pair_qpos, nh, hd);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float run_max[ATT_PAIRS_PER_WARP], run_sum[ATT_PAIRS_PER_WARP];
    float acc[ATT_PAIRS_PER_WARP][DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
        run_max[i] = -INFINITY;
        run_sum[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < DIMS_PER_LANE; c++)
            acc[i][c] = 0.0f;
    }

    for (int s0 = 0; s0 < blk.kv_end; s0 += ATT_KEYS) {
        __syncthreads(); // the previous tile is no longer read
        load_key_tile(k_tile, hd + 1, k, blk.b, blk.kvh, s0, blk.kv_end, T, nkv, hd);
        load_key_tile(v_tile, hd, v, blk.b, blk.kvh, s0, blk.kv_end, T, nkv, hd);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
            int p = warp + ATT_WARPS * i;
            int last = pair_qpos[p];
            if (last < s0) // every key of the tile is in this query's future (or idle pair)
                continue;
            const float *q_row = q_tile + p * hd;
            const float *k_row = k_tile + lane * (hd + 1);
            float score = 0.0f;
            for (int d = 0; d < hd; d++)
                score += q_row[d] * k_row[d];
            score = s0 + lane <= last ? score * scale : -INFINITY;
            float new_max = fmaxf(run_max[i], warp_max(score));
            float correction = expf(run_max[i] - new_max);
            float prob = expf(score - new_max);
            run_sum[i] = run_sum[i] * correction + warp_sum(prob);
            run_max[i] = new_max;
#pragma unroll
            for (int c = 0; c < DIMS_PER_LANE; c++)
                acc[i][c] *= correction;
            for (int j = 0; j < ATT_KEYS; j++) {
                float prob_j = __shfl_sync(0xffffffffu, prob, j);
#pragma unroll
                for (int c = 0; c < DIMS_PER_LANE; c++) {
                    int d = lane + 32 * c;
                    if (d < hd)
                        acc[i][c] += prob_j * v_tile[j * hd + d];
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
        int p = warp + ATT_WARPS * i;
        if (pair_qpos[p] < 0)
            continue;
        size_t row_head = (size_t)pair_row[p] * nh + pair_head[p];
#pragma unroll
        for (int c = 0; c < DIMS_PER_LANE; c++) {
            int d = lane + 32 * c;
            if (d < hd)
                o[row_head * hd + d] = acc[i][c] / run_sum[i];
        }
        if (lane == 0)
            lse[row_head] = run_max[i] + logf(run_sum[i]);
    }
}

// With P_s = exp(score_s - lse), dP_s = dout . v_s, D = dout . o:
//   dS_s = P_s (dP_s - D) scale;  dq += sum_s dS_s k_s;  dk_s += dS_s q;  dv_s += P_s dout.
template <int DIMS_PER_LANE>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_backward_kernel(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *o, const float *lse,
                              const int32_t *qpos, AttnTiling tiling, int T, int Mq, int nh,
                              int nkv, int hd, float scale) {
    extern __shared__ float smem[];
    int stride = hd + 1;                          // padded key rows: lanes hit distinct banks
    float *q_tile = smem;                         // [ATT_PAIRS, hd]
    float *dout_tile = q_tile + ATT_PAIRS * hd;   // [ATT_PAIRS, hd]
    float *k_tile = dout_tile + ATT_PAIRS * hd;   // [ATT_KEYS, hd + 1]
    float *v_tile = k_tile + ATT_KEYS * stride;   // [ATT_KEYS, hd + 1]
    float *dk_tile = v_tile + ATT_KEYS * stride;  // [ATT_KEYS, hd + 1] block sums
    float *dv_tile = dk_tile + ATT_KEYS * stride; // [ATT_KEYS, hd + 1]
    __shared__ int pair_row[ATT_PAIRS], pair_head[ATT_PAIRS], pair_qpos[ATT_PAIRS];
    __shared__ float pair_lse[ATT_PAIRS], pair_D[ATT_PAIRS];

    BlockPairs blk = load_block_pairs(tiling, qpos, Mq, nh, pair_row, pair_head, pair_qpos);
    load_pair_rows(q_tile, q, pair_row, pair_head, pair_qpos, nh, hd);
    load_pair_rows(dout_tile, dout, pair_row, pair_head, pair_qpos, nh, hd);
    for (int idx = threadIdx.x; idx < 2 * ATT_KEYS * stride; idx += blockDim.x)
        dk_tile[idx] = 0.0f; // dk_tile and dv_tile are adjacent
    __syncthreads();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    float dq_acc[ATT_PAIRS_PER_WARP][DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
        int p = warp + ATT_WARPS * i;
        float dot = 0.0f;
        if (pair_qpos[p] >= 0) {
            size_t row_head = (size_t)pair_row[p] * nh + pair_head[p];
            for (int d = lane; d < hd; d += 32)
                dot += dout_tile[p * hd + d] * o[row_head * hd + d];
        }
        dot = warp_sum(dot);
        if (lane == 0) {
            pair_D[p] = dot;
            pair_lse[p] = pair_qpos[p] >= 0 ? lse[(size_t)pair_row[p] * nh + pair_head[p]] : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < DIMS_PER_LANE; c++)
            dq_acc[i][c] = 0.0f;
    }

    for (int s0 = 0; s0 < blk.kv_end; s0 += ATT_KEYS) {
        __syncthreads(); // pair_D/pair_lse written; the previous tile flushed
        load_key_tile(k_tile, stride, k, blk.b, blk.kvh, s0, blk.kv_end, T, nkv, hd);
        load_key_tile(v_tile, stride, v, blk.b, blk.kvh, s0, blk.kv_end, T, nkv, hd);
        __syncthreads();
        float dscore[ATT_PAIRS_PER_WARP], prob[ATT_PAIRS_PER_WARP];
        bool any_active = false;
#pragma unroll
        for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
            int p = warp + ATT_WARPS * i;
            int last = pair_qpos[p];
            dscore[i] = 0.0f;
            prob[i] = 0.0f;
            if (last < s0)
                continue;
            any_active = true;
            const float *q_row = q_tile + p * hd, *do_row = dout_tile + p * hd;
            const float *k_row = k_tile + lane * stride, *v_row = v_tile + lane * stride;
            float score = 0.0f, dprob = 0.0f;
            for (int d = 0; d < hd; d++) {
                score += q_row[d] * k_row[d];
                dprob += do_row[d] * v_row[d];
            }
            if (s0 + lane <= last) {
                prob[i] = expf(score * scale - pair_lse[p]);
                dscore[i] = prob[i] * (dprob - pair_D[p]) * scale;
            }
            for (int j = 0; j < ATT_KEYS; j++) {
                float ds_j = __shfl_sync(0xffffffffu, dscore[i], j);
#pragma unroll
                for (int c = 0; c < DIMS_PER_LANE; c++) {
                    int d = lane + 32 * c;
                    if (d < hd)
                        dq_acc[i][c] += ds_j * k_tile[j * stride + d];
                }
            }
        }
        // This lane's key row: the warp's pairs summed first, then one shared atomic per
        // element (other warps of the block add to the same rows).
        if (any_active) {
            for (int d = 0; d < hd; d++) {
                float dk_part = 0.0f, dv_part = 0.0f;
#pragma unroll
                for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
                    int p = warp + ATT_WARPS * i;
                    dk_part += dscore[i] * q_tile[p * hd + d];
                    dv_part += prob[i] * dout_tile[p * hd + d];
                }
                atomicAdd(&dk_tile[lane * stride + d], dk_part);
                atomicAdd(&dv_tile[lane * stride + d], dv_part);
            }
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_KEYS * hd; idx += blockDim.x) {
            int j = idx / hd, d = idx % hd;
            int s = s0 + j;
            if (s < blk.kv_end) {
                size_t at = (((size_t)blk.b * T + s) * nkv + blk.kvh) * hd + d;
                atomicAdd(&dk[at], dk_tile[j * stride + d]);
                atomicAdd(&dv[at], dv_tile[j * stride + d]);
            }
            dk_tile[j * stride + d] = 0.0f;
            dv_tile[j * stride + d] = 0.0f;
        }
    }

#pragma unroll
    for (int i = 0; i < ATT_PAIRS_PER_WARP; i++) {
        int p = warp + ATT_WARPS * i;
        if (pair_qpos[p] < 0)
            continue;
        size_t row_head = (size_t)pair_row[p] * nh + pair_head[p];
#pragma unroll
        for (int c = 0; c < DIMS_PER_LANE; c++) {
            int d = lane + 32 * c;
            if (d < hd)
                dq[row_head * hd + d] += dq_acc[i][c];
        }
    }
}

static void check_attention_shapes(const char *op, int nh, int nkv, int hd) {
    if (nkv <= 0 || nh % nkv != 0)
        hs_fatal_at(__FILE__, __LINE__, "%s: n_heads %d is not a multiple of n_kv_heads %d", op, nh,
                    nkv);
    if (hd < 1 || hd > ATT_MAX_HD)
        hs_fatal_at(__FILE__, __LINE__,
                    "%s: head_dim %d outside [1, %d] supported by the cuda "
                    "kernels",
                    op, hd, ATT_MAX_HD);
}

static dim3 attention_grid(AttnTiling tiling, int B, int Mq, int nkv) {
    int query_tiles = (Mq + tiling.queries_per_block - 1) / tiling.queries_per_block;
    return dim3(query_tiles, nkv * tiling.head_tiles, B);
}

// Launch kernel<DIMS_PER_LANE> with DIMS_PER_LANE = ceil(hd / 32), opting in to the shared
// memory it needs beyond the default 48 KiB.
template <typename Kernel> static void set_shared_limit(Kernel kernel, size_t bytes) {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

void cuda_attention_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                            const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    check_attention_shapes("attention_forward", nh, nkv, hd);
    if (B == 0 || Mq == 0)
        return;
    // In bf16 mode (--matmul bf16) the tensor-core kernels of cuda_attention_tc.cu (bf16
    // products, fp32 softmax and accumulation); in fp32 and tf32 mode the fp32 kernels of this
    // file, which follow the cpu oracle to fp32 rounding. The backward chooses alike.
    if (cuda_bf16_tensor_cores()) {
        cuda_attention_forward_tc(o, lse, q, k, v, qpos, B, T, Mq, nh, nkv, hd);
        return;
    }
    AttnTiling tiling = attention_tiling(nh, nkv);
    dim3 grid = attention_grid(tiling, B, Mq, nkv);
    size_t shared = sizeof(float) *
                    ((size_t)ATT_PAIRS * hd + (size_t)ATT_KEYS * (hd + 1) + (size_t)ATT_KEYS * hd);
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t stream = cuda_stream();
    int dims_per_lane = (hd + 31) / 32;
    switch (dims_per_lane) {
#define LAUNCH_FORWARD(DPL)                                                                        \
    case DPL:                                                                                      \
        set_shared_limit(attention_forward_kernel<DPL>, shared);                                   \
        attention_forward_kernel<DPL><<<grid, ATT_WARPS * 32, shared, stream>>>(                   \
            o, lse, q, k, v, qpos, tiling, T, Mq, nh, nkv, hd, scale);                             \
        break;
        LAUNCH_FORWARD(1)
        LAUNCH_FORWARD(2)
        LAUNCH_FORWARD(3)
        LAUNCH_FORWARD(4)
#undef LAUNCH_FORWARD
    }
    CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *o, const float *lse,
                             const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    check_attention_shapes("attention_backward", nh, nkv, hd);
    if (B == 0 || Mq == 0)
        return;
    if (cuda_bf16_tensor_cores()) {
        cuda_attention_backward_tc(dq, dk, dv, dout, q, k, v, o, lse, qpos, B, T, Mq, nh, nkv, hd);
        return;
    }
    AttnTiling tiling = attention_tiling(nh, nkv);
    dim3 grid = attention_grid(tiling, B, Mq, nkv);
    size_t shared = sizeof(float) * (2 * (size_t)ATT_PAIRS * hd + 4 * (size_t)ATT_KEYS * (hd + 1));
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t stream = cuda_stream();
    int dims_per_lane = (hd + 31) / 32;
    switch (dims_per_lane) {
#define LAUNCH_BACKWARD(DPL)                                                                       \
    case DPL:                                                                                      \
        set_shared_limit(attention_backward_kernel<DPL>, shared);                                  \
        attention_backward_kernel<DPL><<<grid, ATT_WARPS * 32, shared, stream>>>(                  \
            dq, dk, dv, dout, q, k, v, o, lse, qpos, tiling, T, Mq, nh, nkv, hd, scale);           \
        break;
        LAUNCH_BACKWARD(1)
        LAUNCH_BACKWARD(2)
        LAUNCH_BACKWARD(3)
        LAUNCH_BACKWARD(4)
#undef LAUNCH_BACKWARD
    }
    CUDA_CHECK_LAUNCH("attention_backward_kernel");
}
