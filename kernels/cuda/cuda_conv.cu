// Causal depthwise convolution over time, per sequence and channel:
// out[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-Kc+1+j, c], with x = 0 before t = 0.
#include "kernels/cuda/cuda_common.cuh"

static const int CONV_THREADS = 256;

// VEC adjacent channels of one row: a float4 when VEC = 4.
template <int VEC> struct ConvCell { float v[VEC]; };
template <int VEC> __device__ __forceinline__ ConvCell<VEC> load_cell(const float *p) {
    ConvCell<VEC> cell;
    if constexpr (VEC == 4) {
        float4 f = *reinterpret_cast<const float4 *>(p);
        cell.v[0] = f.x, cell.v[1] = f.y, cell.v[2] = f.z, cell.v[3] = f.w;
    } else {
        cell.v[0] = *p;
    }
    return cell;
}
template <int VEC> __device__ __forceinline__ void store_cell(float *p, const ConvCell<VEC> &cell) {
    if constexpr (VEC == 4)
        *reinterpret_cast<float4 *>(p) = make_float4(cell.v[0], cell.v[1], cell.v[2], cell.v[3]);
    else
        *p = cell.v[0];
}

// Both kernels walk a 2D grid: thread (x, y) of block (bx, by) takes channel group
// g = 32 bx + x (VEC channels from c = VEC g) of rows n = 8 by + y, + stride, ... (n = b T + t),
// so a warp reads 32 adjacent groups of one row. Int indices (n < B T and c < H are ints in
// the op table): no division per element. A block first copies the taps (and the bias) of its
// 32 VEC channels to shared memory, transposed to [Kc][32 VEC], where a lane reads its VEC
// channels' tap j as one conflict-free load; read from w [H, Kc] directly, a warp's loads of a
// tap would touch 32 different 64-byte segments.
#define CONV_BLOCK_X 32
#define CONV_BLOCK_Y (CONV_THREADS / CONV_BLOCK_X)

// taps [Kc][CONV_BLOCK_X VEC] (and bias_tile [CONV_BLOCK_X VEC] when bias != NULL) <- the
// block's channels [c0, c0 + CONV_BLOCK_X VEC) of w [H, Kc] and bias [H]; zeros past H.
template <int VEC>
__device__ void load_conv_taps(float *taps, float *bias_tile, const float *w, const float *bias,
                               int c0, int H, int Kc) {
    const int width = CONV_BLOCK_X * VEC;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    for (int i = tid; i < width * Kc; i += CONV_THREADS) {
        const int c = i / Kc, j = i - c * Kc; // consecutive threads: consecutive w entries
        taps[j * width + c] = c0 + c < H ? w[(size_t)(c0 + c) * Kc + j] : 0.0f;
    }
    if (bias)
        for (int c = tid; c < width; c += CONV_THREADS)
            bias_tile[c] = c0 + c < H ? bias[c0 + c] : 0.0f;
    __syncthreads();
}

// The forward and the backward's dx are the same walk over the taps, in opposite directions:
//   forward  (BACKWARD false): out[b,t,c] = bias[c] + sum_j w[c,j] in[b, t-Kc+1+j, c]
//            (in = x; rows before the sequence's start are zeros);
//   backward (BACKWARD true):  out[b,s,c] += sum_j w[c,j] in[b, s+Kc-1-j, c]
//            (out = dx, in = dout: the taps that read x[b,s,c]; no rows past the end).
// out, in [B, T, H]; w [H, Kc]; bias [H] (forward only).
template <int VEC, bool BACKWARD>
__global__ void conv_taps_kernel(float *out, const float *in, const float *w, const float *bias,
                                 int rows, int T, int H, int Kc) {
    extern __shared__ float4 conv_smem[];
    float *taps = (float *)conv_smem;                  // [Kc][CONV_BLOCK_X VEC]
    float *bias_tile = taps + Kc * CONV_BLOCK_X * VEC; // [CONV_BLOCK_X VEC] (forward)
    const int c0 = blockIdx.x * CONV_BLOCK_X * VEC;
    load_conv_taps<VEC>(taps, bias_tile, w, BACKWARD ? NULL : bias, c0, H, Kc);
    const int local = VEC * threadIdx.x, c = c0 + local;
    if (c >= H)
        return; // after the only barrier
    for (int n = blockIdx.y * blockDim.y + threadIdx.y; n < rows; n += gridDim.y * blockDim.y) {
        const int pos = n % T; // n's position in its sequence
        ConvCell<VEC> acc = {};
        for (int j = 0; j < Kc; j++) {
            const int other = BACKWARD ? pos + Kc - 1 - j : pos - Kc + 1 + j;
            if (other < 0 || other >= T)
                continue;
            const ConvCell<VEC> v = load_cell<VEC>(in + (size_t)(n - pos + other) * H + c);
            const ConvCell<VEC> tap = load_cell<VEC>(taps + j * CONV_BLOCK_X * VEC + local);
#pragma unroll
            for (int e = 0; e < VEC; e++)
                acc.v[e] += tap.v[e] * v.v[e];
        }
        ConvCell<VEC> result =
            load_cell<VEC>((BACKWARD ? out + (size_t)n * H : bias_tile) + (BACKWARD ? c : local));
#pragma unroll
        for (int e = 0; e < VEC; e++)
            result.v[e] += acc.v[e];
        store_cell<VEC>(out + (size_t)n * H + c, result);
    }
}

// float4 cells when every row of the two [., H] buffers starts 16-byte aligned.
static bool conv_rows_16b(int H, const void *a, const void *b) {
    return H % 4 == 0 && ((uintptr_t)a & 15u) == 0 && ((uintptr_t)b & 15u) == 0;
}

// The launch shape: x covers the channel groups exactly (one block column per 32 groups),
// y at most CONV_MAX_ROW_BLOCKS blocks, each walking rows with the grid's stride, so a
// block's copy of its taps serves several rows.
#define CONV_MAX_ROW_BLOCKS 512
static dim3 conv_grid(int H, int vec, int rows) {
    const int groups = H / vec;
    const int y = (rows + CONV_BLOCK_Y - 1) / CONV_BLOCK_Y;
    return dim3((groups + CONV_BLOCK_X - 1) / CONV_BLOCK_X,
                y < CONV_MAX_ROW_BLOCKS ? y : CONV_MAX_ROW_BLOCKS);
}

// Shared memory of a block: Kc taps (+ the bias) for its CONV_BLOCK_X vec channels.
static size_t conv_shared_bytes(int Kc, int vec) {
    const size_t bytes = (size_t)(Kc + 1) * CONV_BLOCK_X * vec * sizeof(float);
    if (bytes > 48 * 1024)
        hs_fatal_at(__FILE__, __LINE__,
                    "conv: conv_kernel %d is more taps than the cuda kernels keep in shared "
                    "memory (at most %d)",
                    Kc, 48 * 1024 / (CONV_BLOCK_X * vec * (int)sizeof(float)) - 1);
    return bytes;
}

// conv_taps_kernel over rows x H: float4 channels where out's and in's rows allow.
template <bool BACKWARD>
static void conv_taps(float *out, const float *in, const float *w, const float *bias, int rows,
                      int T, int H, int Kc) {
    const dim3 block(CONV_BLOCK_X, CONV_BLOCK_Y);
    if (conv_rows_16b(H, out, in))
        conv_taps_kernel<4, BACKWARD>
            <<<conv_grid(H, 4, rows), block, conv_shared_bytes(Kc, 4), cuda_stream()>>>(
                out, in, w, bias, rows, T, H, Kc);
    else
        conv_taps_kernel<1, BACKWARD>
            <<<conv_grid(H, 1, rows), block, conv_shared_bytes(Kc, 1), cuda_stream()>>>(
                out, in, w, bias, rows, T, H, Kc);
    CUDA_CHECK_LAUNCH("conv_taps_kernel");
}

void cuda_conv_forward(float *out, const float *x, const float *w, const float *bias, int B, int T,
                       int H, int Kc) {
    if (B * T > 0 && H > 0)
        conv_taps<false>(out, x, w, bias, B * T, T, H, Kc);
}

void cuda_conv_backward(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                        const float *w, int B, int T, int H, int Kc) {
    if (B * T == 0 || H == 0)
        return;
    if (dx)
        conv_taps<true>(dx, dout, w, NULL, B * T, T, H, Kc);
    // dw[c,j] += sum_{b,t} dout[b,t,c] x[b, t-Kc+1+j, c]: tap j pairs each row of dout with
    // the row of x lag = Kc-1-j steps earlier in the same sequence, so this is a column sum
    // of lagged products over the B*T rows, lags 0 .. Kc-1 in one launch; lag l lands in
    // dw[c, Kc-1-l], i.e. at (dw + Kc-1)[c * Kc - l].
    if (Kc > 0)
        cuda_lagged_column_sums(dw + (Kc - 1), Kc, -1, dout, x, NULL, B * T, H, T, Kc);
    cuda_column_sum(dbias, dout, NULL, NULL, B * T, H);
}
