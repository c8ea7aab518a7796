// Slot selection on the GPU: the K best slots of each token over one table shard (scoring
// fused with a streaming top-K, no [N, rows] score matrix), and the merge of per-shard
// candidate lists.
//
// Order everywhere (as the cpu backend): higher score first; equal scores, lower global slot
// first. Lists with fewer than K real candidates are padded with score -inf and slot -1,
// which ranks after every real slot (it compares as the largest unsigned id).
//
// Scores are fp32: s = (sum over r = 0..R-1, in that order, of fmaf(p[r], key[r], s)) times
// 1/sqrt(R) rounded to fp32. Every (token, slot) score is computed by that one fixed chain,
// so the result does not depend on the launch shape and repeats bit for bit. The cpu oracle
// accumulates in double, so the two backends may order near-ties (scores within fp32
// rounding of each other) differently; exact ties (equal keys) and well separated scores
// select the same slots on both.
//
// The work: N tokens x rows keys x R multiply-adds (34 G at the seed shape: 16384 tokens,
// 65536 keys, R = 32), about 1 ms of fp32 FMA on an H100. A block takes TOPK_TOKENS tokens,
// keeps their pointers in registers and streams the key shard through shared memory in
// tiles (cp.async, double buffered), so the keys leave global memory once per block. Each
// thread keeps its own top-K list per token in registers (templated on the list length,
// fully unrolled, so no local memory); the threads that share a token each scan a part of
// every tile, and their lists are merged through shared memory at the end.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_topk_list.cuh"

#include <cuda_pipeline.h>

#define TOPK_MAX_K         CUDA_MAX_TOP_K   // longest list: the merge and scoring kernels'
#define TOPK_MAX_R         CUDA_MAX_PTR_DIM // widest pointer the scoring kernel holds
#define TOPK_THREADS       256              // threads per scoring block
#define TOPK_TOKENS        64               // tokens per scoring block
#define TOPK_TILE_FLOATS   8192             // one stage of the key tile: 32 KiB
#define TOPK_KEY_UNROLL    4 // keys scored together per thread (independent FMA chains)
#define TOPK_MERGE_THREADS 128

__host__ __device__ constexpr int topk_min(int a, int b) {
    return a < b ? a : b;
}
__host__ __device__ constexpr int topk_max(int a, int b) {
    return a > b ? a : b;
}

// Tokens per thread: two when the pointers (2 x RP) and lists (2 x 2 x KP) fit the register
// budget, so every key read from shared memory feeds twice the multiply-adds; else one.
__host__ __device__ constexpr int topk_tokens_per_thread(int RP, int KP) {
    return (RP <= 32 && KP <= 8) ? 2 : 1;
}
// Blocks per SM the register budget aims at: two (at most 128 registers a thread), one for
// the longest lists of the wider pointers, which would spill at 128.
__host__ __device__ constexpr int topk_min_blocks(int RP, int KP) {
    return (KP >= 32 && RP >= 32) ? 1 : 2;
}
// Threads that share a token, each scanning its own part of every key tile.
__host__ __device__ constexpr int topk_groups(int TPT) {
    return TOPK_THREADS / (TOPK_TOKENS / TPT);
}
// Shared memory of a scoring block: two key-tile stages, reused at the end for the lists.
__host__ __device__ constexpr size_t topk_smem_bytes(int KP, int TPT) {
    return (size_t)topk_max(2 * TOPK_TILE_FLOATS * (int)sizeof(float),
                            TOPK_TOKENS * topk_groups(TPT) * KP *
                                (int)(sizeof(float) + sizeof(int32_t)));
}

// Insert (score, slot) into the sorted list (s, ids) [K] if it beats the last entry
// (run-time K: the merge kernel).
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

// Start copying tile rows [tile0, tile0 + tile_keys) of keys [rows, R] into stage [., RP]
// of shared memory (columns R..RP-1 are left as they are: zero). 16-byte copies when every
// row starts 16-byte aligned, else 4-byte ones.
template <int RP>
__device__ void load_key_tile(float *stage, const float *keys, int tile0, int tile_keys, int R,
                              bool rows_16b_aligned) {
    const float *src = keys + (size_t)tile0 * R; // [tile_keys, R]
    if (rows_16b_aligned) {
        int chunks_per_row = R / 4;
        int chunks = tile_keys * chunks_per_row;
        for (int c = threadIdx.x; c < chunks; c += TOPK_THREADS) {
            int row = c / chunks_per_row, col = (c - row * chunks_per_row) * 4;
            __pipeline_memcpy_async(stage + row * RP + col, src + (size_t)c * 4, 16);
        }
    } else {
        int count = tile_keys * R;
        for (int e = threadIdx.x; e < count; e += TOPK_THREADS) {
            int row = e / R, col = e - row * R;
            __pipeline_memcpy_async(stage + row * RP + col, src + e, 4);
        }
    }
    __pipeline_commit();
}

// One block: tokens [blockIdx.x * TOPK_TOKENS, + TOPK_TOKENS) against the whole shard.
// RP: R rounded up (pointer and key columns R..RP-1 are zeros, which add exact zeros);
// KP: K rounded up to a power of two (the list length; the first K entries are written);
// TPT: tokens per thread. Thread x holds tokens token_lane + t * token_lanes (t < TPT) of
// the block, token_lane = x % token_lanes, and scans part `group` = x / token_lanes of
// every tile. A warp lies inside one group, so its lanes read the same key at the same
// time: a shared-memory broadcast.
// top_s, top_i [N, K]; p [N, R]; keys [rows, R]
template <int RP, int KP, int TPT>
__global__ void __launch_bounds__(TOPK_THREADS, topk_min_blocks(RP, KP))
    slot_topk_kernel(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                     int rows, int row_offset, int K, float inv_sqrt_r, bool rows_16b_aligned) {
    constexpr int token_lanes = TOPK_TOKENS / TPT;
    constexpr int groups = topk_groups(TPT);
    constexpr int tile_keys_max = TOPK_TILE_FLOATS / RP;
    constexpr int group_keys = tile_keys_max / groups; // keys of one tile per group
    static_assert(token_lanes % 32 == 0, "a warp must lie inside one group");
    static_assert(group_keys % TOPK_KEY_UNROLL == 0, "a group's part of a tile: whole steps");
    static_assert(RP % 4 == 0, "keys are read as float4");

    extern __shared__ float4 topk_smem[]; // float4: 16-byte aligned
    float *smem = reinterpret_cast<float *>(topk_smem);
    const int token_lane = threadIdx.x % token_lanes, group = threadIdx.x / token_lanes;
    const int block_token0 = blockIdx.x * TOPK_TOKENS;

    // The pointers of this thread's tokens (zeros past N: scored, never written).
    float ptr[TPT][RP];
#pragma unroll
    for (int t = 0; t < TPT; t++) {
        int token = block_token0 + token_lane + t * token_lanes;
        const float *row = p + (size_t)(token < N ? token : 0) * R; // [R]
#pragma unroll
        for (int r = 0; r < RP; r++)
            ptr[t][r] = (token < N && r < R) ? row[r] : 0.0f;
    }
    float best_s[TPT][KP];
    int32_t best_i[TPT][KP];
#pragma unroll
    for (int t = 0; t < TPT; t++)
        topk_list_clear<KP>(best_s[t], best_i[t]);

    if (R < RP) { // the padding columns of both stages must read as zeros
        for (int i = threadIdx.x; i < 2 * TOPK_TILE_FLOATS; i += TOPK_THREADS)
            smem[i] = 0.0f;
        __syncthreads(); // before any copy lands in the same rows
    }

    const int n_tiles = (rows + tile_keys_max - 1) / tile_keys_max;
    if (n_tiles > 0)
        load_key_tile<RP>(smem, keys, 0, topk_min(tile_keys_max, rows), R, rows_16b_aligned);
    for (int tile = 0; tile < n_tiles; tile++) {
        const int tile0 = tile * tile_keys_max;
        if (tile + 1 < n_tiles) { // prefetch the next tile into the other stage
            int next0 = tile0 + tile_keys_max;
            load_key_tile<RP>(smem + ((tile + 1) & 1) * TOPK_TILE_FLOATS, keys, next0,
                              topk_min(tile_keys_max, rows - next0), R, rows_16b_aligned);
            __pipeline_wait_prior(1); // this tile's copies are done, the next may fly
        } else {
            __pipeline_wait_prior(0);
        }
        __syncthreads(); // every thread's copies of this tile are visible

        const float *key_tile = smem + (tile & 1) * TOPK_TILE_FLOATS; // [tile_keys_max, RP]
        const int first = group * group_keys;
        const int last = topk_min(first + group_keys, rows - tile0); // exclusive
        for (int j = first; j < last; j += TOPK_KEY_UNROLL) {
            // Rows j .. j+UNROLL-1 lie inside the tile buffer (group_keys is a multiple of
            // the unroll); those at or past `last` are scored from stale data and dropped.
            float dot[TOPK_KEY_UNROLL][TPT];
#pragma unroll
            for (int u = 0; u < TOPK_KEY_UNROLL; u++)
#pragma unroll
                for (int t = 0; t < TPT; t++)
                    dot[u][t] = 0.0f;
#pragma unroll
            for (int c = 0; c < RP / 4; c++) {
#pragma unroll
                for (int u = 0; u < TOPK_KEY_UNROLL; u++) {
                    float4 k4 = reinterpret_cast<const float4 *>(key_tile + (j + u) * RP)[c];
#pragma unroll
                    for (int t = 0; t < TPT; t++) {
                        dot[u][t] = fmaf(ptr[t][4 * c + 0], k4.x, dot[u][t]);
                        dot[u][t] = fmaf(ptr[t][4 * c + 1], k4.y, dot[u][t]);
                        dot[u][t] = fmaf(ptr[t][4 * c + 2], k4.z, dot[u][t]);
                        dot[u][t] = fmaf(ptr[t][4 * c + 3], k4.w, dot[u][t]);
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < TOPK_KEY_UNROLL; u++) {
                if (j + u < last) {
                    int32_t slot = row_offset + tile0 + j + u;
#pragma unroll
                    for (int t = 0; t < TPT; t++)
                        topk_offer<KP>(best_s[t], best_i[t], dot[u][t] * inv_sqrt_r, slot);
                }
            }
        }
        __syncthreads(); // this stage is read by all before the next prefetch overwrites it
    }

    // Merge the `groups` lists of each token: write them to shared memory (the key stages
    // are free now), then one thread per token folds them into its own list.
    float *list_s = smem; // [TOPK_TOKENS, groups, KP]
    int32_t *list_i = reinterpret_cast<int32_t *>(smem + TOPK_TOKENS * groups * KP); // same
#pragma unroll
    for (int t = 0; t < TPT; t++) {
        int at = ((token_lane + t * token_lanes) * groups + group) * KP;
#pragma unroll
        for (int k = 0; k < KP; k++) {
            list_s[at + k] = best_s[t][k];
            list_i[at + k] = best_i[t][k];
        }
    }
    __syncthreads();
    const int token = block_token0 + threadIdx.x;
    if (threadIdx.x >= TOPK_TOKENS || token >= N)
        return;
    float merged_s[KP];
    int32_t merged_i[KP];
    const int at0 = threadIdx.x * groups * KP;
#pragma unroll
    for (int k = 0; k < KP; k++) {
        merged_s[k] = list_s[at0 + k];
        merged_i[k] = list_i[at0 + k];
    }
    for (int g = 1; g < groups; g++) {
        // A list is sorted: once an entry stays out, the rest of that list does too.
        for (int k = 0; k < KP; k++)
            if (!topk_offer<KP>(merged_s, merged_i, list_s[at0 + g * KP + k],
                                list_i[at0 + g * KP + k]))
                break;
    }
#pragma unroll
    for (int k = 0; k < KP; k++) {
        if (k < K) {
            top_s[(size_t)token * K + k] = merged_s[k];
            top_i[(size_t)token * K + k] = merged_i[k];
        }
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

template <int RP, int KP>
static void launch_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N,
                             int R, int rows, int row_offset, int K) {
    constexpr int TPT = topk_tokens_per_thread(RP, KP);
    constexpr size_t shared = topk_smem_bytes(KP, TPT);
    auto kernel = slot_topk_kernel<RP, KP, TPT>;
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
    bool rows_16b_aligned = R % 4 == 0 && (uintptr_t)keys % 16 == 0;
    float inv_sqrt_r = (float)(1.0 / sqrt((double)R));
    int blocks = (N + TOPK_TOKENS - 1) / TOPK_TOKENS;
    kernel<<<blocks, TOPK_THREADS, shared, cuda_stream()>>>(
        top_s, top_i, p, keys, N, R, rows, row_offset, K, inv_sqrt_r, rows_16b_aligned);
    CUDA_CHECK_LAUNCH("slot_topk_kernel");
}

// The list length for K: the next power of two (the kernel writes only the first K).
template <int RP>
static void dispatch_list_length(float *top_s, int32_t *top_i, const float *p, const float *keys,
                                 int N, int R, int rows, int row_offset, int K) {
    with_list_length(K, [&]<int KP>() {
        launch_slot_topk<RP, KP>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    });
}

void cuda_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                    int rows, int row_offset, int K) {
    check_k("slot_topk", K);
    if (R < 1 || R > TOPK_MAX_R)
        hs_fatal_at(__FILE__, __LINE__,
                    "slot_topk: ptr_dim R = %d outside [1, %d] supported by the cuda kernel", R,
                    TOPK_MAX_R);
    if (rows < 0 || N < 0)
        hs_fatal_at(__FILE__, __LINE__, "slot_topk: negative size (N = %d, rows = %d)", N, rows);
    if (N == 0)
        return;
    if (cuda_bf16_tensor_cores()) {
        cuda_slot_topk_tc(top_s, top_i, p, keys, N, R, rows, row_offset, K);
        return;
    }
    // The pointer width, rounded up to the register layout (zero columns add exact zeros).
    if (R <= 8)
        dispatch_list_length<8>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    else if (R <= 16)
        dispatch_list_length<16>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    else if (R <= 32)
        dispatch_list_length<32>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    else
        dispatch_list_length<64>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
}

void cuda_slot_topk_merge(float *top_s, int32_t *top_i, const float *cand_s, const int32_t *cand_i,
                          int P, int N, int K) {
    check_k("slot_topk_merge", K);
    if (N == 0)
        return;
    slot_topk_merge_kernel<<<(N + TOPK_MERGE_THREADS - 1) / TOPK_MERGE_THREADS, TOPK_MERGE_THREADS,
                             0, cuda_stream()>>>(top_s, top_i, cand_s, cand_i, P, N, K);
    CUDA_CHECK_LAUNCH("slot_topk_merge_kernel");
}
