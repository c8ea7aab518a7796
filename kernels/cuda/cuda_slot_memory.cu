// Slot memory read-out on the GPU: softmax weights over a token's K chosen slots, the
// weighted sum of their value rows added to the residual, the routing-entropy loss, and the
// backwards of the read-out and of the scores.
//
// The read-out is a pure stream: per token it reads K value rows of H floats (the bulk: N K
// rows of H floats, 268 MB at the seed shape) and does 2 flops per float, so the kernels are
// written to run at memory bandwidth:
// - the rows are read where they are, values[idx[n*K + k]] (the layer's table, or the rows
//   the slot exchange received), not from a copy in token order: a gather pass that wrote
//   that copy and the read that read it back cost 2 x 268 MB of traffic a layer. In the
//   backward, likewise, the rows' gradients go straight into dvalues (the table's gradient,
//   or the exchange's send buffer), with float4 atomic adds, instead of into a [N, K, H]
//   buffer that a scatter pass then read;
// - one warp per token, READ_WARPS tokens per block. The K softmax weights (and the token's
//   entropy) are computed once per token, lane k holding slot k, in double as the cpu
//   oracle, and handed to the other lanes through shared memory. (The first version had
//   every thread of a 128-thread block redo the K double exps before its first load of
//   value rows: some 85 us of the fp64 pipe at the seed shape, by our estimate, of its 200 us.)
//   The backward reads the saved weights with broadcast loads. The K row indices, likewise
//   loaded by lane k, go to the warp through shared memory.
// - the columns are walked as float4 when H % 4 == 0 and every row pointer is 16-byte
//   aligned (the scalar instantiation of the same template covers any other H);
// - for each column chunk a lane first issues the loads of a group of GROUP value rows (K
//   rounded up to 1, 2, 4 or 8; larger K in groups of 8), then does their multiply-adds, so
//   GROUP 16-byte loads per lane are in flight (checked in the SASS: ptxas keeps them
//   together only with the launch bounds' minimum of blocks, see below);
// Everything but the row gradients' adds is a fixed per-lane order plus fixed shuffle trees:
// y, w, ds, dh and the loss are deterministic. The row gradients' atomic adds make the
// order in which tokens that read the same slot add up vary from run to run (as the
// scatter pass they replace did).
#include "kernels/cuda/cuda_common.cuh"

#include <stdint.h>

#define READ_WARPS     8 // tokens (warps) per block
#define READ_THREADS   (READ_WARPS * 32)
#define READ_MAX_GROUP 8 // most value rows whose loads a lane issues before their multiply-adds
#define READ_MAX_K     CUDA_MAX_TOP_K // the weights live one per lane: K <= 32
#define FULL_WARP_MASK 0xffffffffu

static_assert(READ_MAX_K <= 32, "slot_read keeps one weight per lane of a warp");

// ---- small helpers ---------------------------------------------------------------------------

// w log w with the limit 0 at w = 0 (padding slots of score -inf get w = 0).
__device__ inline double w_log_w(double w) {
    return w > 0.0 ? w * log(w) : 0.0;
}

__device__ inline double warp_sum_double(double v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(FULL_WARP_MASK, v, offset);
    return v;
}

__device__ inline double warp_max_double(double v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmax(v, __shfl_xor_sync(FULL_WARP_MASK, v, offset));
    return v;
}

// The column arithmetic for a float (scalar path) or a float4 (4 columns at once); each
// component is the same fp32 operation as the scalar one, so both paths give equal results.
__device__ inline float vec_zero(float) {
    return 0.0f;
}
__device__ inline float4 vec_zero(float4) {
    return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}
// acc + w * v (one fused multiply-add per column)
__device__ inline float vec_fma(float w, float v, float acc) {
    return fmaf(w, v, acc);
}
__device__ inline float4 vec_fma(float w, float4 v, float4 acc) {
    return make_float4(fmaf(w, v.x, acc.x), fmaf(w, v.y, acc.y), fmaf(w, v.z, acc.z),
                       fmaf(w, v.w, acc.w));
}
__device__ inline float vec_scale(float w, float v) {
    return w * v;
}
__device__ inline float4 vec_scale(float w, float4 v) {
    return make_float4(w * v.x, w * v.y, w * v.z, w * v.w);
}
__device__ inline float vec_add(float a, float b) {
    return a + b;
}
__device__ inline float4 vec_add(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
// acc + a . b, the columns in order
__device__ inline float vec_dot_acc(float a, float b, float acc) {
    return fmaf(a, b, acc);
}
__device__ inline float vec_dot_acc(float4 a, float4 b, float acc) {
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
    acc = fmaf(a.z, b.z, acc);
    return fmaf(a.w, b.w, acc);
}

// Softmax of one token's K scores, lane k holding slot k (lanes >= K hold weight 0).
// As the cpu oracle: in double, w_k = exp(s_k - max s) / sum_j exp(s_j - max s), rounded to
// fp32 for the read-out; the entropy -sum w log w uses the double weights. Only the order
// of the K-term sums differs (a shuffle tree), far below fp32 rounding.
struct TokenWeights {
    float w;        // this lane's weight (0 for lanes >= K)
    double entropy; // the token's -sum_k w_k log w_k, on every lane
};
__device__ inline TokenWeights token_softmax(const float *s, int K, int lane) { // s [K]
    double s_lane = lane < K ? (double)s[lane] : -INFINITY;
    double max_s = warp_max_double(s_lane);
    double e = lane < K ? exp(s_lane - max_s) : 0.0;
    double sum = warp_sum_double(e);
    double w = e / sum;
    TokenWeights out;
    out.w = (float)w;
    out.entropy = -warp_sum_double(w_log_w(w));
    return out;
}

// Whether the float4 path may be taken: H % 4 == 0 and the rows 16-byte aligned.
static bool is_16_byte_aligned(const void *ptr) {
    return ((uintptr_t)ptr & 15u) == 0;
}

// ---- the column loops ------------------------------------------------------------------------

// v[i] = the value row of slot k0 + i of the token at column chunk c. The loads are
// unconditional, so no branch separates them and all GROUP are in flight together; a group
// past the last slot (K = 3, 5, 6, 7, or K > 8 not a multiple of 8) reloads row K-1, an
// L1/L2 hit, and the caller drops those values. Plain cached loads: a slot read by several
// tokens may still be in the L2.
// table [rows, row_len]; row [K] the token's row indices
template <int GROUP, typename V>
__device__ inline void load_value_rows(V (&v)[GROUP], const V *table, const int *row, int k0, int K,
                                       int row_len, int c) {
#pragma unroll
    for (int i = 0; i < GROUP; i++)
        v[i] = __ldg(table + (size_t)row[min(k0 + i, K - 1)] * row_len + c);
}

// *dst += v, atomically (tokens that read the same slot add into one row), for the scalar
// and the float4 column paths.
__device__ inline void atomic_add_vec(float *dst, float v) {
    atomicAdd(dst, v);
}
__device__ inline void atomic_add_vec(float4 *dst, float4 v) {
    atomic_add_float4(dst, v);
}

// The token's K row indices, lane k loading slot k's, for every lane of the warp.
// rows_of [32] the warp's shared slice; idx [K] the token's entries
__device__ inline const int *share_token_rows(int *rows_of, const int32_t *idx, int K, int lane) {
    rows_of[lane] = lane < K ? idx[lane] : 0;
    __syncwarp();
    return rows_of;
}

// acc += weight[k] * v[k - k0] for the group's slots k < K, in slot order (as the first
// version and the oracle). weight [K]
template <int GROUP, typename V>
__device__ inline V add_weighted_rows(V acc, const V (&v)[GROUP], const float *weight, int k0,
                                      int K) {
#pragma unroll
    for (int i = 0; i < GROUP; i++) {
        V sum = vec_fma(weight[min(k0 + i, K - 1)], v[i], acc);
        acc = k0 + i < K ? sum : acc;
    }
    return acc;
}

// ---- forward ---------------------------------------------------------------------------------

// One warp per token. V is float (any H) or float4 (H % 4 == 0, 16-byte aligned rows).
// The minimum of 3 blocks (24 warps) an SM in the launch bounds is there for its effect on
// ptxas: with a minimum given, it issues a whole group's loads before the first multiply-add
// (without one it keeps only 2 or 3 in flight to save registers).
// y, h [N, H]; w [N, K]; top_s [N, K]; values [rows, H]; idx [N, K]; entropy [N] per-token
// entropies
template <typename V, int GROUP>
__global__ void __launch_bounds__(READ_THREADS, 3)
    slot_read_forward_kernel(float *y, float *w, float *entropy, const float *h, const float *top_s,
                             const float *values, const int32_t *idx, int N, int K, int H) {
    __shared__ float weights_of[READ_WARPS][32]; // [warp][k] the token's weights
    __shared__ int rows_of[READ_WARPS][32];      // [warp][k] the token's row indices
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t n = (size_t)blockIdx.x * READ_WARPS + warp;
    // a warp past the last token leaves whole: no shuffle below misses a lane
    if (n >= (size_t)N)
        return;
    const int row_len = H / (int)(sizeof(V) / sizeof(float));               // vectors per row
    const V *h_row = (const V *)(h + n * H);                                // [row_len]
    const V *table = (const V *)values;                                     // [rows, row_len]
    V *y_row = (V *)(y + n * H);                                            // [row_len]
    const int *row = share_token_rows(rows_of[warp], idx + n * K, K, lane); // [K]

    // The first column chunk's loads go out before the softmax: its exps, logs and shuffles
    // then overlap the token's first round trip to memory.
    int c = lane;
    V acc = vec_zero(V()); // the chunk's y: h + sum_k w_k v_k
    V v[GROUP];            // the chunk's value rows of one group of slots
    if (c < row_len) {
        acc = h_row[c];
        load_value_rows(v, table, row, 0, K, row_len, c);
    }

    TokenWeights tw = token_softmax(top_s + n * K, K, lane);
    if (lane < K)
        w[n * K + lane] = tw.w;
    if (lane == 0)
        entropy[n] = (float)tw.entropy;
    // Shared memory, not shuffles, hands the weights out: the column loop below may leave
    // some lanes idle (H / width not a multiple of 32), where a full-warp shuffle is not
    // allowed.
    weights_of[warp][lane] = tw.w;
    __syncwarp();
    const float *weight = weights_of[warp]; // [K]

    for (; c < row_len; c += 32) {
        for (int k0 = 0; k0 < K; k0 += GROUP) {
            if (k0 > 0) // the first group is already loaded
                load_value_rows(v, table, row, k0, K, row_len, c);
            acc = add_weighted_rows(acc, v, weight, k0, K);
        }
        y_row[c] = acc;         // a plain store: the next op reads y, so it may stay in L2
        if (c + 32 < row_len) { // the next chunk's first group
            acc = h_row[c + 32];
            load_value_rows(v, table, row, 0, K, row_len, c + 32);
        }
    }
}

// ---- backward --------------------------------------------------------------------------------

// y = h + sum_k w_k v_k, E = -sum_k w_k log w_k, w = softmax(s):
//   dh += dy;  dv_k = w_k dy;  dw_k = dy . v_k;  ds_k = w_k (dw_k - sum_j w_j dw_j)
//   plus the entropy part ds_k = -scale w_k (log w_k + E).
// One warp per token; the slots are taken GROUP at a time (K <= 8 is a single pass over
// dy, so dy is read once), each lane summing its columns' part of dy . v_k in fp32, then a
// double shuffle tree per slot gives dw_k to lane k, which writes ds_k. The group's weights
// are read from global memory by every lane (one broadcast load each, issued with the first
// chunk's loads: no round trip of its own).
// Launch bounds: as the forward's.
// dh, dy [N, H]; ds, w [N, K]; values, dvalues [rows, H]; idx [N, K]
template <typename V, int GROUP>
__global__ void __launch_bounds__(READ_THREADS, 3)
    slot_read_backward_kernel(float *dh, float *ds, float *dvalues, const float *dy, const float *w,
                              const float *values, const int32_t *idx, float scale, int N, int K,
                              int H) {
    __shared__ int rows_of[READ_WARPS][32]; // [warp][k] the token's row indices
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t n = (size_t)blockIdx.x * READ_WARPS + warp;
    // a warp past the last token leaves whole: no shuffle below misses a lane
    if (n >= (size_t)N)
        return;
    const float *w_row = w + n * K;                                         // [K]
    const int row_len = H / (int)(sizeof(V) / sizeof(float));               // vectors per row
    const V *dy_row = (const V *)(dy + n * H);                              // [row_len]
    V *dh_row = (V *)(dh + n * H);                                          // [row_len]
    const V *table = (const V *)values;                                     // [rows, row_len]
    V *dtable = (V *)dvalues;                                               // [rows, row_len]
    const int *row = share_token_rows(rows_of[warp], idx + n * K, K, lane); // [K]
    double dw_lane = 0.0; // dy . v_k for slot k = lane
    for (int k0 = 0; k0 < K; k0 += GROUP) {
        float weight[GROUP]; // w_(k0+i) (row K-1's past the last slot, unused)
        float dot[GROUP];    // this lane's part of dy . v_(k0+i)
#pragma unroll
        for (int i = 0; i < GROUP; i++) {
            weight[i] = w_row[min(k0 + i, K - 1)];
            dot[i] = 0.0f;
        }
        for (int c = lane; c < row_len; c += 32) {
            // every load of the chunk is issued before the first store: the compiler may not
            // move a load above a store to a buffer it cannot prove distinct
            V d = dy_row[c];
            V dh_old = k0 == 0 ? dh_row[c] : vec_zero(d);
            V v[GROUP];
            load_value_rows(v, table, row, k0, K, row_len, c);
            if (k0 == 0)
                dh_row[c] = vec_add(dh_old, d);
#pragma unroll
            for (int i = 0; i < GROUP; i++) {
                if (k0 + i < K) {
                    dot[i] = vec_dot_acc(d, v[i], dot[i]);
                    atomic_add_vec(dtable + (size_t)row[k0 + i] * row_len + c,
                                   vec_scale(weight[i], d));
                }
            }
        }
        // the column loop is over: every lane is back, the full-warp shuffles are safe
#pragma unroll
        for (int i = 0; i < GROUP; i++) {
            if (k0 + i < K) { // the same on every lane
                double total = warp_sum_double((double)dot[i]);
                if (lane == k0 + i)
                    dw_lane = total;
            }
        }
    }
    const double wk = lane < K ? w_row[lane] : 0.0; // lanes >= K add nothing below
    const double dw_dot_w = warp_sum_double(wk * dw_lane);
    const double token_entropy = -warp_sum_double(w_log_w(wk));
    if (lane < K) {
        double from_read = wk * (dw_lane - dw_dot_w);
        double from_entropy = wk > 0.0 ? -(double)scale * wk * (log(wk) + token_entropy) : 0.0;
        ds[n * K + lane] = (float)(from_read + from_entropy);
    }
}

// ---- slot scores ---------------------------------------------------------------------------

// s_tk = p_t . krows[t,k] / sqrt(R): one thread per (t, j):
//   dp[t, j] += sum_k ds_tk krows[t,k,j] / sqrt(R);  dkrows[t,k,j] = ds_tk p[t,j] / sqrt(R)
__global__ void slot_score_backward_kernel(float *dp, float *dkrows, const float *ds,
                                           const float *p, const float *krows, int N, int K, int R,
                                           float inv_sqrt_r) {
    size_t total = (size_t)N * R;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / R;
        int j = (int)(i % R);
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            float d = ds[n * K + k];
            acc += d * krows[(n * K + k) * R + j];
            dkrows[(n * K + k) * R + j] = d * inv_sqrt_r * p[i];
        }
        dp[i] += acc * inv_sqrt_r;
    }
}

static void check_read_k(const char *op, int K) {
    if (K < 1 || K > READ_MAX_K)
        hs_fatal_at(__FILE__, __LINE__, "%s: K = %d outside [1, %d] supported by the cuda kernels",
                    op, K, READ_MAX_K);
}

// The value rows loaded together: K itself rounded up to a power of two up to READ_MAX_GROUP
// (few loads of rows past the last slot), READ_MAX_GROUP at a time beyond.
static int read_group(int K) {
    int group = 1;
    while (group < K && group < READ_MAX_GROUP)
        group *= 2;
    return group;
}

static int read_blocks(int N) {
    return (N + READ_WARPS - 1) / READ_WARPS;
}

template <typename V, int GROUP>
static void launch_read_forward(float *y, float *w, float *entropy, const float *h,
                                const float *top_s, const float *values, const int32_t *idx, int N,
                                int K, int H) {
    slot_read_forward_kernel<V, GROUP><<<read_blocks(N), READ_THREADS, 0, cuda_stream()>>>(
        y, w, entropy, h, top_s, values, idx, N, K, H);
    CUDA_CHECK_LAUNCH("slot_read_forward_kernel");
}

template <typename V>
static void launch_read_forward_grouped(float *y, float *w, float *entropy, const float *h,
                                        const float *top_s, const float *values, const int32_t *idx,
                                        int N, int K, int H) {
    switch (read_group(K)) {
    case 1:
        launch_read_forward<V, 1>(y, w, entropy, h, top_s, values, idx, N, K, H);
        break;
    case 2:
        launch_read_forward<V, 2>(y, w, entropy, h, top_s, values, idx, N, K, H);
        break;
    case 4:
        launch_read_forward<V, 4>(y, w, entropy, h, top_s, values, idx, N, K, H);
        break;
    default:
        launch_read_forward<V, READ_MAX_GROUP>(y, w, entropy, h, top_s, values, idx, N, K, H);
        break;
    }
}

void cuda_slot_read_forward(float *y, float *w, float *loss, const float *h, const float *top_s,
                            const float *values, const int32_t *idx, float scale, int N, int K,
                            int H) {
    check_read_k("slot_read_forward", K);
    if (N == 0)
        return;
    float *entropy = (float *)cuda_workspace((size_t)N * sizeof(float)); // [N]
    if (H % 4 == 0 && is_16_byte_aligned(y) && is_16_byte_aligned(h) && is_16_byte_aligned(values))
        launch_read_forward_grouped<float4>(y, w, entropy, h, top_s, values, idx, N, K, H);
    else
        launch_read_forward_grouped<float>(y, w, entropy, h, top_s, values, idx, N, K, H);
    cuda_add_scaled_sum(loss, entropy, N, scale);
}

template <typename V, int GROUP>
static void launch_read_backward(float *dh, float *ds, float *dvalues, const float *dy,
                                 const float *w, const float *values, const int32_t *idx,
                                 float scale, int N, int K, int H) {
    slot_read_backward_kernel<V, GROUP><<<read_blocks(N), READ_THREADS, 0, cuda_stream()>>>(
        dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
    CUDA_CHECK_LAUNCH("slot_read_backward_kernel");
}

template <typename V>
static void launch_read_backward_grouped(float *dh, float *ds, float *dvalues, const float *dy,
                                         const float *w, const float *values, const int32_t *idx,
                                         float scale, int N, int K, int H) {
    switch (read_group(K)) {
    case 1:
        launch_read_backward<V, 1>(dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
        break;
    case 2:
        launch_read_backward<V, 2>(dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
        break;
    case 4:
        launch_read_backward<V, 4>(dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
        break;
    default:
        launch_read_backward<V, READ_MAX_GROUP>(dh, ds, dvalues, dy, w, values, idx, scale, N, K,
                                                H);
        break;
    }
}

void cuda_slot_read_backward(float *dh, float *ds, float *dvalues, const float *dy, const float *w,
                             const float *values, const int32_t *idx, float scale, int N, int K,
                             int H) {
    check_read_k("slot_read_backward", K);
    if (N == 0)
        return;
    if (H % 4 == 0 && is_16_byte_aligned(dh) && is_16_byte_aligned(dvalues) &&
        is_16_byte_aligned(dy) && is_16_byte_aligned(values))
        launch_read_backward_grouped<float4>(dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
    else
        launch_read_backward_grouped<float>(dh, ds, dvalues, dy, w, values, idx, scale, N, K, H);
}

void cuda_slot_score_backward(float *dp, float *dkrows, const float *ds, const float *p,
                              const float *krows, int N, int K, int R) {
    size_t total = (size_t)N * R;
    if (total == 0)
        return;
    const int threads = 256;
    slot_score_backward_kernel<<<cuda_grid(total, threads), threads, 0, cuda_stream()>>>(
        dp, dkrows, ds, p, krows, N, K, R, (float)(1.0 / sqrt((double)R)));
    CUDA_CHECK_LAUNCH("slot_score_backward_kernel");
}
