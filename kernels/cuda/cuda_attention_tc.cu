// SQDK attention on bf16 tensor cores (flash-attention style), used when the matmul
// precision is bf16 (--matmul bf16). Inputs and outputs stay fp32 buffers, as the op table
// says; q, k, v (and dout) are rounded once per call to bf16 copies in the workspace, whose
// rows are zero-padded to HDP, every product accumulates in fp32 (mma.sync m16n8k16), and
// the softmax runs in fp32. No [queries, T] score matrix ever exists: scores live one 16 x 64
// block a warp at a time, in registers.
//
// Registers, not shared memory. The m16n8k16 bf16 mma.sync has a documented fragment
// layout: lane (g = lane / 4, c = lane % 4) of a warp holds the accumulator elements of rows
// g and g + 8 at columns 2 c and 2 c + 1 of every 8-column block. So the softmax (and its
// backward) runs on the accumulators where they are, and an accumulator of two column
// blocks, rounded to bf16, is the A operand of the next product as it stands (the
// FlashAttention-2 arrangement). Operands come from the bf16 tiles in shared memory: a
// row-major tile read as [HDP, columns] by 32-bit loads (k for S = Q K^T, v for dP = dO V^T,
// q and dout for the dk/dv kernel's transposed products), and read as [rows, HDP] by
// ldmatrix.trans (v for O += P V, k for dQ += dS K, dout and q for dV and dK). The first
// version staged S, P and O through shared memory with WMMA (whose layout is opaque): the
// H100 forward went from 0.344 to 0.231 ms at the seed shape with the change (and from
// 1.276 to 0.764 ms for attn=dense).
//
// Rows and keys. A tile holds TC_ROWS = 64 (query, head) rows that read the same kv head:
// queries_per_tile consecutive gathered queries of one sequence times heads_per_tile query
// heads of that kv head's GQA group (16 x 4 at the seed shape). Each of the 4 warps owns 16
// rows. Keys go by in tiles of TC_KEYS = 64. The mask is position-causal: row r sees key s
// iff s <= qpos[r]; FlashAttention's bottom-right alignment for unequal lengths would be
// wrong here, since the gathered queries sit at arbitrary positions.
//
// Kernels:
//   forward   one block per row tile; walks keys 0..max(qpos)+1 with an online softmax
//             (running max m and sum l per row, both in log2 units), O accumulated in fp32
//             registers and rescaled there.
//   dq        one block per row tile, as the forward: recomputes P = exp(S - lse) and
//             dP = dO V^T, dS = P (dP - D) / sqrt(hd), dQ += dS K. It also writes
//             D = rowsum(dO * O) for the dk/dv kernel.
//   dk, dv    one block per key tile of one kv head: walks every row tile (every query head
//             of the group) whose last query sees the tile, and accumulates
//             dV += P^T dO, dK += dS^T Q in registers all along. The next row tile is copied
//             (cp.async) while one is worked on, as the key tiles of the other two kernels. It
//             works on the transposed products (S^T = K Q^T, dP^T = V dO^T) so that a warp's 16
//             keys are the accumulator rows, and P^T and dS^T are A operands as they stand.
// Every output element is written by one block in a fixed order: results repeat bit for bit
// (no atomics), unlike the fp32 kernel's dk/dv.
//
// Splitting the long walks. With few row tiles (0.2 T queries of a few sequences: 416 row
// tiles at the seed shape, about one wave of the GPU) the kernel time is the time of the
// longest block, a row tile of the last queries walking all T keys, while most SMs sit idle.
// So when the grid is small the key walk of the forward and dq kernels is cut into chunks
// of KeySplit::chunk_keys keys, one block per (row tile, chunk), and the dk/dv kernel's walk
// over query tiles into chunks of QuerySplit::chunk_tiles tiles. Each chunk writes its
// partial result to the workspace (the forward: O normalised by its own sum, and its
// log-sum-exp) and a small kernel merges the chunks in a fixed order: still no atomics.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_mma.cuh"

typedef __nv_bfloat16 bf16;

#define TC_ROWS    64
#define TC_KEYS    64
#define TC_WARPS   4
#define TC_THREADS (TC_WARPS * 32)
#define LOG2E      1.4426950408889634f
#define LN2        0.6931471805599453f

// The shared tiles: 64 bf16 rows of HDP + 8 elements. The 16 bytes of padding put the 8
// rows that one 32-bit fragment load (or one ldmatrix phase) touches on 8 different groups
// of 4 banks (a row is 36 words for HDP = 64: row r starts at bank 4 r mod 32), and keep
// every row 16-byte aligned for ldmatrix and the 16-byte copies.
template <int HDP> struct TcLayout {
    static constexpr int LDH = HDP + 8; // bf16 [rows, HDP]: q, k, v, dout
    static constexpr size_t HALF_TILE = (size_t)TC_ROWS * LDH * sizeof(bf16);
};

// Which rows a tile holds (the same split as the fp32 kernel, with 64 rows).
struct TcTiling {
    int group;            // query heads per kv head, nh / nkv
    int heads_per_tile;   // min(group, TC_ROWS)
    int queries_per_tile; // TC_ROWS / heads_per_tile
    int head_tiles;       // row tiles needed to cover the group's heads
    int query_tiles;      // ceil(Mq / queries_per_tile)
};

static TcTiling tc_tiling(int nh, int nkv, int Mq) {
    TcTiling t;
    t.group = nh / nkv;
    t.heads_per_tile = t.group < TC_ROWS ? t.group : TC_ROWS;
    t.queries_per_tile = TC_ROWS / t.heads_per_tile;
    t.head_tiles = (t.group + t.heads_per_tile - 1) / t.heads_per_tile;
    t.query_tiles = (Mq + t.queries_per_tile - 1) / t.queries_per_tile;
    return t;
}

// Where row r of a row tile sits: it holds the query_in_tile-th of the tile's queries for the
// head_in_tile-th of its heads. query_in_tile is -1 for a row past the queries_per_tile x
// heads_per_tile rows the tiling uses (idle in every tile: a group of 3 leaves row 63 so).
struct TileRowPlace {
    int query_in_tile, head_in_tile;
};
__device__ inline TileRowPlace tile_row_place(TcTiling t, int r) {
    TileRowPlace place = {r / t.heads_per_tile, r % t.heads_per_tile};
    if (r >= t.queries_per_tile * t.heads_per_tile)
        place.query_in_tile = -1;
    return place;
}

// The row at `place` of row tile (head_tile, query_tile) of kv head kvh: its query (index among
// the Mq gathered queries of the sequence) and query head. query is -1 for an idle row: past
// the rows the tiling uses, past the last query, or past the group's heads.
struct TileRow {
    int query, head;
};
__device__ inline TileRow tile_row(TcTiling t, TileRowPlace place, int kvh, int head_tile,
                                   int query_tile, int Mq) {
    const int query = query_tile * t.queries_per_tile + place.query_in_tile;
    const int head_in_group = head_tile * t.heads_per_tile + place.head_in_tile;
    const bool valid = place.query_in_tile >= 0 && query < Mq && head_in_group < t.group;
    TileRow row = {valid ? query : -1, kvh * t.group + head_in_group};
    return row;
}

// The rows of one tile: row_index[r] = (b * Mq + query) * nh + head (the row of q, o, dout
// and lse), or -1 for an idle row; row_qpos[r] its position (-1 when idle). Returns the
// number of keys some row of the tile sees (max qpos + 1). Every thread of the block calls it.
__device__ int load_tile_rows(TcTiling t, int b, int kvh, int head_tile, int query_tile,
                              const int32_t *qpos, int Mq, int nh, long long *row_index,
                              int *row_qpos, int *kv_end) {
    if (threadIdx.x == 0)
        *kv_end = 0;
    __syncthreads();
    if (threadIdx.x < TC_ROWS) {
        const int r = threadIdx.x;
        const TileRow row = tile_row(t, tile_row_place(t, r), kvh, head_tile, query_tile, Mq);
        const bool valid = row.query >= 0;
        row_index[r] = valid ? ((long long)b * Mq + row.query) * nh + row.head : -1;
        row_qpos[r] = valid ? qpos[b * Mq + row.query] : -1;
        if (valid)
            atomicMax(kv_end, row_qpos[r] + 1);
    }
    __syncthreads();
    return *kv_end;
}

// 64 rows of a row-padded bf16 copy (HDP elements a row: cuda_to_bf16_padded, once per call,
// so every row is 32-byte aligned whatever hd is) into a [64, HDP] tile:
// row r of the tile is row row[r] of src, or zeros when row[r] is -1.
template <int HDP>
__device__ void load_tile_bf16(bf16 *dst, const bf16 *src, const long long *row) {
    constexpr int LDH = TcLayout<HDP>::LDH, PIECES = HDP / 8; // 16-byte pieces per row
    for (int idx = threadIdx.x; idx < TC_ROWS * PIECES; idx += TC_THREADS) {
        int r = idx / PIECES, d = (idx % PIECES) * 8;
        uint4 x = make_uint4(0u, 0u, 0u, 0u);
        if (row[r] >= 0)
            x = *(const uint4 *)(src + row[r] * HDP + d);
        *(uint4 *)(dst + r * LDH + d) = x;
    }
}

// The row of a bf16 copy that a tile row gets: row `index`, or zeros where not valid (index is
// 0 then: the address stays inside the copy, though nothing is read).
struct SourceRow {
    bool valid;
    long long index;
};

// 64 rows of two row-padded bf16 copies (HDP elements a row, as load_tile_bf16 reads) into
// two [64, LDH] tiles, as cp.async copies the caller commits and waits for: row r of tile_a
// and tile_b gets the row source_row(r) of src_a and src_b says. Key rows of k and v, or the
// (query, head) rows of q and dout. A warp copies whole rows (4 of them for HDP = 64) an
// instruction.
template <int HDP, typename RowOf>
__device__ __forceinline__ void issue_tile_pair(bf16 *tile_a, bf16 *tile_b, const bf16 *src_a,
                                                const bf16 *src_b, RowOf source_row) {
    constexpr int LDH = TcLayout<HDP>::LDH, PIECES = HDP / 8; // 16-byte pieces per row
    static_assert(TC_KEYS == TC_ROWS, "key tiles and row tiles share the copy");
    for (int idx = threadIdx.x; idx < TC_ROWS * PIECES; idx += TC_THREADS) {
        const int r = idx / PIECES, d = (idx % PIECES) * 8;
        const SourceRow row = source_row(r);
        cp_async_16(tile_a + r * LDH + d, src_a + row.index * HDP + d, row.valid);
        cp_async_16(tile_b + r * LDH + d, src_b + row.index * HDP + d, row.valid);
    }
}

// Keys [s0, s0 + 64) of kv head kvh in sequence b into the bf16 k and v tiles, as cp.async
// copies the caller commits and waits for (zero rows past T).
template <int HDP>
__device__ void issue_key_value_tiles(bf16 *k_tile, bf16 *v_tile, const bf16 *k, const bf16 *v,
                                      int b, int kvh, int s0, int T, int nkv) {
    issue_tile_pair<HDP>(k_tile, v_tile, k, v, [=](int r) {
        const int s = s0 + r;
        const bool valid = s < T;
        return SourceRow{valid, valid ? ((long long)b * T + s) * nkv + kvh : 0};
    });
}

// Walks the key tiles [s_begin, s_end) of kv head kvh in sequence b, 64 keys at a time, and
// calls work(k_tile, v_tile, s0) for each tile some row of the warp sees (s0 <= warp_last:
// the other tiles lie in the future of all its rows). Tile i + 1 is copied (cp.async) into the
// other pair of buffers while tile i is worked on; that pair was last read in iteration
// i - 1, before its closing barrier. k_bufs, v_bufs [2, 64, LDH] each.
template <int HDP, typename Work>
__device__ __forceinline__ void
walk_key_tiles(bf16 *k_bufs, bf16 *v_bufs, const bf16 *k, const bf16 *v, int b, int kvh,
               int s_begin, int s_end, int T, int nkv, int warp_last, Work &&work) {
    constexpr int TILE = TC_KEYS * TcLayout<HDP>::LDH; // elements of one tile
    issue_key_value_tiles<HDP>(k_bufs, v_bufs, k, v, b, kvh, s_begin, T, nkv);
    cp_async_commit();
    for (int s0 = s_begin, buf = 0; s0 < s_end; s0 += TC_KEYS, buf ^= 1) {
        if (s0 + TC_KEYS < s_end)
            issue_key_value_tiles<HDP>(k_bufs + (buf ^ 1) * TILE, v_bufs + (buf ^ 1) * TILE, k, v,
                                       b, kvh, s0 + TC_KEYS, T, nkv);
        cp_async_commit();  // (an empty group on the last tile: the wait below stays the same)
        cp_async_wait<1>(); // this tile's copies are in (the next tile's may be on the way)
        __syncthreads();    // ... every thread's
        if (warp_last >= s0)
            work(k_bufs + buf * TILE, v_bufs + buf * TILE, s0);
        __syncthreads(); // every warp is done with this tile's buffers
    }
}

// Carves the dynamic shared memory into 128-byte aligned regions (ldmatrix wants 16). The
// padding is added to the pointer, not applied through an integer cast of it, so the compiler
// still knows that every region is shared memory: the tile reads compile to ld.shared with
// 32-bit addresses. (Rounded through uintptr_t they were generic loads on 64-bit addresses:
// the dq and dk/dv kernels spilled at HDP = 128, and took more registers at every HDP.)
struct SharedCarver {
    unsigned char *at;
    __device__ explicit SharedCarver(unsigned char *base)
        : at(base + ((128u - (uint32_t)__cvta_generic_to_shared(base)) & 127u)) {}
    template <typename T> __device__ T *take(size_t bytes) {
        T *p = (T *)at;
        at += (bytes + 127) & ~(size_t)127;
        return p;
    }
};

// Which row tile a block of the forward or dq kernels takes. The grid is one-dimensional
// and ordered by decreasing work: the row tiles of the last queries (which see the most keys)
// come first, whatever their sequence and head, so the GPU starts the long blocks first and
// the short ones fill the tail (with the plain order, the longest blocks of the last wave
// set the kernel's time).
struct RowTileId {
    int b, kvh, head_tile, query_tile;
};
__device__ inline RowTileId row_tile_of_block(TcTiling t, int nkv, int B, int block) {
    int per_query_tile = nkv * t.head_tiles * B;
    int rank = block / per_query_tile, rest = block % per_query_tile;
    RowTileId id;
    id.query_tile = t.query_tiles - 1 - rank;
    id.b = rest / (nkv * t.head_tiles);
    id.kvh = (rest % (nkv * t.head_tiles)) / t.head_tiles;
    id.head_tile = rest % t.head_tiles;
    return id;
}

// How the key walk of the forward and dq kernels is cut: chunk c covers keys
// [c chunk_keys, (c + 1) chunk_keys). chunks == 1: one block per row tile, no partials.
struct KeySplit {
    int chunk_keys; // a multiple of TC_KEYS
    int chunks;
};

// How the dk/dv kernel's walk over query tiles is cut: chunk c covers query tiles
// [c chunk_tiles, (c + 1) chunk_tiles). chunks == 1: one block per key tile, no partials.
struct QuerySplit {
    int chunk_tiles;
    int chunks;
};

// The (row tile, key chunk) of a block of the forward or dq kernels: chunk-major, so every
// row tile's first chunk comes first, in the row tiles' decreasing-work order.
struct RowChunkId {
    RowTileId tile;
    int chunk;
};
__device__ inline RowChunkId row_chunk_of_block(TcTiling t, int nkv, int B, KeySplit split) {
    int row_blocks = gridDim.x / split.chunks;
    RowChunkId id;
    id.tile = row_tile_of_block(t, nkv, B, blockIdx.x % row_blocks);
    id.chunk = blockIdx.x / row_blocks;
    return id;
}

// The chunks a row at position qpos has keys in: chunk c holds key c chunk_keys <= qpos.
__device__ inline int chunks_seen(int qpos, KeySplit split) {
    return min(split.chunks, qpos / split.chunk_keys + 1);
}

// ---- the tensor-core instructions ----------------------------------------------------------

__device__ __forceinline__ uint32_t shared_u32(const bf16 *at) { // two bf16, 4-byte aligned
    return *reinterpret_cast<const uint32_t *>(at);
}

// Rows row0 and row1 (the lane's g and g + 8) of a bf16 tile, head dims [16 kk, +16), as the
// A fragment of one product. tile [rows, LDH]
template <int HDP>
__device__ __forceinline__ void load_a_rows(uint32_t (&a)[4], const bf16 *tile, int row0, int row1,
                                            int kk, int c) {
    constexpr int LDH = TcLayout<HDP>::LDH;
    const int col = 16 * kk + 2 * c;
    a[0] = shared_u32(tile + row0 * LDH + col);
    a[1] = shared_u32(tile + row1 * LDH + col);
    a[2] = shared_u32(tile + row0 * LDH + col + 8);
    a[3] = shared_u32(tile + row1 * LDH + col + 8);
}

// Columns [16 kk, +16) (8-column blocks 2 kk and 2 kk + 1) of a warp's 16-row accumulator,
// rounded to bf16, as the A fragment of the next product: the layouts match.
template <int BLOCKS>
__device__ __forceinline__ void accumulator_as_a(uint32_t (&a)[4], const float (&x)[BLOCKS][4],
                                                 int kk) {
    a[0] = pack_bf16x2(x[2 * kk][0], x[2 * kk][1]);
    a[1] = pack_bf16x2(x[2 * kk][2], x[2 * kk][3]);
    a[2] = pack_bf16x2(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = pack_bf16x2(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

// acc [16, HDP] += a [16, 16] . tile rows [16 kk, +16) [16, HDP]: O += P V, dQ += dS K,
// dV += P^T dO, dK += dS^T Q. The row-major tile is read as the B operand through
// ldmatrix.trans: lane i gives row i % 8 of matrix i / 8, i.e. tile row
// 16 kk + 8 ((i / 8) % 2) + i % 8 at head dims 16 pair + 8 (i / 16). tile [rows, LDH]
template <int HDP>
__device__ __forceinline__ void accumulate_a_times_rows(float (&acc)[HDP / 8][4],
                                                        const uint32_t (&a)[4], const bf16 *tile,
                                                        int kk, int lane) {
    constexpr int LDH = TcLayout<HDP>::LDH;
    static_assert(HDP % 16 == 0, "ldmatrix.x4 takes the head dims 16 at a time");
    const int row = 16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7), dim = 8 * (lane >> 4);
#pragma unroll
    for (int pair = 0; pair < HDP / 16; pair++) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, tile + row * LDH + 16 * pair + dim);
        mma_16816(acc[2 * pair], a, b[0], b[1]);
        mma_16816(acc[2 * pair + 1], a, b[2], b[3]);
    }
}

// Row h (0: the lane's g, 1: g + 8) of a warp's [16, HDP] accumulator, times `scale`, into
// out [hd] (the lane's head dims 8 n + 2 c, + 1 below hd): added to what is there, or written.
template <int BLOCKS>
__device__ __forceinline__ void store_accumulator_row(float *out, const float (&acc)[BLOCKS][4],
                                                      int h, int c, int hd, float scale, bool add) {
#pragma unroll
    for (int n = 0; n < BLOCKS; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int d = 8 * n + 2 * c + e;
            if (d < hd)
                out[d] = scale * acc[n][2 * h + e] + (add ? out[d] : 0.0f);
        }
}

// o [B*Mq, nh, hd]; lse [B*Mq, nh]; qpos [B*Mq]; the padded bf16 copies (HDP per row)
// q [B*Mq, nh, HDP], k, v [B, T, nkv, HDP].
// With split.chunks > 1 the block writes its chunk's partial result instead of o and lse:
// o_part [chunks, B*Mq*nh, hd] = O over the chunk's keys / its own sum, lse_part
// [chunks, B*Mq*nh] = that sum's log (-inf for a row that sees none of the chunk's keys).
template <int HDP>
__global__ void __launch_bounds__(TC_THREADS)
    attention_forward_tc_kernel(float *o, float *lse, float *o_part, float *lse_part, const bf16 *q,
                                const bf16 *k, const bf16 *v, const int32_t *qpos, TcTiling tiling,
                                KeySplit split, int B, int T, int Mq, int nh, int nkv, int hd,
                                float scale_log2) {
    using L = TcLayout<HDP>;
    constexpr int LDH = L::LDH, KEY_BLOCKS = TC_KEYS / 8, D_BLOCKS = HDP / 8;
    extern __shared__ unsigned char smem_raw[];
    SharedCarver carve(smem_raw);
    bf16 *q_tile = carve.take<bf16>(L::HALF_TILE); // [64 rows, LDH]
    // [64 keys, LDH] each, two of each: the next key tile arrives while one is worked on
    bf16 *k_bufs = carve.take<bf16>(2 * L::HALF_TILE); // buffer i at i * TILE
    bf16 *v_bufs = carve.take<bf16>(2 * L::HALF_TILE);
    __shared__ long long row_index[TC_ROWS];
    __shared__ int row_qpos[TC_ROWS], kv_end_shared;

    RowChunkId id = row_chunk_of_block(tiling, nkv, B, split);
    int b = id.tile.b, kvh = id.tile.kvh;
    int kv_end = load_tile_rows(tiling, b, kvh, id.tile.head_tile, id.tile.query_tile, qpos, Mq, nh,
                                row_index, row_qpos, &kv_end_shared);
    int s_begin = id.chunk * split.chunk_keys;
    if (s_begin >= kv_end)
        return; // no row of the tile reaches this chunk (the merge knows: chunks_seen)
    int s_end = min(kv_end, s_begin + split.chunk_keys);
    load_tile_bf16<HDP>(q_tile, q, row_index);
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int row0 = 16 * warp + g, row1 = row0 + 8; // this lane's two rows of the tile
    const int qpos0 = row_qpos[row0], qpos1 = row_qpos[row1];
    const int warp_last = (int)warp_max((float)max(qpos0, qpos1)); // the warp sees keys <= this
    uint32_t qa[HDP / 16][4]; // the warp's q rows as A fragments
#pragma unroll
    for (int kk = 0; kk < HDP / 16; kk++)
        load_a_rows<HDP>(qa[kk], q_tile, row0, row1, kk, c);
    float acc[D_BLOCKS][4]; // O of rows 0 and 1 at head dims 8 n + 2 c, + 1
#pragma unroll
    for (int n = 0; n < D_BLOCKS; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; // running max of rows 0, 1 (log2 units)
    float l0 = 0.0f, l1 = 0.0f;           // this lane's part of their running sums

    walk_key_tiles<HDP>(
        k_bufs, v_bufs, k, v, b, kvh, s_begin, s_end, T, nkv, warp_last,
        [&](const bf16 *k_tile, const bf16 *v_tile, int s0) {
            float sc[KEY_BLOCKS][4]; // S, then P: rows 0, 1 at keys s0 + 8 j + 2 c, + 1
#pragma unroll
            for (int j = 0; j < KEY_BLOCKS; j++) {
                sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
                const bf16 *key = k_tile + (8 * j + g) * LDH + 2 * c; // B column g: key 8 j + g
#pragma unroll
                for (int kk = 0; kk < HDP / 16; kk++)
                    mma_16816(sc[j], qa[kk], shared_u32(key + 16 * kk),
                              shared_u32(key + 16 * kk + 8));
            }
            // The mask (key after the row's position: -inf) and the tile's row maxima.
            float max0 = -INFINITY, max1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < KEY_BLOCKS; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int key = s0 + 8 * j + 2 * c + e;
                    sc[j][e] = key <= qpos0 ? sc[j][e] * scale_log2 : -INFINITY;
                    sc[j][2 + e] = key <= qpos1 ? sc[j][2 + e] * scale_log2 : -INFINITY;
                    max0 = fmaxf(max0, sc[j][e]);
                    max1 = fmaxf(max1, sc[j][2 + e]);
                }
#pragma unroll
            for (int offset = 1; offset <= 2; offset <<= 1) {
                max0 = fmaxf(max0, __shfl_xor_sync(0xffffffffu, max0, offset));
                max1 = fmaxf(max1, __shfl_xor_sync(0xffffffffu, max1, offset));
            }
            const float new0 = fmaxf(m0, max0), new1 = fmaxf(m1, max1);
            // a row that has seen nothing yet (or an idle row) keeps zeros
            const bool none0 = new0 == -INFINITY, none1 = new1 == -INFINITY;
            const float corr0 = none0 ? 1.0f : exp2f(m0 - new0),
                        corr1 = none1 ? 1.0f : exp2f(m1 - new1);
            m0 = new0, m1 = new1;
            float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
            for (int j = 0; j < KEY_BLOCKS; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    sc[j][e] = none0 ? 0.0f : exp2f(sc[j][e] - new0);
                    sc[j][2 + e] = none1 ? 0.0f : exp2f(sc[j][2 + e] - new1);
                    sum0 += sc[j][e];
                    sum1 += sc[j][2 + e];
                }
            l0 = l0 * corr0 + sum0;
            l1 = l1 * corr1 + sum1;
#pragma unroll
            for (int n = 0; n < D_BLOCKS; n++) {
                acc[n][0] *= corr0, acc[n][1] *= corr0;
                acc[n][2] *= corr1, acc[n][3] *= corr1;
            }
        // O += P V, 16 keys (two key blocks) a step.
#pragma unroll
            for (int kk = 0; kk < TC_KEYS / 16; kk++) {
                uint32_t pa[4];
                accumulator_as_a(pa, sc, kk);
                accumulate_a_times_rows<HDP>(acc, pa, v_tile, kk, lane);
            }
        });
#pragma unroll
    for (int offset = 1; offset <= 2; offset <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, offset);
        l1 += __shfl_xor_sync(0xffffffffu, l1, offset);
    }

    // The whole result, or the chunk's part: row i of chunk c at c * rows + i.
    const long long rows = (long long)B * Mq * nh;
    float *o_out = split.chunks == 1 ? o : o_part + (size_t)id.chunk * rows * hd;
    float *lse_out = split.chunks == 1 ? lse : lse_part + (size_t)id.chunk * rows;
    const int tile_row[2] = {row0, row1};
    const float row_m[2] = {m0, m1}, row_l[2] = {l0, l1};
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const long long at = row_index[tile_row[h]];
        if (at < 0)
            continue;
        const bool seen = row_l[h] > 0.0f; // false only for a row before the chunk's first key
        const float inv = seen ? 1.0f / row_l[h] : 0.0f;
        store_accumulator_row(o_out + at * hd, acc, h, c, hd, inv, false);
        if (c == 0)
            lse_out[at] = seen ? (row_m[h] + log2f(row_l[h])) * LN2 : -INFINITY;
    }
}

// o, lse from the chunks' parts (see attention_forward_tc_kernel), one warp per row, chunks
// in order: O = sum_c e^(lse_c - lse) O_c with lse = log sum_c e^lse_c.
__global__ void attention_merge_chunks_kernel(float *o, float *lse, const float *o_part,
                                              const float *lse_part, const int32_t *qpos,
                                              long long rows, int nh, int hd, KeySplit split) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows)
        return;
    int lane = threadIdx.x & 31;
    int chunks = chunks_seen(qpos[row / nh], split); // chunk 0 always: it holds key 0
    float m = -INFINITY;
    for (int c = 0; c < chunks; c++)
        m = fmaxf(m, lse_part[c * rows + row]);
    float total = 0.0f;
    for (int c = 0; c < chunks; c++)
        total += expf(lse_part[c * rows + row] - m);
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.0f;
        for (int c = 0; c < chunks; c++)
            acc += expf(lse_part[c * rows + row] - m) * o_part[(c * rows + row) * hd + d];
        o[row * hd + d] = acc / total;
    }
    if (lane == 0)
        lse[row] = m + logf(total);
}

// dq [B*Mq, nh, hd] += dS K; row_D [B*Mq, nh] = rowsum(dout * o) (written for the dk/dv
// kernel by the blocks of chunk 0). Same rows and key walk as the forward. With
// split.chunks > 1 the block writes its chunk's dS K to dq_part [chunks, B*Mq*nh, hd]
// instead of adding it to dq.
template <int HDP>
__global__ void __launch_bounds__(TC_THREADS)
    attention_dq_tc_kernel(float *dq, float *dq_part, float *row_D_out, const float *dout,
                           const float *o, const bf16 *q16, const bf16 *dout16, const bf16 *k,
                           const bf16 *v, const float *lse, const int32_t *qpos, TcTiling tiling,
                           KeySplit split, int B, int T, int Mq, int nh, int nkv, int hd,
                           float scale, float scale_log2) {
    using L = TcLayout<HDP>;
    constexpr int LDH = L::LDH, KEY_BLOCKS = TC_KEYS / 8, D_BLOCKS = HDP / 8;
    extern __shared__ unsigned char smem_raw[];
    SharedCarver carve(smem_raw);
    bf16 *q_tile = carve.take<bf16>(L::HALF_TILE);  // [64 rows, LDH]
    bf16 *do_tile = carve.take<bf16>(L::HALF_TILE); // [64 rows, LDH]
    // [64 keys, LDH] each, two of each: the next key tile arrives while one is worked on
    bf16 *k_bufs = carve.take<bf16>(2 * L::HALF_TILE); // buffer i at i * TILE
    bf16 *v_bufs = carve.take<bf16>(2 * L::HALF_TILE);
    __shared__ long long row_index[TC_ROWS];
    __shared__ int row_qpos[TC_ROWS], kv_end_shared;

    RowChunkId id = row_chunk_of_block(tiling, nkv, B, split);
    int b = id.tile.b, kvh = id.tile.kvh;
    int kv_end = load_tile_rows(tiling, b, kvh, id.tile.head_tile, id.tile.query_tile, qpos, Mq, nh,
                                row_index, row_qpos, &kv_end_shared);
    int s_begin = id.chunk * split.chunk_keys;
    if (s_begin >= kv_end)
        return; // no row of the tile reaches this chunk (chunk 0 always runs)
    int s_end = min(kv_end, s_begin + split.chunk_keys);
    load_tile_bf16<HDP>(q_tile, q16, row_index);
    load_tile_bf16<HDP>(do_tile, dout16, row_index);
    __syncthreads();

    // The lane's rows g and g + 8 of the warp's 16, as in the forward.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int tile_row[2] = {16 * warp + g, 16 * warp + g + 8};
    const int qpos0 = row_qpos[tile_row[0]], qpos1 = row_qpos[tile_row[1]];
    const int warp_last = (int)warp_max((float)max(qpos0, qpos1));
    // D = dout . o and lse (log2 units) of both rows, in fp32 from the fp32 buffers: the 4
    // lanes of the quad take every 4th head dim.
    float D[2] = {0.0f, 0.0f}, lse2[2] = {0.0f, 0.0f};
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const long long at = row_index[tile_row[h]];
        if (at >= 0) {
            for (int d = c; d < hd; d += 4)
                D[h] += dout[at * hd + d] * o[at * hd + d];
            lse2[h] = lse[at] * LOG2E;
        }
        D[h] += __shfl_xor_sync(0xffffffffu, D[h], 1);
        D[h] += __shfl_xor_sync(0xffffffffu, D[h], 2);
        if (id.chunk == 0 && at >= 0 && c == 0)
            row_D_out[at] = D[h];
    }
    uint32_t qa[HDP / 16][4], da[HDP / 16][4]; // the warp's q and dout rows as A fragments
#pragma unroll
    for (int kk = 0; kk < HDP / 16; kk++) {
        load_a_rows<HDP>(qa[kk], q_tile, tile_row[0], tile_row[1], kk, c);
        load_a_rows<HDP>(da[kk], do_tile, tile_row[0], tile_row[1], kk, c);
    }
    float acc[D_BLOCKS][4]; // dQ of rows g, g + 8 at head dims 8 n + 2 c, + 1
#pragma unroll
    for (int n = 0; n < D_BLOCKS; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

    walk_key_tiles<HDP>(k_bufs, v_bufs, k, v, b, kvh, s_begin, s_end, T, nkv, warp_last,
                        [&](const bf16 *k_tile, const bf16 *v_tile, int s0) {
                            // S = Q K^T and dP = dout V^T, then dS = P (dP - D) / sqrt(hd) in place
                            // of dP.
                            float sc[KEY_BLOCKS][4], dp[KEY_BLOCKS][4];
#pragma unroll
                            for (int j = 0; j < KEY_BLOCKS; j++) {
                                sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
                                dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
                                const bf16 *key = k_tile + (8 * j + g) * LDH + 2 * c;
                                const bf16 *value = v_tile + (8 * j + g) * LDH + 2 * c;
#pragma unroll
                                for (int kk = 0; kk < HDP / 16; kk++) {
                                    mma_16816(sc[j], qa[kk], shared_u32(key + 16 * kk),
                                              shared_u32(key + 16 * kk + 8));
                                    mma_16816(dp[j], da[kk], shared_u32(value + 16 * kk),
                                              shared_u32(value + 16 * kk + 8));
                                }
#pragma unroll
                                for (int e = 0; e < 4; e++) {
                                    const int h = e >> 1, key_at = s0 + 8 * j + 2 * c + (e & 1);
                                    const int row_qpos_h = h ? qpos1 : qpos0;
                                    float p = 0.0f;
                                    if (key_at <= row_qpos_h)
                                        p = exp2f(sc[j][e] * scale_log2 - lse2[h]);
                                    dp[j][e] = p * (dp[j][e] - D[h]) * scale;
                                }
                            }
        // dQ += dS K, 16 keys a step.
#pragma unroll
                            for (int kk = 0; kk < TC_KEYS / 16; kk++) {
                                uint32_t dsa[4];
                                accumulator_as_a(dsa, dp, kk);
                                accumulate_a_times_rows<HDP>(acc, dsa, k_tile, kk, lane);
                            }
                        });

    const long long rows = (long long)B * Mq * nh;
    float *part = split.chunks == 1 ? NULL : dq_part + (size_t)id.chunk * rows * hd;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const long long at = row_index[tile_row[h]];
        if (at < 0)
            continue;
        if (part)
            store_accumulator_row(part + at * hd, acc, h, c, hd, 1.0f, false);
        else
            store_accumulator_row(dq + at * hd, acc, h, c, hd, 1.0f, true);
    }
}

// dq [rows, hd] += the sum of the chunks' parts a row has keys in, chunk 0 first.
__global__ void attention_sum_dq_chunks_kernel(float *dq, const float *dq_part, const int32_t *qpos,
                                               long long rows, int nh, int hd, KeySplit split) {
    long long n = rows * hd;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int chunks = chunks_seen(qpos[i / hd / nh], split);
        float acc = 0.0f;
        for (int c = 0; c < chunks; c++)
            acc += dq_part[c * n + i];
        dq[i] += acc;
    }
}

// chunk_last [B, chunks]: the last position among the queries of each query chunk of each
// sequence (-1 when the chunk holds none), which says which key tiles a chunk reaches.
__global__ void attention_query_chunk_last_kernel(int *chunk_last, const int32_t *qpos, int B,
                                                  int Mq, int queries_per_chunk, int chunks) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * chunks)
        return;
    int b = i / chunks, first = (i % chunks) * queries_per_chunk, last = -1;
    for (int query = first; query < first + queries_per_chunk && query < Mq; query++)
        last = max(last, qpos[b * Mq + query]);
    chunk_last[i] = last;
}

// ---- the dk/dv kernel's walk over row tiles ----------------------------------------------------

// What the dk/dv kernel reads of the rows: the padded bf16 copies q, dout [B*Mq, nh, HDP], lse
// [B*Mq, nh] (natural log, from the forward), D [B*Mq, nh] (rowsum(dout * o), from the dq
// kernel) and qpos [B*Mq].
struct RowSources {
    const bf16 *q, *dout;
    const float *lse, *D;
    const int32_t *qpos;
};

// The statistics of a row tile's rows, in shared memory beside its q and dout tiles.
struct RowStats {
    int qpos[TC_ROWS];  // the row sees keys <= qpos (-1 for an idle row: none)
    float lse[TC_ROWS]; // natural log, as the forward wrote it (0 when idle)
    float D[TC_ROWS];   // (0 when idle)
};

// One row tile of the walk: query tile query_tile of head tile head_tile (head_tile ==
// head_tiles: the walk is over).
struct RowTileAt {
    int head_tile, query_tile;
};

// The first query tile in [from, tile_end) with a query that sees key s0 (its position is
// >= s0), or tile_end: the tiles in between lie wholly in the key tile's past, which is the
// test of each tile's last query. Each warp scans 32 queries at a time (one coalesced load and
// a ballot) and every warp finds the same tile. qpos_b [Mq]: the positions of the sequence's
// queries. Every thread of the block calls it.
__device__ __forceinline__ int next_query_tile_seeing(const int32_t *qpos_b, int from, int tile_end,
                                                      int queries_per_tile, int Mq, int s0) {
    const int lane = threadIdx.x & 31, query_end = min(Mq, tile_end * queries_per_tile);
    for (int first = from * queries_per_tile; first < query_end; first += 32) {
        const int query = first + lane;
        const unsigned seeing =
            __ballot_sync(0xffffffffu, query < query_end && qpos_b[query] >= s0);
        if (seeing != 0u)
            return (first + __ffs(seeing) - 1) / queries_per_tile; // the lowest query that sees
    }
    return tile_end;
}

// The row tile the walk visits after `at`: the next query tile of the chunk [tile_begin,
// tile_end) that sees key s0 in the same head tile, else the first one of the next head tile
// (there is one: the same query tiles see the keys in every head tile).
__device__ __forceinline__ RowTileAt next_row_tile(RowTileAt at, TcTiling t, const int32_t *qpos_b,
                                                   int tile_begin, int tile_end, int Mq, int s0) {
    RowTileAt next = {at.head_tile, next_query_tile_seeing(qpos_b, at.query_tile + 1, tile_end,
                                                           t.queries_per_tile, Mq, s0)};
    if (next.query_tile == tile_end && ++next.head_tile < t.head_tiles)
        next.query_tile =
            next_query_tile_seeing(qpos_b, tile_begin, tile_end, t.queries_per_tile, Mq, s0);
    return next;
}

// Row tile `at` of kv head kvh in sequence b, as cp.async copies the caller commits and waits
// for: its q and dout rows into q_tile, do_tile [64, LDH] (zero rows where idle) and its rows'
// statistics into stats (an idle row gets its own by plain stores, which the same barrier
// publishes). row_place [64] from tile_row_place.
template <int HDP>
__device__ __forceinline__ void
issue_row_tile(bf16 *q_tile, bf16 *do_tile, RowStats *stats, const TileRowPlace *row_place,
               RowSources src, TcTiling t, RowTileAt at, int b, int kvh, int Mq, int nh) {
    issue_tile_pair<HDP>(q_tile, do_tile, src.q, src.dout, [&](int r) {
        const TileRow row = tile_row(t, row_place[r], kvh, at.head_tile, at.query_tile, Mq);
        const bool valid = row.query >= 0;
        return SourceRow{valid, valid ? ((long long)b * Mq + row.query) * nh + row.head : 0};
    });
    if (threadIdx.x < TC_ROWS) {
        const int r = threadIdx.x;
        const TileRow row = tile_row(t, row_place[r], kvh, at.head_tile, at.query_tile, Mq);
        if (row.query >= 0) {
            const long long query_at = (long long)b * Mq + row.query;
            const long long row_at = query_at * nh + row.head;
            cp_async_4(&stats->qpos[r], src.qpos + query_at);
            cp_async_4(&stats->lse[r], src.lse + row_at);
            cp_async_4(&stats->D[r], src.D + row_at);
        } else {
            stats->qpos[r] = -1; // so P and dS are 0 on the row
            stats->lse[r] = 0.0f;
            stats->D[r] = 0.0f;
        }
    }
}

// dk, dv [B, T, nkv, hd] += dS^T Q, P^T dO over every query head of one kv head, for one
// tile of 64 keys of one sequence. row_D [B*Mq, nh] from the dq kernel. With
// split.chunks > 1 a block walks one chunk of the query tiles and writes its sums to
// dk_part, dv_part [chunks, B, T, nkv, hd] instead, or nothing when chunk_last says no query
// of its chunk sees the key tile.
template <int HDP>
__global__ void __launch_bounds__(TC_THREADS)
    attention_dkdv_tc_kernel(float *dk, float *dv, float *dk_part, float *dv_part,
                             const int *chunk_last, const float *row_D, const bf16 *dout,
                             const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                             const int32_t *qpos, TcTiling tiling, QuerySplit split, int B, int T,
                             int Mq, int nh, int nkv, int hd, float scale, float scale_log2) {
    using L = TcLayout<HDP>;
    constexpr int LDH = L::LDH, D_BLOCKS = HDP / 8;
    constexpr int TILE = TC_ROWS * LDH; // elements of one row tile
    // A row tile is worked on in ROW_PARTS parts of PART_ROWS rows, S^T and dP^T held for one
    // part at a time: that sets the registers. At HDP = 64 two parts take 166, under the 168
    // that let 3 blocks share an SM (one part took 172: 2 blocks). At HDP = 128 one part: two
    // took more registers and spilled (the compiler seems to keep the first part's K and V
    // fragments, the same loads, for the second).
    constexpr int ROW_PARTS = HDP == 128 ? 1 : HDP == 64 ? 2 : 4;
    constexpr int PART_ROWS = TC_ROWS / ROW_PARTS;
    constexpr int PART_BLOCKS = PART_ROWS / 8;
    extern __shared__ unsigned char smem_raw[];
    SharedCarver carve(smem_raw);
    bf16 *k_tile = carve.take<bf16>(L::HALF_TILE); // [64 keys, LDH]
    bf16 *v_tile = carve.take<bf16>(L::HALF_TILE); // [64 keys, LDH]
    // [64 rows, LDH] each, two of each: the next row tile arrives while one is worked on
    bf16 *q_bufs = carve.take<bf16>(2 * L::HALF_TILE); // buffer i at i * TILE
    bf16 *do_bufs = carve.take<bf16>(2 * L::HALF_TILE);
    __shared__ RowStats row_stats[2];           // the rows of buffers 0 and 1
    __shared__ TileRowPlace row_place[TC_ROWS]; // where each row sits, in every row tile

    // One-dimensional grid, chunk-major, and within a chunk the first key tiles (seen by the
    // most queries) first, as the row kernels order theirs.
    int key_blocks = gridDim.x / split.chunks;
    int chunk = blockIdx.x / key_blocks, block = blockIdx.x % key_blocks;
    int key_tile = block / (nkv * B), rest = block % (nkv * B);
    int b = rest / nkv, kvh = rest % nkv, s0 = key_tile * TC_KEYS;
    if (split.chunks > 1 && chunk_last[b * split.chunks + chunk] < s0)
        return; // no query of the chunk sees these keys (the sum skips the chunk too)
    int tile_begin = chunk * split.chunk_tiles;
    int tile_end = min(tiling.query_tiles, tile_begin + split.chunk_tiles);
    if (threadIdx.x < TC_ROWS)
        row_place[threadIdx.x] = tile_row_place(tiling, threadIdx.x);
    __syncthreads(); // every thread's copies read row_place
    const RowSources rows_in = {q, dout, lse, row_D, qpos};
    const int32_t *qpos_b = qpos + (long long)b * Mq; // [Mq]

    // The transposed problem: lane (g, c) of warp w holds keys 16 w + g and 16 w + g + 8 of
    // the tile (the A rows) against rows 8 j + 2 c, + 1 of the row tile (the B columns).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int key_in_tile[2] = {16 * warp + g, 16 * warp + g + 8};
    const int key_at[2] = {s0 + key_in_tile[0], s0 + key_in_tile[1]};
    float dk_acc[D_BLOCKS][4], dv_acc[D_BLOCKS][4]; // keys g, g + 8 at head dims 8 n + 2 c, + 1
#pragma unroll
    for (int n = 0; n < D_BLOCKS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk_acc[n][e] = dv_acc[n][e] = 0.0f;

    // The walk: for every head tile, the chunk's query tiles that see the keys, in order. Row
    // tile i + 1 is copied (cp.async) into the other buffers while tile i is worked on; those
    // were last read in iteration i - 1, before its closing barrier. The k and v tiles come
    // with the first row tile and stay. When no tile sees the keys nothing is copied and the
    // sums stay 0.
    RowTileAt tile = {
        0, next_query_tile_seeing(qpos_b, tile_begin, tile_end, tiling.queries_per_tile, Mq, s0)};
    if (tile.query_tile == tile_end) {
        tile.head_tile = tiling.head_tiles;
    } else {
        issue_key_value_tiles<HDP>(k_tile, v_tile, k, v, b, kvh, s0, T, nkv);
        issue_row_tile<HDP>(q_bufs, do_bufs, &row_stats[0], row_place, rows_in, tiling, tile, b,
                            kvh, Mq, nh);
    }
    cp_async_commit();
    for (int buf = 0; tile.head_tile < tiling.head_tiles; buf ^= 1) {
        const RowTileAt next = next_row_tile(tile, tiling, qpos_b, tile_begin, tile_end, Mq, s0);
        if (next.head_tile < tiling.head_tiles)
            issue_row_tile<HDP>(q_bufs + (buf ^ 1) * TILE, do_bufs + (buf ^ 1) * TILE,
                                &row_stats[buf ^ 1], row_place, rows_in, tiling, next, b, kvh, Mq,
                                nh);
        cp_async_commit();  // (an empty group after the last tile: the wait below stays the same)
        cp_async_wait<1>(); // this tile's copies are in (the next tile's may be on the way)
        __syncthreads();    // ... every thread's
        const bf16 *q_tile = q_bufs + buf * TILE, *do_tile = do_bufs + buf * TILE;
        const RowStats &rows = row_stats[buf];

        // The rows in ROW_PARTS parts, S^T and dP^T held for one part at a time (the products
        // and the order of every sum are the same for any number of parts).
#pragma unroll
        for (int part = 0; part < ROW_PARTS; part++) {
            // S^T = K Q^T and dP^T = V dout^T for the warp's 16 keys against the part's rows:
            // block j holds rows row0 + 8 j + 2 c, + 1 (B column g: row row0 + 8 j + g).
            const int row0 = PART_ROWS * part;
            float st[PART_BLOCKS][4], dpt[PART_BLOCKS][4];
#pragma unroll
            for (int j = 0; j < PART_BLOCKS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    st[j][e] = dpt[j][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++) {
                const int col = 16 * kk + 2 * c;
                uint32_t ka[4], va[4];
                load_a_rows<HDP>(ka, k_tile, key_in_tile[0], key_in_tile[1], kk, c);
                load_a_rows<HDP>(va, v_tile, key_in_tile[0], key_in_tile[1], kk, c);
#pragma unroll
                for (int j = 0; j < PART_BLOCKS; j++) {
                    const bf16 *q_row = q_tile + (row0 + 8 * j + g) * LDH + col;
                    const bf16 *do_row = do_tile + (row0 + 8 * j + g) * LDH + col;
                    mma_16816(st[j], ka, shared_u32(q_row), shared_u32(q_row + 8));
                    mma_16816(dpt[j], va, shared_u32(do_row), shared_u32(do_row + 8));
                }
            }
            // P^T = exp(S^T / sqrt(hd) - lse) and dS^T = P^T (dP^T - D) / sqrt(hd), 0 where
            // the key lies after the row's position; P^T in st, dS^T in dpt. (__fmul_rn: lse
            // goes to log2 units rounded on its own, not fused with S^T, as when it was done
            // once per row.)
#pragma unroll
            for (int j = 0; j < PART_BLOCKS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int row = row0 + 8 * j + 2 * c + (e & 1), key = key_at[e >> 1];
                    float p = 0.0f;
                    if (key <= rows.qpos[row])
                        p = exp2f(st[j][e] * scale_log2 - __fmul_rn(rows.lse[row], LOG2E));
                    dpt[j][e] = p * (dpt[j][e] - rows.D[row]) * scale;
                    st[j][e] = p;
                }
                // dV += P^T dout and dK += dS^T Q, 16 rows a step.
#pragma unroll
            for (int kk = 0; kk < PART_ROWS / 16; kk++) {
                const int rows16 = row0 / 16 + kk; // rows [16 rows16, +16) of the tile
                uint32_t pa[4], dsa[4];
                accumulator_as_a(pa, st, kk);
                accumulator_as_a(dsa, dpt, kk);
                accumulate_a_times_rows<HDP>(dv_acc, pa, do_tile, rows16, lane);
                accumulate_a_times_rows<HDP>(dk_acc, dsa, q_tile, rows16, lane);
            }
        }
        __syncthreads(); // every warp is done with this tile's buffers
        tile = next;
    }

    // Add dK and dV to the fp32 outputs (or write them to the chunk's parts).
    const size_t part_offset = (size_t)chunk * B * T * nkv * hd;
    float *dk_out = split.chunks > 1 ? dk_part + part_offset : dk;
    float *dv_out = split.chunks > 1 ? dv_part + part_offset : dv;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (key_at[h] >= T)
            continue;
        const long long base = (((long long)b * T + key_at[h]) * nkv + kvh) * hd;
        store_accumulator_row(dk_out + base, dk_acc, h, c, hd, 1.0f, split.chunks == 1);
        store_accumulator_row(dv_out + base, dv_acc, h, c, hd, 1.0f, split.chunks == 1);
    }
}

// dk, dv [B, T, nkv, hd] += the sum of the query chunks' parts that reach each key's tile,
// chunk 0 first (the chunks the dk/dv kernel wrote: chunk_last >= the tile's first key).
__global__ void attention_sum_kv_chunks_kernel(float *dk, float *dv, const float *dk_part,
                                               const float *dv_part, const int *chunk_last, int B,
                                               int T, int nkv, int hd, int chunks) {
    long long n = (long long)B * T * nkv * hd;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long token = i / ((long long)nkv * hd); // b * T + s
        int b = (int)(token / T), s0 = (int)(token % T) / TC_KEYS * TC_KEYS;
        float acc_k = 0.0f, acc_v = 0.0f;
        for (int c = 0; c < chunks; c++) {
            if (chunk_last[b * chunks + c] < s0)
                continue;
            acc_k += dk_part[c * n + i];
            acc_v += dv_part[c * n + i];
        }
        dk[i] += acc_k;
        dv[i] += acc_v;
    }
}

// ---- host side ------------------------------------------------------------------------------

// The head dim the kernels are built for: hd rounded up to 16, 32, 64 or 128 (zero padding
// adds exact zeros to every product).
static int padded_head_dim(int hd) {
    if (hd <= 16)
        return 16;
    if (hd <= 32)
        return 32;
    if (hd <= 64)
        return 64;
    return 128;
}

template <int HDP> static size_t forward_shared_bytes(void) {
    return 5 * TcLayout<HDP>::HALF_TILE + 128; // q, two k, two v
}
template <int HDP> static size_t dq_shared_bytes(void) {
    return 6 * TcLayout<HDP>::HALF_TILE + 128; // q, dout, two k, two v
}
template <int HDP> static size_t dkdv_shared_bytes(void) {
    return 6 * TcLayout<HDP>::HALF_TILE + 128; // k, v, two q, two dout
}

// Blocks that keep the GPU busy to the end: about four waves of 3 resident blocks per SM (the
// forward's registers, about 130 a thread at HDP = 64, allow 3). A smaller grid gets its
// walks cut into chunks.
static int busy_grid_blocks(void) {
    return 12 * cuda_sm_count();
}

// Key chunks for row_blocks row tiles over T keys. About half the (row tile, chunk) blocks
// are empty (the early queries' tiles end before the late chunks), hence twice the target.
static KeySplit key_split(int row_blocks, int T) {
    int key_tiles = (T + TC_KEYS - 1) / TC_KEYS;
    int want = (2 * busy_grid_blocks() + row_blocks - 1) / row_blocks;
    want = want < 1 ? 1 : want > key_tiles ? key_tiles : want;
    int chunk_tiles = (key_tiles + want - 1) / want;
    KeySplit split = {chunk_tiles * TC_KEYS, (key_tiles + chunk_tiles - 1) / chunk_tiles};
    return split;
}

// Query chunks for key_blocks key tiles over query_tiles row tiles.
static QuerySplit query_split(int key_blocks, int query_tiles) {
    int want = (busy_grid_blocks() + key_blocks - 1) / key_blocks;
    want = want < 1 ? 1 : want > query_tiles ? query_tiles : want;
    int chunk_tiles = (query_tiles + want - 1) / want;
    QuerySplit split = {chunk_tiles, (query_tiles + chunk_tiles - 1) / chunk_tiles};
    return split;
}

template <typename Kernel> static void allow_shared_bytes(Kernel kernel, size_t bytes) {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static const int MERGE_THREADS = 256;

template <int HDP>
static void forward_tc(float *o, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    TcTiling tiling = tc_tiling(nh, nkv, Mq);
    int row_blocks = tiling.query_tiles * nkv * tiling.head_tiles * B;
    KeySplit split = key_split(row_blocks, T);
    const long long rows = (long long)B * Mq * nh, kv_rows = (long long)B * T * nkv;

    // One workspace request for every part (see cuda_workspace).
    size_t q_bytes = (size_t)rows * HDP * sizeof(bf16);
    size_t kv_bytes = (size_t)kv_rows * HDP * sizeof(bf16);
    size_t o_bytes = split.chunks > 1 ? (size_t)split.chunks * rows * hd * sizeof(float) : 0;
    size_t lse_bytes = split.chunks > 1 ? (size_t)split.chunks * rows * sizeof(float) : 0;
    char *cursor = (char *)cuda_workspace(
        cuda_workspace_part_bytes(q_bytes) + 2 * cuda_workspace_part_bytes(kv_bytes) +
        cuda_workspace_part_bytes(o_bytes) + cuda_workspace_part_bytes(lse_bytes));
    bf16 *q16 = (bf16 *)cuda_workspace_carve(&cursor, q_bytes);          // [rows, HDP]
    bf16 *k16 = (bf16 *)cuda_workspace_carve(&cursor, kv_bytes);         // [kv_rows, HDP]
    bf16 *v16 = (bf16 *)cuda_workspace_carve(&cursor, kv_bytes);         // [kv_rows, HDP]
    float *o_part = (float *)cuda_workspace_carve(&cursor, o_bytes);     // [chunks, rows, hd]
    float *lse_part = (float *)cuda_workspace_carve(&cursor, lse_bytes); // [chunks, rows]
    cuda_to_bf16_padded(q16, HDP, q, (int)rows, hd);
    cuda_to_bf16_padded(k16, HDP, k, (int)kv_rows, hd);
    cuda_to_bf16_padded(v16, HDP, v, (int)kv_rows, hd);

    size_t shared = forward_shared_bytes<HDP>();
    float scale_log2 = LOG2E / sqrtf((float)hd);
    allow_shared_bytes(attention_forward_tc_kernel<HDP>, shared);
    attention_forward_tc_kernel<HDP>
        <<<row_blocks * split.chunks, TC_THREADS, shared, cuda_stream()>>>(
            o, lse, o_part, lse_part, q16, k16, v16, qpos, tiling, split, B, T, Mq, nh, nkv, hd,
            scale_log2);
    CUDA_CHECK_LAUNCH("attention_forward_tc_kernel");
    if (split.chunks == 1)
        return;
    int warps_per_block = MERGE_THREADS / 32;
    int blocks = (int)((rows + warps_per_block - 1) / warps_per_block);
    attention_merge_chunks_kernel<<<blocks, MERGE_THREADS, 0, cuda_stream()>>>(
        o, lse, o_part, lse_part, qpos, rows, nh, hd, split);
    CUDA_CHECK_LAUNCH("attention_merge_chunks_kernel");
}

template <int HDP>
static void backward_tc(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *o, const float *lse,
                        const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    TcTiling tiling = tc_tiling(nh, nkv, Mq);
    float scale = 1.0f / sqrtf((float)hd), scale_log2 = LOG2E * scale;
    const long long rows = (long long)B * Mq * nh;
    const size_t kv_floats = (size_t)B * T * nkv * hd;
    int row_blocks = tiling.query_tiles * nkv * tiling.head_tiles * B;
    int key_blocks = (T + TC_KEYS - 1) / TC_KEYS * nkv * B;
    KeySplit keys = key_split(row_blocks, T);
    QuerySplit queries = query_split(key_blocks, tiling.query_tiles);

    // One workspace request for every part (see cuda_workspace).
    size_t q_bytes = (size_t)rows * HDP * sizeof(bf16);
    size_t kv16_bytes = kv_floats / hd * HDP * sizeof(bf16);
    size_t D_bytes = (size_t)rows * sizeof(float);
    size_t dq_bytes = keys.chunks > 1 ? (size_t)keys.chunks * rows * hd * sizeof(float) : 0;
    size_t kv_bytes = queries.chunks > 1 ? queries.chunks * kv_floats * sizeof(float) : 0;
    size_t last_bytes = (size_t)B * queries.chunks * sizeof(int);
    char *cursor = (char *)cuda_workspace(
        2 * cuda_workspace_part_bytes(q_bytes) + 2 * cuda_workspace_part_bytes(kv16_bytes) +
        cuda_workspace_part_bytes(D_bytes) + cuda_workspace_part_bytes(dq_bytes) +
        2 * cuda_workspace_part_bytes(kv_bytes) + cuda_workspace_part_bytes(last_bytes));
    bf16 *q16 = (bf16 *)cuda_workspace_carve(&cursor, q_bytes);         // [rows, HDP]
    bf16 *dout16 = (bf16 *)cuda_workspace_carve(&cursor, q_bytes);      // [rows, HDP]
    bf16 *k16 = (bf16 *)cuda_workspace_carve(&cursor, kv16_bytes);      // [B*T*nkv, HDP]
    bf16 *v16 = (bf16 *)cuda_workspace_carve(&cursor, kv16_bytes);      // [B*T*nkv, HDP]
    float *row_D = (float *)cuda_workspace_carve(&cursor, D_bytes);     // [B*Mq, nh]
    float *dq_part = (float *)cuda_workspace_carve(&cursor, dq_bytes);  // [chunks, rows, hd]
    float *dk_part = (float *)cuda_workspace_carve(&cursor, kv_bytes);  // [chunks, B,T,nkv,hd]
    float *dv_part = (float *)cuda_workspace_carve(&cursor, kv_bytes);  // [chunks, B,T,nkv,hd]
    int *chunk_last = (int *)cuda_workspace_carve(&cursor, last_bytes); // [B, chunks]
    cuda_to_bf16_padded(q16, HDP, q, (int)rows, hd);
    cuda_to_bf16_padded(dout16, HDP, dout, (int)rows, hd);
    cuda_to_bf16_padded(k16, HDP, k, B * T * nkv, hd);
    cuda_to_bf16_padded(v16, HDP, v, B * T * nkv, hd);

    size_t shared = dq_shared_bytes<HDP>();
    allow_shared_bytes(attention_dq_tc_kernel<HDP>, shared);
    attention_dq_tc_kernel<HDP><<<row_blocks * keys.chunks, TC_THREADS, shared, cuda_stream()>>>(
        dq, dq_part, row_D, dout, o, q16, dout16, k16, v16, lse, qpos, tiling, keys, B, T, Mq, nh,
        nkv, hd, scale, scale_log2);
    CUDA_CHECK_LAUNCH("attention_dq_tc_kernel");
    if (keys.chunks > 1) {
        attention_sum_dq_chunks_kernel<<<cuda_grid((size_t)rows * hd, MERGE_THREADS), MERGE_THREADS,
                                         0, cuda_stream()>>>(dq, dq_part, qpos, rows, nh, hd, keys);
        CUDA_CHECK_LAUNCH("attention_sum_dq_chunks_kernel");
    }

    if (queries.chunks > 1) {
        int queries_per_chunk = queries.chunk_tiles * tiling.queries_per_tile;
        attention_query_chunk_last_kernel<<<cuda_grid((size_t)B * queries.chunks, MERGE_THREADS),
                                            MERGE_THREADS, 0, cuda_stream()>>>(
            chunk_last, qpos, B, Mq, queries_per_chunk, queries.chunks);
        CUDA_CHECK_LAUNCH("attention_query_chunk_last_kernel");
    }
    shared = dkdv_shared_bytes<HDP>();
    allow_shared_bytes(attention_dkdv_tc_kernel<HDP>, shared);
    attention_dkdv_tc_kernel<HDP>
        <<<key_blocks * queries.chunks, TC_THREADS, shared, cuda_stream()>>>(
            dk, dv, dk_part, dv_part, chunk_last, row_D, dout16, q16, k16, v16, lse, qpos, tiling,
            queries, B, T, Mq, nh, nkv, hd, scale, scale_log2);
    CUDA_CHECK_LAUNCH("attention_dkdv_tc_kernel");
    if (queries.chunks > 1) {
        attention_sum_kv_chunks_kernel<<<cuda_grid(kv_floats, MERGE_THREADS), MERGE_THREADS, 0,
                                         cuda_stream()>>>(dk, dv, dk_part, dv_part, chunk_last, B,
                                                          T, nkv, hd, queries.chunks);
        CUDA_CHECK_LAUNCH("attention_sum_kv_chunks_kernel");
    }
}

// Shapes are checked by the callers in cuda_attention.cu (nh % nkv, 1 <= hd <= 128).
void cuda_attention_forward_tc(float *o, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd) {
    switch (padded_head_dim(hd)) {
    case 16:
        forward_tc<16>(o, lse, q, k, v, qpos, B, T, Mq, nh, nkv, hd);
        break;
    case 32:
        forward_tc<32>(o, lse, q, k, v, qpos, B, T, Mq, nh, nkv, hd);
        break;
    case 64:
        forward_tc<64>(o, lse, q, k, v, qpos, B, T, Mq, nh, nkv, hd);
        break;
    default:
        forward_tc<128>(o, lse, q, k, v, qpos, B, T, Mq, nh, nkv, hd);
        break;
    }
}

void cuda_attention_backward_tc(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *o, const float *lse,
                                const int32_t *qpos, int B, int T, int Mq, int nh, int nkv,
                                int hd) {
    switch (padded_head_dim(hd)) {
    case 16:
        backward_tc<16>(dq, dk, dv, dout, q, k, v, o, lse, qpos, B, T, Mq, nh, nkv, hd);
        break;
    case 32:
        backward_tc<32>(dq, dk, dv, dout, q, k, v, o, lse, qpos, B, T, Mq, nh, nkv, hd);
        break;
    case 64:
        backward_tc<64>(dq, dk, dv, dout, q, k, v, o, lse, qpos, B, T, Mq, nh, nkv, hd);
        break;
    default:
        backward_tc<128>(dq, dk, dv, dout, q, k, v, o, lse, qpos, B, T, Mq, nh, nkv, hd);
        break;
    }
}
