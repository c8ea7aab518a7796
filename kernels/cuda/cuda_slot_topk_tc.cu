// Slot selection on bf16 tensor cores, used when the matmul precision is bf16
// (--matmul bf16): the same result contract as cuda_slot_topk.cu (K best slots of each
// token over one shard, higher score first, ties to the lower slot, padding (-inf, -1)),
// found in two stages:
//
//   1. Search (slot_search_tc_kernel): scores p . key in bf16 on the tensor cores (WMMA,
//      fp32 accumulation), a tile of 128 tokens x 128 keys at a time. The shard's keys are
//      split into ranges so that the grid fills the GPU (128 tokens a block); each thread
//      streams its half of every tile of its range into a register list of the C = 2K best
//      (C capped at 64) by bf16 score, and writes it. bf16 scores are off by about 2^-8 of
//      |p| |key|.
//   2. Rescore (slot_rescore_kernel, a warp per token): every candidate of every list is
//      scored again in fp32 by the very fmaf chain of the fp32 kernel (r = 0..R-1, then times
//      1/sqrt(R)), and the K best by that exact score are written, with that score.
//
// So the scores written are bit for bit those of the fp32 kernel, and the slots are its
// slots unless a slot of the exact top K ranked below the C-th place of its list by bf16
// score, which needs K other slots of the same list within bf16 rounding of it (the margin
// of C - K places is what the factor 2 buys). Near such ties the two precisions may pick
// differently; the parity test holds this kernel to the same validity checks as the fp32 one.
//
// Why: the fp32 kernel spends 32 FMAs per (token, key); here the products are tensor-core
// work and each (token, key) costs a shared-memory load and a compare.
#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_topk_list.cuh"

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

#define TCK_TOKENS  128 // tokens per block
#define TCK_KEYS    128 // keys per tile (tried 96 on the H200: 3 blocks an SM, yet slower)
#define TCK_THREADS 256 // 8 warps: warp w scores tokens [16 w, +16) against the whole tile
#define TCK_HALVES  (TCK_THREADS / TCK_TOKENS) // threads per token, each scanning part of a tile

// Leading dimensions: bf16 rows of RP + 8 elements (16 B of padding: rows land on other
// banks), the fp32 score tile stored key-major [key, token] with 4 floats of padding, so the
// 32 lanes of a warp (32 consecutive tokens) read one key's scores from 32 banks.
template <int RP> struct TckLayout {
    static constexpr int LDB = RP + 8;         // bf16 [tokens or keys, RP]
    static constexpr int LDT = TCK_TOKENS + 4; // fp32 [keys, tokens]
    static constexpr size_t PTR_BYTES = (size_t)TCK_TOKENS * LDB * sizeof(bf16);
    static constexpr size_t KEY_BYTES = (size_t)TCK_KEYS * LDB * sizeof(bf16);
    static constexpr size_t SCORE_BYTES = (size_t)TCK_KEYS * LDT * sizeof(float);
};

// One block: tokens [128 blockIdx.x, +128) against keys [key_begin, key_end) of the shard
// (split blockIdx.y). Each thread streams its half of every tile into a list of the C best
// by bf16 score and writes that list, unmerged: cand_i [splits, HALVES, N, CP] (-1 padding).
// p [N, R]; keys_bf16 [rows, RP]. RP: R rounded up to 16, 32 or 64.
template <int RP, int CP>
__global__ void __launch_bounds__(TCK_THREADS)
    slot_search_tc_kernel(int32_t *cand_i, const float *p, const bf16 *keys_bf16, int N, int R,
                          int rows, int keys_per_split) {
    using L = TckLayout<RP>;
    extern __shared__ float4 tck_smem[];
    unsigned char *base = (unsigned char *)tck_smem;
    bf16 *key_tile = (bf16 *)base;                      // [TCK_KEYS, LDB]
    float *score_tile = (float *)(base + L::KEY_BYTES); // [TCK_KEYS keys, LDT]
    // The pointers are read once, into registers, before the first score tile is written
    // (behind the first tile's barriers): they borrow the score tile's memory.
    bf16 *ptr_tile = (bf16 *)score_tile; // [128, LDB]
    const int token0 = blockIdx.x * TCK_TOKENS;
    const int key_begin = blockIdx.y * keys_per_split;
    const int key_end = min(rows, key_begin + keys_per_split);
    const int warp = threadIdx.x >> 5;

    // The block's pointers in bf16 (zeros past N: scored, never written).
    for (int i = threadIdx.x; i < TCK_TOKENS * RP; i += TCK_THREADS) {
        int t = i / RP, r = i % RP;
        int token = token0 + t;
        ptr_tile[t * L::LDB + r] =
            __float2bfloat16(token < N && r < R ? p[(size_t)token * R + r] : 0.0f);
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a[RP / 16];
#pragma unroll
    for (int kk = 0; kk < RP / 16; kk++)
        wmma::load_matrix_sync(a[kk], ptr_tile + 16 * warp * L::LDB + kk * 16, L::LDB);

    // Thread x scans keys [64 half, +64) of every tile for token x % 128.
    const int my_token = threadIdx.x % TCK_TOKENS, half = threadIdx.x / TCK_TOKENS;
    constexpr int KEYS_PER_THREAD = TCK_KEYS / TCK_HALVES;
    static_assert(KEYS_PER_THREAD <= 64, "the scan marks a thread's keys of a tile in 64 bits");
    float cand_s[CP];
    int32_t cand_id[CP];
    topk_list_clear<CP>(cand_s, cand_id);

    // A tile is TCK_KEYS rows of RP bf16: CHUNKS 16-byte chunks, PER_THREAD of them a thread.
    // The next tile's chunks are loaded into registers while the current one is scored and
    // scanned, so the global-memory latency hides behind that work.
    constexpr int CHUNKS_PER_ROW = RP * (int)sizeof(bf16) / 16;
    constexpr int CHUNKS = TCK_KEYS * CHUNKS_PER_ROW;
    constexpr int PER_THREAD = (CHUNKS + TCK_THREADS - 1) / TCK_THREADS;
    uint4 next[PER_THREAD];
    auto load_tile = [&](int tile0) {
#pragma unroll
        for (int i = 0; i < PER_THREAD; i++) {
            int c = threadIdx.x + i * TCK_THREADS;
            int key = c / CHUNKS_PER_ROW, chunk = c % CHUNKS_PER_ROW;
            next[i] = make_uint4(0, 0, 0, 0); // keys past the split: zero rows, never offered
            if (c < CHUNKS && tile0 + key < key_end)
                next[i] = *(const uint4 *)(keys_bf16 + (size_t)(tile0 + key) * RP + chunk * 8);
        }
    };
    if (key_begin < key_end)
        load_tile(key_begin);
    for (int tile0 = key_begin; tile0 < key_end; tile0 += TCK_KEYS) {
        int tile_keys = min(TCK_KEYS, key_end - tile0);
        __syncthreads(); // the previous tile's keys and scores are no longer read
#pragma unroll
        for (int i = 0; i < PER_THREAD; i++) {
            int c = threadIdx.x + i * TCK_THREADS;
            if (c < CHUNKS)
                *(uint4 *)(key_tile + (c / CHUNKS_PER_ROW) * L::LDB + (c % CHUNKS_PER_ROW) * 8) =
                    next[i];
        }
        __syncthreads();
        if (tile0 + TCK_KEYS < key_end)
            load_tile(tile0 + TCK_KEYS);
#pragma unroll
        for (int kb = 0; kb < TCK_KEYS / 16; kb++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < RP / 16; kk++) {
                // key rows [key, r] row-major = [r, key] column-major
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
                wmma::load_matrix_sync(b, key_tile + kb * 16 * L::LDB + kk * 16, L::LDB);
                wmma::mma_sync(acc, a[kk], b, acc);
            }
            // (token, key) at score_tile[key * LDT + token]
            wmma::store_matrix_sync(score_tile + kb * 16 * L::LDT + 16 * warp, acc, L::LDT,
                                    wmma::mem_col_major);
        }
        __syncthreads();
        // Two passes over the thread's 64 keys of the tile. The scan only marks the keys
        // that reach the list's last entry as it stood before the tile (a bit each); the
        // insertions then run for the marked keys alone, in slot order. Inserting during
        // the scan would stall the whole warp whenever any of its 32 lists takes a key,
        // which at this shape (6.5k keys a list) is most rounds; deferred, the warp pays
        // for the longest list of marks, which falls as the thresholds rise.
        const int first = half * KEYS_PER_THREAD;
        const int valid = min(KEYS_PER_THREAD, tile_keys - first); // may be <= 0
        const float threshold = cand_s[CP - 1];
        uint64_t marks = 0; // bit j: key first + j
#pragma unroll
        for (int j = 0; j < KEYS_PER_THREAD; j++)
            if (score_tile[(first + j) * L::LDT + my_token] >= threshold)
                marks |= 1ull << j;
        marks &= valid >= KEYS_PER_THREAD ? ~0ull : (valid > 0 ? (1ull << valid) - 1 : 0ull);
        while (marks) {
            const int j = __ffsll((long long)marks) - 1;
            marks &= marks - 1;
            topk_offer_later<CP>(cand_s, cand_id, score_tile[(first + j) * L::LDT + my_token],
                                 tile0 + first + j);
        }
    }

    const int token = token0 + my_token;
    if (token >= N)
        return;
    int32_t *out = cand_i + ((size_t)(blockIdx.y * TCK_HALVES + half) * N + token) * CP; // [CP]
#pragma unroll
    for (int c = 0; c < CP; c++)
        out[c] = cand_id[c];
}

// One warp per token: every candidate of every split and half is scored again in fp32 by the
// fp32 kernel's chain (fmaf over r = 0..R-1, then times 1/sqrt(R)), the lanes taking the
// candidates in turn (one chain each, so the order of the chain is kept), and the K best by
// that score are written. cand_i [lists, N, CP] (shard rows, -1 padding); top_s, top_i
// [N, K] (global slots: row + row_offset); p [N, R]; keys [rows, R] fp32.
#define RESCORE_WARPS 4
template <int CP>
__global__ void __launch_bounds__(RESCORE_WARPS * 32)
    slot_rescore_kernel(float *top_s, int32_t *top_i, const int32_t *cand_i, const float *p,
                        const float *keys, int N, int R, int lists, int row_offset, int K,
                        float inv_sqrt_r) {
    extern __shared__ float rescore_smem[]; // per warp: p row [R], scores and slots [n_cand]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int token = blockIdx.x * RESCORE_WARPS + warp;
    const int n_cand = lists * CP;
    const bool keys_16b_aligned = R % 4 == 0 && ((uintptr_t)keys & 15) == 0;
    float *my_p = rescore_smem + warp * (R + 2 * n_cand); // [R]
    float *score = my_p + R;                              // [n_cand]
    int32_t *slot = (int32_t *)(score + n_cand);          // [n_cand]
    if (token >= N)
        return; // whole warps leave: no block-wide barrier below
    for (int r = lane; r < R; r += 32)
        my_p[r] = p[(size_t)token * R + r];
    __syncwarp();
    for (int c = lane; c < n_cand; c += 32) {
        int list = c / CP, at = c % CP;
        int32_t row = cand_i[((size_t)list * N + token) * CP + at];
        float dot = -INFINITY;
        if (row >= 0) {
            const float *key = keys + (size_t)row * R; // [R]
            dot = 0.0f;
            if (keys_16b_aligned) { // the same chain, its loads four at a time
                for (int r = 0; r < R; r += 4) {
                    float4 k4 = *(const float4 *)(key + r);
                    dot = fmaf(my_p[r], k4.x, dot);
                    dot = fmaf(my_p[r + 1], k4.y, dot);
                    dot = fmaf(my_p[r + 2], k4.z, dot);
                    dot = fmaf(my_p[r + 3], k4.w, dot);
                }
            } else {
                for (int r = 0; r < R; r++)
                    dot = fmaf(my_p[r], key[r], dot);
            }
            dot *= inv_sqrt_r;
        }
        score[c] = dot;
        slot[c] = row >= 0 ? row + row_offset : -1;
    }
    __syncwarp();
    // The K best in K rounds: each lane brings the best of its candidates (c = lane, +32, ...)
    // not yet taken, the warp keeps the best of those by the ranking rule, and its lane marks
    // it taken. A slot lies in one list only, so no slot is taken twice. Padding (-1) and NaN
    // scores never enter, as in topk_offer; places past the candidates stay (-inf, -1).
    for (int k = 0; k < K; k++) {
        float best_s = -INFINITY;
        int32_t best_i = -1, best_c = -1;
        for (int c = lane; c < n_cand; c += 32)
            if (slot[c] >= 0 && !isnan(score[c]) &&
                ranks_before(score[c], slot[c], best_s, best_i)) {
                best_s = score[c];
                best_i = slot[c];
                best_c = c;
            }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float other_s = __shfl_xor_sync(0xffffffffu, best_s, offset);
            const int32_t other_i = __shfl_xor_sync(0xffffffffu, best_i, offset);
            const int32_t other_c = __shfl_xor_sync(0xffffffffu, best_c, offset);
            if (ranks_before(other_s, other_i, best_s, best_i)) {
                best_s = other_s;
                best_i = other_i;
                best_c = other_c;
            }
        }
        if (best_c >= 0 && best_c % 32 == lane)
            slot[best_c] = -1; // taken
        if (lane == 0) {
            top_s[(size_t)token * K + k] = best_s;
            top_i[(size_t)token * K + k] = best_i;
        }
        __syncwarp();
    }
}

template <int RP> static size_t search_shared_bytes(void) {
    using L = TckLayout<RP>;
    return L::KEY_BYTES + (L::SCORE_BYTES > L::PTR_BYTES ? L::SCORE_BYTES : L::PTR_BYTES);
}

// Key splits per token block: as many as fill the blocks the GPU holds at once
// (`resident`), rounded down so the grid is one full wave rather than a wave and a partial
// one, which would leave SMs idle at the end; each list also pays a start-up cost (its
// first tiles insert most keys), so fewer, longer splits do less work. At least 8 tiles of
// keys a split, and at most 1024 candidates a token (2 halves x splits x C) for the
// rescore's shared memory.
static int search_splits(int token_blocks, int resident, int rows, int candidates_per_list) {
    int splits = resident / token_blocks;
    int by_rows = rows / (8 * TCK_KEYS);
    int by_candidates = 1024 / (TCK_HALVES * candidates_per_list);
    splits = splits < by_rows ? splits : by_rows;
    splits = splits < by_candidates ? splits : by_candidates;
    return splits < 1 ? 1 : splits;
}

template <int RP, int KP>
static void launch_topk_tc(float *top_s, int32_t *top_i, const float *p, const float *keys, int N,
                           int R, int rows, int row_offset, int K) {
    constexpr int CP = 2 * KP < 64 ? 2 * KP : 64;
    const int token_blocks = (N + TCK_TOKENS - 1) / TCK_TOKENS;
    const size_t shared = search_shared_bytes<RP>();
    auto search = slot_search_tc_kernel<RP, CP>;
    CUDA_CHECK(
        cudaFuncSetAttribute(search, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
    const int splits =
        search_splits(token_blocks, cuda_resident_blocks(search, TCK_THREADS, shared), rows, CP);
    const int keys_per_split = ((rows + splits - 1) / splits + TCK_KEYS - 1) / TCK_KEYS * TCK_KEYS;
    const int lists = splits * TCK_HALVES;
    size_t key_bytes = (size_t)rows * RP * sizeof(bf16);
    size_t cand_bytes = (size_t)lists * N * CP * sizeof(int32_t);
    char *cursor = (char *)cuda_workspace(cuda_workspace_part_bytes(key_bytes) +
                                          cuda_workspace_part_bytes(cand_bytes));
    bf16 *keys_bf16 = (bf16 *)cuda_workspace_carve(&cursor, key_bytes);     // [rows, RP]
    int32_t *cand_i = (int32_t *)cuda_workspace_carve(&cursor, cand_bytes); // [lists, N, CP]
    // once per call: the search blocks then stage tiles with plain 16-byte copies, and read
    // half the bytes
    cuda_to_bf16_padded(keys_bf16, RP, keys, rows, R);
    search<<<dim3(token_blocks, splits), TCK_THREADS, shared, cuda_stream()>>>(
        cand_i, p, keys_bf16, N, R, rows, keys_per_split);
    CUDA_CHECK_LAUNCH("slot_search_tc_kernel");
    float inv_sqrt_r = (float)(1.0 / sqrt((double)R));
    size_t rescore_shared = RESCORE_WARPS * ((size_t)R + 2 * (size_t)lists * CP) * sizeof(float);
    auto rescore = slot_rescore_kernel<CP>;
    CUDA_CHECK(cudaFuncSetAttribute(rescore, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)rescore_shared));
    rescore<<<(N + RESCORE_WARPS - 1) / RESCORE_WARPS, RESCORE_WARPS * 32, rescore_shared,
              cuda_stream()>>>(top_s, top_i, cand_i, p, keys, N, R, lists, row_offset, K,
                               inv_sqrt_r);
    CUDA_CHECK_LAUNCH("slot_rescore_kernel");
}

template <int RP>
static void topk_tc_list_length(float *top_s, int32_t *top_i, const float *p, const float *keys,
                                int N, int R, int rows, int row_offset, int K) {
    with_list_length(K, [&]<int KP>() {
        launch_topk_tc<RP, KP>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    });
}

// Shapes (1 <= K <= 32, 1 <= R <= 64, N, rows >= 0) are checked by cuda_slot_topk.
void cuda_slot_topk_tc(float *top_s, int32_t *top_i, const float *p, const float *keys, int N,
                       int R, int rows, int row_offset, int K) {
    if (R <= 16)
        topk_tc_list_length<16>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    else if (R <= 32)
        topk_tc_list_length<32>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
    else
        topk_tc_list_length<64>(top_s, top_i, p, keys, N, R, rows, row_offset, K);
}
