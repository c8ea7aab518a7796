// Slot selection on the GPU: the K best slots of each token over one table shard (scoring
// fused with a streaming top-K, no [N, rows] score matrix), and the merge of per-shard
// candidate lists.
//
// Order everywhere (as the cpu backend): higher score first; equal scores, lower global slot
// first. Lists with fewer than K real candidates are padded with score -inf and slot -1,
// which ranks after every real slot (it compares as the largest unsigned id).
//
// Scores are dot products accumulated in double in key order, then scaled by 1/sqrt(R) and
// rounded to fp32, exactly as the cpu oracle does, so the chosen slots agree bit for bit.
#include "kernels/cuda/cuda_common.cuh"

#define TOPK_MAX_K      32 // per-lane list length (local memory)
#define TOPK_WARPS      8  // tokens per block, one warp each
#define TOPK_TILE_BYTES (32 * 1024)

__device__ inline bool ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != b)
        return a > b;
    return (uint32_t)ia < (uint32_t)ib;
}

// Insert (score, slot) into the sorted list (s, ids) [K] if it beats the last entry.
__device__ inline void topk_insert(float *s, int32_t *ids, int K, float score, int32_t slot) {
    if (!ranks_before(score, slot, s[K - 1], ids[K - 1]))
        return;
    int at = K - 1;
    while (at > 0 && ranks_before(score, slot, s[at - 1], ids[at - 1])) {
        s[at] = s[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }
    s[at] = score;
    ids[at] = slot;
}

// A block holds TOPK_WARPS tokens (one per warp) and walks the shard in tiles of
// keys_per_tile keys staged in shared memory (read from global memory once per block).
// Lane l of a warp scores keys l, l + 32, ... of each tile against its token and keeps
// its own top K; the 32 lists are then merged by K rounds of a warp-wide best pick.
// top_s, top_i [N, K]; p [N, R]; keys [rows, R]
__global__ void __launch_bounds__(TOPK_WARPS * 32)
    slot_topk_kernel(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                     int rows, int row_offset, int K, int keys_per_tile, double inv_sqrt_r) {
    extern __shared__ float topk_smem[];
    int stride = R + 1;                        // padded: lanes hit distinct banks
    float *p_tile = topk_smem;                 // [TOPK_WARPS, R]
    float *key_tile = p_tile + TOPK_WARPS * R; // [keys_per_tile, R + 1]
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int token = blockIdx.x * TOPK_WARPS + warp;
    for (int idx = threadIdx.x; idx < TOPK_WARPS * R; idx += blockDim.x) {
        int t = blockIdx.x * TOPK_WARPS + idx / R;
        p_tile[idx] = t < N ? p[(size_t)t * R + idx % R] : 0.0f;
    }

    float list_s[TOPK_MAX_K];
    int32_t list_i[TOPK_MAX_K];
    for (int k = 0; k < K; k++) {
        list_s[k] = -INFINITY;
        list_i[k] = -1;
    }
    const float *p_row = p_tile + warp * R;
    for (int tile0 = 0; tile0 < rows; tile0 += keys_per_tile) {
        int tile_keys = min(keys_per_tile, rows - tile0);
        __syncthreads(); // the previous tile is no longer read (and p_tile is written)
        for (int idx = threadIdx.x; idx < tile_keys * R; idx += blockDim.x)
            key_tile[(idx / R) * stride + idx % R] = keys[(size_t)tile0 * R + idx];
        __syncthreads();
        if (token >= N)
            continue;
        for (int j = lane; j < tile_keys; j += 32) {
            const float *key = key_tile + j * stride;
            double dot = 0.0;
            for (int r = 0; r < R; r++)
                dot += (double)p_row[r] * (double)key[r];
            topk_insert(list_s, list_i, K, (float)(dot * inv_sqrt_r), row_offset + tile0 + j);
        }
    }
    if (token >= N)
        return;

    // Merge the 32 sorted lane lists: each round the best head wins and its lane advances.
    int head = 0;
    for (int k = 0; k < K; k++) {
        float best_s = head < K ? list_s[head] : -INFINITY;
        int32_t best_i = head < K ? list_i[head] : -1;
        int best_lane = lane;
        for (int offset = 16; offset > 0; offset >>= 1) {
            float other_s = __shfl_xor_sync(0xffffffffu, best_s, offset);
            int32_t other_i = __shfl_xor_sync(0xffffffffu, best_i, offset);
            int other_lane = __shfl_xor_sync(0xffffffffu, best_lane, offset);
            bool other_wins = ranks_before(other_s, other_i, best_s, best_i) ||
                              (other_s == best_s && other_i == best_i && other_lane < best_lane);
            if (other_wins) {
                best_s = other_s;
                best_i = other_i;
                best_lane = other_lane;
            }
        }
        if (lane == 0) {
            top_s[(size_t)token * K + k] = best_s;
            top_i[(size_t)token * K + k] = best_i;
        }
        if (lane == best_lane)
            head++;
    }
}

// One thread per token: insert the P*K candidates into a sorted list, as the cpu does.
// top_s, top_i [N, K]; cand_s, cand_i [P, N, K]
__global__ void slot_topk_merge_kernel(float *top_s, int32_t *top_i, const float *cand_s,
                                       const int32_t *cand_i, int P, int N, int K) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N)
        return;
    float list_s[TOPK_MAX_K];
    int32_t list_i[TOPK_MAX_K];
    for (int k = 0; k < K; k++) {
        list_s[k] = -INFINITY;
        list_i[k] = -1;
    }
    for (int part = 0; part < P; part++) {
        size_t at = ((size_t)part * N + n) * K;
        for (int k = 0; k < K; k++)
            topk_insert(list_s, list_i, K, cand_s[at + k], cand_i[at + k]);
    }
    for (int k = 0; k < K; k++) {
        top_s[(size_t)n * K + k] = list_s[k];
        top_i[(size_t)n * K + k] = list_i[k];
    }
}

static void check_k(const char *op, int K) {
    if (K < 1 || K > TOPK_MAX_K)
        hs_fatal_at(__FILE__, __LINE__, "%s: K = %d outside [1, %d] supported by the cuda kernels",
                    op, K, TOPK_MAX_K);
}

void cuda_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                    int rows, int row_offset, int K) {
    check_k("slot_topk", K);
    if (N == 0)
        return;
    int keys_per_tile = TOPK_TILE_BYTES / (int)(sizeof(float) * (R + 1));
    if (keys_per_tile < 32)
        keys_per_tile = 32;
    size_t shared = sizeof(float) * ((size_t)TOPK_WARPS * R + (size_t)keys_per_tile * (R + 1));
    CUDA_CHECK(cudaFuncSetAttribute(slot_topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)shared));
    int blocks = (N + TOPK_WARPS - 1) / TOPK_WARPS;
    slot_topk_kernel<<<blocks, TOPK_WARPS * 32, shared, cuda_stream()>>>(
        top_s, top_i, p, keys, N, R, rows, row_offset, K, keys_per_tile, 1.0 / sqrt((double)R));
    CUDA_CHECK_LAUNCH("slot_topk_kernel");
}

void cuda_slot_topk_merge(float *top_s, int32_t *top_i, const float *cand_s, const int32_t *cand_i,
                          int P, int N, int K) {
    check_k("slot_topk_merge", K);
    if (N == 0)
        return;
    const int threads = 128;
    slot_topk_merge_kernel<<<(N + threads - 1) / threads, threads, 0, cuda_stream()>>>(
        top_s, top_i, cand_s, cand_i, P, N, K);
    CUDA_CHECK_LAUNCH("slot_topk_merge_kernel");
}
