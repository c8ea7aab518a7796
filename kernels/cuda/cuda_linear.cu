// Linear layers through cuBLAS: fp32 buffers in and out, fp32 accumulation, and the
// multiplications in the precision of ops->set_matmul_precision (fp32, or TF32 / bf16 on the
// tensor cores: see cuda_matmul_compute_type in cuda_backend.cu for what each gives).
//
// The op table is row-major with weights [out, in] (y = x . w^T + b); cuBLAS is
// column-major. A row-major [rows, cols] buffer read column-major is its transpose
// [cols, rows] with leading dimension cols, so every product is written for the transposes:
//   forward   out^T [O, N]  = w [O, I] . x^T [I, N]      w read as w^T [I, O]: op T
//   dx        dx^T  [I, N] += w^T [I, O] . dout^T [O, N]  both as stored: op N, N
//   dw        dw^T  [I, O] += x^T [I, N] . dout [N, O]    dout read as dout^T: op T
// The bias and db (a broadcast and a column sum) stay fp32 whatever the setting.
//
// fp32 and tf32: cublasGemmEx on the fp32 buffers with the backend's compute type.
//
// bf16: cuBLAS given fp32 operands and CUBLAS_COMPUTE_32F_FAST_16BF does not reach the bf16
// tensor cores (the H100 profile showed TF32 "s1688gemm ... align1" kernels). So the
// operands are first rounded to bf16 (to nearest even) into workspace copies and the GEMMs
// take CUDA_R_16BF A and B with CUBLAS_COMPUTE_32F: bf16 products, fp32 accumulation, and
// C stays the op's fp32 buffer (beta = 1 still accumulates the gradients in fp32).
// - Padded rows: a bf16 copy's leading dimension is its row length rounded up to 8
//   elements (16 bytes), padding zeroed. With an odd length (the LM head's O = V = 50257)
//   the rows of a packed copy would not be 16-byte aligned and cuBLAS would fall back to
//   slow unaligned kernels; padded, dout's copy is aligned for both the dx and the dw
//   product. The GEMMs still get the true m, n, k, so the padding is never read. The fp32
//   output (ldc = O) is the op's buffer and keeps its layout.
// - Cost: a conversion pass reads 4 and writes 2 bytes an element (about 10 us for
//   16384 x 512). The weight is converted once per call (weights are small; a cached copy
//   would go stale at every optimizer step); x and dout once per call, not per product.
// - Memory: the token-sized copies (x, dout) are converted in chunks of rows, so one call
//   never asks the workspace for more than about LINEAR_BF16_CHUNK_BYTES for them; each
//   chunk's dw product accumulates into dw (beta = 1) like the whole one would.
// - Tiny products (a dimension below BF16_MIN_DIM: the router's single output column, a
//   handful of tokens) are memory-bound: a conversion pass would cost more than the tensor
//   cores save. They run in plain fp32 (CUBLAS_COMPUTE_32F on the fp32 buffers), which is
//   more precise than bf16 and deterministic.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"

static const int BIAS_THREADS = 256;
static const int CONVERT_THREADS = 256;
static const int BF16_ROW_ALIGN = 8;                             // elements: 16 bytes
static const int BF16_MIN_DIM = 16;                              // smaller: fp32 operands
static const size_t LINEAR_BF16_CHUNK_BYTES = (size_t)256 << 20; // x and dout copies
static const int LINEAR_CHUNK_ROW_ALIGN = 128;                   // chunk rows: GEMM tiles

// out[n, o] = b[o]   out [N, O]: the gemm then accumulates with beta = 1. Walked flat over
// the N O / VEC cells of VEC floats (O may be as small as the compressor's 32, so a row per
// block would leave threads idle): float4 stores when VEC = 4, whatever b's alignment (b is a
// view into the parameter buffer; its four values are read one by one, from cache). Index:
// 32-bit where the cells fit, since a 64-bit modulo per cell cost more than the store (the
// profile had this kernel at 0.64 TB/s).
template <typename Index, int VEC>
__global__ void broadcast_bias_kernel(float *out, const float *b, Index cells, Index row_cells) {
    for (Index i = blockIdx.x * (Index)blockDim.x + threadIdx.x; i < cells;
         i += (Index)gridDim.x * blockDim.x) {
        const float *cell_b = b + VEC * (i % row_cells);
        if constexpr (VEC == 4)
            reinterpret_cast<float4 *>(out)[i] =
                make_float4(cell_b[0], cell_b[1], cell_b[2], cell_b[3]);
        else
            out[i] = cell_b[0];
    }
}

// out [N, O] = b [O] on every row.
static void broadcast_bias(float *out, const float *b, int N, int O) {
    const bool vec4 = O % 4 == 0 && ((uintptr_t)out & 15u) == 0;
    const int vec = vec4 ? 4 : 1;
    const size_t cells = (size_t)N * O / vec, row_cells = (size_t)O / vec;
    const int grid = cuda_grid(cells, BIAS_THREADS);
    with_cell_index(cells, [&]<typename Index>() {
        if (vec4)
            broadcast_bias_kernel<Index, 4>
                <<<grid, BIAS_THREADS, 0, cuda_stream()>>>(out, b, (Index)cells, (Index)row_cells);
        else
            broadcast_bias_kernel<Index, 1>
                <<<grid, BIAS_THREADS, 0, cuda_stream()>>>(out, b, (Index)cells, (Index)row_cells);
    });
    CUDA_CHECK_LAUNCH("broadcast_bias_kernel");
}

// Eight bf16 values: one 16-byte store.
struct alignas(16) Bf16x8 {
    __nv_bfloat162 pair[4];
};

// dst [n8 * 8] bf16 = src [n8 * 8] fp32 rounded to nearest; both 16-byte aligned.
__global__ void to_bf16_packed_kernel(__nv_bfloat16 *dst, const float *src, size_t n8) {
    const float4 *src4 = reinterpret_cast<const float4 *>(src);
    Bf16x8 *dst8 = reinterpret_cast<Bf16x8 *>(dst);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n8;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 lo = src4[2 * i], hi = src4[2 * i + 1];
        Bf16x8 out;
        out.pair[0] = __floats2bfloat162_rn(lo.x, lo.y);
        out.pair[1] = __floats2bfloat162_rn(lo.z, lo.w);
        out.pair[2] = __floats2bfloat162_rn(hi.x, hi.y);
        out.pair[3] = __floats2bfloat162_rn(hi.z, hi.w);
        dst8[i] = out;
    }
}

// dst [n] bf16 = src [n] rounded to nearest, one element a thread (the tail and unaligned
// buffers of the flat conversions).
__global__ void to_bf16_scalar_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// dst [n8 * 8] fp32 = src [n8 * 8] bf16 widened; both 16-byte aligned.
__global__ void from_bf16_packed_kernel(float *dst, const __nv_bfloat16 *src, size_t n8) {
    const Bf16x8 *src8 = reinterpret_cast<const Bf16x8 *>(src);
    float4 *dst4 = reinterpret_cast<float4 *>(dst);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n8;
         i += (size_t)gridDim.x * blockDim.x) {
        const Bf16x8 in = src8[i];
        const float2 a = __bfloat1622float2(in.pair[0]), b = __bfloat1622float2(in.pair[1]);
        const float2 c = __bfloat1622float2(in.pair[2]), d = __bfloat1622float2(in.pair[3]);
        dst4[2 * i] = make_float4(a.x, a.y, b.x, b.y);
        dst4[2 * i + 1] = make_float4(c.x, c.y, d.x, d.y);
    }
}

__global__ void from_bf16_scalar_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

// Whether a flat conversion of n elements can go 8 at a time (16-byte bf16 groups).
static bool flat_vectorizable(const void *a, const void *b, size_t n) {
    return n % 8 == 0 && (((uintptr_t)a | (uintptr_t)b) & 15u) == 0;
}

// One flat conversion of n elements: `packed` (8 at a time, over n / 8 groups) when both
// buffers allow it, else `scalar` (one at a time).
template <typename Dst, typename Src>
static void convert_flat(Dst *dst, const Src *src, size_t n,
                         void (*packed)(Dst *, const Src *, size_t),
                         void (*scalar)(Dst *, const Src *, size_t)) {
    if (n == 0)
        return;
    const bool vec = flat_vectorizable(dst, src, n);
    const size_t units = vec ? n / 8 : n;
    void (*kernel)(Dst *, const Src *, size_t) = vec ? packed : scalar;
    kernel<<<cuda_grid(units, CONVERT_THREADS), CONVERT_THREADS, 0, cuda_stream()>>>(dst, src,
                                                                                     units);
    CUDA_CHECK_LAUNCH("a flat bf16 conversion kernel");
}

// ops->to_bf16: dst [n] bf16 bits = src [n] rounded to nearest even (__float2bfloat16_rn, the
// cpu backend's rounding; a NaN stays a NaN).
void cuda_to_bf16_op(uint16_t *dst, const float *src, size_t n) {
    convert_flat(reinterpret_cast<__nv_bfloat16 *>(dst), src, n, to_bf16_packed_kernel,
                 to_bf16_scalar_kernel);
}

// ops->from_bf16: dst [n] = src [n] bf16 bits widened (exact).
void cuda_from_bf16_op(float *dst, const uint16_t *src, size_t n) {
    convert_flat(dst, reinterpret_cast<const __nv_bfloat16 *>(src), n, from_bf16_packed_kernel,
                 from_bf16_scalar_kernel);
}

// dst [rows, ld] bf16 = src [rows, cols] fp32 rounded to nearest, columns [cols, ld) zero.
// A thread writes VEC adjacent values of a row: VEC = 4 (a float4 in, 8 bytes out) when cols
// and ld are multiples of 4 and src is 16-byte aligned, else an aligned pair (ld is even).
// The (row, group) cells are numbered row-major and walked flat: the rows here are short (a
// head's 64 values, a key's 32), and a block per row would leave most of its threads idle.
// Index: 32-bit where the cells fit (a 64-bit division per cell cost more than the copy).
template <typename Index, int VEC>
__global__ void to_bf16_padded_kernel(__nv_bfloat16 *dst, int ld, const float *src, Index rows,
                                      int cols) {
    const Index groups = (Index)(ld / VEC), cells = rows * groups;
    for (Index i = blockIdx.x * (Index)blockDim.x + threadIdx.x; i < cells;
         i += (Index)gridDim.x * blockDim.x) {
        const Index r = i / groups;
        const int c = VEC * (int)(i - r * groups);
        const float *row = src + (size_t)r * cols;
        __nv_bfloat16 *out = dst + (size_t)r * ld + c;
        if constexpr (VEC == 4) {
            const float4 v = c < cols ? *reinterpret_cast<const float4 *>(row + c)
                                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y),
                           hi = __floats2bfloat162_rn(v.z, v.w);
            uint2 packed;
            packed.x = *reinterpret_cast<uint32_t *>(&lo);
            packed.y = *reinterpret_cast<uint32_t *>(&hi);
            *reinterpret_cast<uint2 *>(out) = packed;
        } else {
            const float v0 = c < cols ? row[c] : 0.0f;
            const float v1 = c + 1 < cols ? row[c + 1] : 0.0f;
            *reinterpret_cast<__nv_bfloat162 *>(out) = __floats2bfloat162_rn(v0, v1);
        }
    }
}

// The leading dimension of the bf16 copy of rows of `cols` elements.
int cuda_bf16_ld(int cols) {
    return (cols + BF16_ROW_ALIGN - 1) / BF16_ROW_ALIGN * BF16_ROW_ALIGN;
}

size_t cuda_bf16_bytes(int rows, int cols) {
    return (size_t)rows * cuda_bf16_ld(cols) * sizeof(__nv_bfloat16);
}

// A 2D grid: x over a row's `units`, y over the rows (the kernels loop over the rest).
static dim3 row_grid(int units, int rows, int threads) {
    int x = (units + threads - 1) / threads;
    return dim3(x < 1 ? 1 : x, rows < 1 ? 1 : (rows < 65535 ? rows : 65535));
}

// dst [rows, cuda_bf16_ld(cols)] bf16 (16-byte aligned) <- src [rows, cols] fp32.
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, int rows, int cols) {
    if (rows == 0 || cols == 0)
        return;
    cudaStream_t stream = cuda_stream();
    if (cols % BF16_ROW_ALIGN == 0 && ((uintptr_t)src & 15u) == 0) {
        // No padding: the copy is the flat array in the same order.
        size_t n8 = (size_t)rows * cols / 8;
        to_bf16_packed_kernel<<<cuda_grid(n8, CONVERT_THREADS), CONVERT_THREADS, 0, stream>>>(
            dst, src, n8);
        CUDA_CHECK_LAUNCH("to_bf16_packed_kernel");
        return;
    }
    cuda_to_bf16_padded(dst, cuda_bf16_ld(cols), src, rows, cols);
}

void cuda_to_bf16_padded(__nv_bfloat16 *dst, int ld, const float *src, int rows, int cols) {
    if (rows == 0)
        return;
    const bool vec4 = cols % 4 == 0 && ld % 4 == 0 && ((uintptr_t)src & 15u) == 0;
    const size_t cells = (size_t)rows * (size_t)(ld / (vec4 ? 4 : 2));
    const int grid = cuda_grid(cells, CONVERT_THREADS);
    with_cell_index(cells, [&]<typename Index>() {
        if (vec4)
            to_bf16_padded_kernel<Index, 4>
                <<<grid, CONVERT_THREADS, 0, cuda_stream()>>>(dst, ld, src, (Index)rows, cols);
        else
            to_bf16_padded_kernel<Index, 2>
                <<<grid, CONVERT_THREADS, 0, cuda_stream()>>>(dst, ld, src, (Index)rows, cols);
    });
    CUDA_CHECK_LAUNCH("to_bf16_padded_kernel");
}

// w16 [o_pad, cuda_bf16_ld(I)] <- w [O, I]: the weight's bf16 copy with zero rows O..o_pad-1, so
// the products can run over the padded output count (o_pad, a multiple of 8) and every
// operand and result of cuBLAS stays 16-byte aligned even when O is odd (the LM head's V).
void cuda_weight_to_bf16(__nv_bfloat16 *w16, const float *w, int O, int I, int o_pad) {
    cuda_to_bf16(w16, w, O, I);
    if (o_pad > O)
        CUDA_CHECK(cudaMemsetAsync(w16 + (size_t)O * cuda_bf16_ld(I), 0,
                                   cuda_bf16_bytes(o_pad - O, I), cuda_stream()));
}

// out [rows, O] = tmp [rows, ld_tmp] (first O columns) + (accumulate ? out : 0)
__global__ void copy_unpadded_kernel(float *out, const float *tmp, int ld_tmp, int rows, int O,
                                     int accumulate) {
    for (int n = blockIdx.y; n < rows; n += gridDim.y)
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < O; o += gridDim.x * blockDim.x) {
            float v = tmp[(size_t)n * ld_tmp + o];
            out[(size_t)n * O + o] = accumulate ? out[(size_t)n * O + o] + v : v;
        }
}

// C [m, n] (column-major, ld ldc) = alpha op(A) op(B) + beta C: fp32 storage, alpha and
// beta fp32 (as every 32F compute type wants), products in `compute` (the backend's
// precision, or plain fp32 for the tiny products of the bf16 mode).
static void gemm_f32(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc, cublasComputeType_t compute) {
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), op_a, op_b, m, n, k, &alpha, a, CUDA_R_32F, lda, b,
                              CUDA_R_32F, ldb, &beta, c, CUDA_R_32F, ldc, compute,
                              CUBLAS_GEMM_DEFAULT));
}

// The same with bf16 A and B (the bf16 tensor cores), fp32 C and accumulation.
void cuda_gemm_bf16(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                    const __nv_bfloat16 *a, int lda, const __nv_bfloat16 *b, int ldb, float beta,
                    float *c, int ldc) {
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), op_a, op_b, m, n, k, &alpha, a, CUDA_R_16BF, lda, b,
                              CUDA_R_16BF, ldb, &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

// Whether this linear's GEMMs run on bf16 copies of their operands (see the top).
bool cuda_linear_uses_bf16(int N, int I, int O) {
    return cuda_bf16_tensor_cores() && N >= BF16_MIN_DIM && I >= BF16_MIN_DIM && O >= BF16_MIN_DIM;
}

// The compute type of the GEMMs on the fp32 buffers: the backend's, but plain fp32 for the
// tiny products of the bf16 mode (the others take the bf16 copies).
static cublasComputeType_t f32_compute_type(void) {
    return cuda_bf16_tensor_cores() ? CUBLAS_COMPUTE_32F : cuda_matmul_compute_type();
}

// Rows of x (and dout) converted at a time: at most LINEAR_BF16_CHUNK_BYTES of copies of
// `bytes_per_row`, a multiple of LINEAR_CHUNK_ROW_ALIGN rows (at least that many), at most N.
// No workspace per row (the forward writing x's copy into a kept buffer): one chunk of N.
static int bf16_chunk_rows(int N, size_t bytes_per_row) {
    if (bytes_per_row == 0)
        return N;
    size_t rows = LINEAR_BF16_CHUNK_BYTES / bytes_per_row;
    rows -= rows % LINEAR_CHUNK_ROW_ALIGN;
    if (rows < (size_t)LINEAR_CHUNK_ROW_ALIGN)
        rows = LINEAR_CHUNK_ROW_ALIGN;
    return rows < (size_t)N ? (int)rows : N;
}

// out [N, O] (holding the bias, or anything when beta = 0) = x . w^T (+ out), bf16 products.
// When O is not a multiple of 8, out's rows (ldc = O) are not 16-byte aligned and cuBLAS
// falls back to its slow unaligned kernels (seen on the H100 for the LM head: sm75
// "align1" kernels, about 70 TFLOP/s): the product then goes to an aligned fp32 scratch
// [rows, o_pad] (o_pad output rows of the zero-padded weight) and a copy pass adds it to out.
static void linear_forward_bf16(float *out, const float *x, __nv_bfloat16 *x_keep, const float *w,
                                float beta, int N, int I, int O) {
    const int ld_in = cuda_bf16_ld(I), o_pad = cuda_bf16_ld(O);
    const bool padded = o_pad != O;
    const size_t tmp_row_bytes = padded ? (size_t)o_pad * sizeof(float) : 0;
    const size_t x_row_bytes = x_keep ? 0 : cuda_bf16_bytes(1, I);
    const int chunk = bf16_chunk_rows(N, x_row_bytes + tmp_row_bytes);
    char *cursor = (char *)cuda_workspace(cuda_workspace_part_bytes(cuda_bf16_bytes(o_pad, I)) +
                                          cuda_workspace_part_bytes(chunk * x_row_bytes) +
                                          cuda_workspace_part_bytes(chunk * tmp_row_bytes));
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, cuda_bf16_bytes(o_pad, I));
    __nv_bfloat16 *x_chunk = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, chunk * x_row_bytes);
    float *tmp = (float *)cuda_workspace_carve(&cursor, chunk * tmp_row_bytes); // [chunk, o_pad]
    cuda_weight_to_bf16(w16, w, O, I, o_pad);                                   // [o_pad, ld_in]
    for (int first = 0; first < N; first += chunk) {
        const int rows = N - first < chunk ? N - first : chunk;
        // [rows, ld_in]: the caller's kept copy (ld_in == I), or the workspace's chunk
        __nv_bfloat16 *x16 = x_keep ? x_keep + (size_t)first * I : x_chunk;
        cuda_to_bf16(x16, x + (size_t)first * I, rows, I);
        if (!padded) {
            cuda_gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, O, rows, I, w16, ld_in, x16, ld_in, beta,
                           out + (size_t)first * O, O);
            continue;
        }
        cuda_gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, o_pad, rows, I, w16, ld_in, x16, ld_in, 0.0f, tmp,
                       o_pad);
        copy_unpadded_kernel<<<row_grid(O, rows, BIAS_THREADS), BIAS_THREADS, 0, cuda_stream()>>>(
            out + (size_t)first * O, tmp, o_pad, rows, O, beta != 0.0f);
        CUDA_CHECK_LAUNCH("copy_unpadded_kernel");
    }
}

// out [N, O] (overwritten) = x . w^T + b; x_keep as linear_forward_bf16 (only with the bf16
// products, NULL otherwise). N, O > 0.
static void linear_forward(float *out, const float *x, __nv_bfloat16 *x_keep, const float *w,
                           const float *b, int N, int I, int O) {
    float beta = 0.0f;
    if (b) {
        broadcast_bias(out, b, N, O);
        beta = 1.0f;
    }
    if (cuda_linear_uses_bf16(N, I, O))
        linear_forward_bf16(out, x, x_keep, w, beta, N, I, O);
    else
        gemm_f32(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, x, I, beta, out, O, f32_compute_type());
}

// out [N, O] (overwritten), x [N, I], w [O, I], b [O] or NULL
void cuda_linear_forward(float *out, const float *x, const float *w, const float *b, int N, int I,
                         int O) {
    if (N == 0 || O == 0)
        return;
    linear_forward(out, x, NULL, w, b, N, I, O);
}

// dst [rows, ld] = src [rows, cols] bf16 with columns [cols, ld) zero: a packed bf16 copy
// given the padded rows the GEMMs want (only for rows whose length is not a multiple of 8).
__global__ void pad_bf16_rows_kernel(__nv_bfloat16 *dst, int ld, const __nv_bfloat16 *src, int rows,
                                     int cols) {
    const size_t cells = (size_t)rows * ld;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < cells;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / ld;
        const int c = (int)(i - r * ld);
        dst[i] = c < cols ? src[r * cols + c] : __float2bfloat16_rn(0.0f);
    }
}

// out [N, O] as cuda_linear_forward; x16 [N, I] = x rounded to bf16. In bf16 mode with rows
// of a multiple of 8 the GEMMs' own rounding of x goes into x16 instead of the workspace (the
// same bits to_bf16 gives); otherwise x16 is one more conversion pass.
void cuda_linear_forward_keep_bf16(float *out, uint16_t *x16, const float *x, const float *w,
                                   const float *b, int N, int I, int O) {
    const bool by_gemm = N > 0 && O > 0 && cuda_linear_uses_bf16(N, I, O) &&
                         I % BF16_ROW_ALIGN == 0 && ((uintptr_t)x16 & 15u) == 0;
    if (by_gemm) {
        linear_forward(out, x, reinterpret_cast<__nv_bfloat16 *>(x16), w, b, N, I, O);
        return;
    }
    cuda_linear_forward(out, x, w, b, N, I, O);
    cuda_to_bf16_op(x16, x, (size_t)N * I);
}

// dx [N, I] += dout . w (may be NULL); dw [O, I] += dout^T . x; bf16 products. x comes as
// fp32 (x, rounded here chunk by chunk) or already as bf16 (x_in [N, I], packed; x is then
// NULL), which the GEMMs read in place when its rows are 16-byte aligned (I a multiple of 8)
// and otherwise copy into padded rows chunk by chunk. The workspace holds w's copy and one
// chunk of rows of x's (unless read in place) and dout's, carved from one request.
static void linear_backward_bf16(float *dx, float *dw, const float *dout, const float *x,
                                 const __nv_bfloat16 *x_in, const float *w, int N, int I, int O) {
    const int ld_in = cuda_bf16_ld(I), ld_out = cuda_bf16_ld(O);
    const bool in_place = x_in && ld_in == I && ((uintptr_t)x_in & 15u) == 0;
    const size_t x_row_bytes = in_place ? 0 : cuda_bf16_bytes(1, I);
    const int chunk = bf16_chunk_rows(N, x_row_bytes + cuda_bf16_bytes(1, O));
    const size_t w_bytes = dx ? cuda_bf16_bytes(ld_out, I) : 0; // zero rows O..ld_out-1
    char *cursor = (char *)cuda_workspace(cuda_workspace_part_bytes(w_bytes) +
                                          cuda_workspace_part_bytes(chunk * x_row_bytes) +
                                          cuda_workspace_part_bytes(cuda_bf16_bytes(chunk, O)));
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, w_bytes);
    __nv_bfloat16 *x16 = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, chunk * x_row_bytes);
    __nv_bfloat16 *dout16 =
        (__nv_bfloat16 *)cuda_workspace_carve(&cursor, cuda_bf16_bytes(chunk, O));
    if (dx)
        cuda_weight_to_bf16(w16, w, O, I, ld_out); // [ld_out, ld_in]
    for (int first = 0; first < N; first += chunk) {
        const int rows = N - first < chunk ? N - first : chunk;
        cuda_to_bf16(dout16, dout + (size_t)first * O, rows, O); // [rows, ld_out]
        const __nv_bfloat16 *x_rows = x16;                       // [rows, ld_in]
        if (in_place) {
            x_rows = x_in + (size_t)first * I; // ld_in == I
        } else if (x_in) {
            pad_bf16_rows_kernel<<<cuda_grid((size_t)rows * ld_in, CONVERT_THREADS),
                                   CONVERT_THREADS, 0, cuda_stream()>>>(
                x16, ld_in, x_in + (size_t)first * I, rows, I);
            CUDA_CHECK_LAUNCH("pad_bf16_rows_kernel");
        } else {
            cuda_to_bf16(x16, x + (size_t)first * I, rows, I);
        }
        // dx sums over k = ld_out: dout's padding columns and w's padding rows are zeros,
        // and a multiple of 8 keeps cuBLAS on its aligned kernels when O is odd
        if (dx)
            cuda_gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, I, rows, ld_out, w16, ld_in, dout16, ld_out,
                           1.0f, dx + (size_t)first * I, I);
        cuda_gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, I, O, rows, x_rows, ld_in, dout16, ld_out, 1.0f,
                       dw, I);
    }
}

// dx [N, I] += dout . w (may be NULL); dw [O, I] += dout^T . x on the fp32 buffers, in the
// backend's compute type (fp32 for the tiny products of the bf16 mode).
static void linear_backward_f32(float *dx, float *dw, const float *dout, const float *x,
                                const float *w, int N, int I, int O) {
    if (dx)
        gemm_f32(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w, I, dout, O, 1.0f, dx, I, f32_compute_type());
    gemm_f32(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dout, O, 1.0f, dw, I, f32_compute_type());
}

// dx [N, I] += dout . w (may be NULL); dw [O, I] += dout^T . x; db [O] += column sums of dout
void cuda_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, int N, int I, int O) {
    if (N == 0 || O == 0 || I == 0)
        return;
    if (cuda_linear_uses_bf16(N, I, O))
        linear_backward_bf16(dx, dw, dout, x, NULL, w, N, I, O);
    else
        linear_backward_f32(dx, dw, dout, x, w, N, I, O);
    // After the GEMMs: the column sum takes the workspace for itself (the bf16 copies are
    // dead by then in stream order).
    if (db)
        cuda_column_sum(db, dout, NULL, NULL, N, O);
}

// x16 [N, I] bf16 bits. With bf16 products the GEMMs take x16 for the copy linear_backward
// would round x to (in place, or padded when I is not a multiple of 8): the results are
// linear_backward's on the widened copy, bit for bit. With fp32 or tf32 products, or for the
// tiny products the bf16 mode runs in fp32, the copy is widened into the workspace and the
// same fp32 GEMMs run on it.
void cuda_linear_backward_bf16_input(float *dx, float *dw, float *db, const float *dout,
                                     const uint16_t *x16, const float *w, int N, int I, int O) {
    if (N == 0 || O == 0 || I == 0)
        return;
    if (cuda_linear_uses_bf16(N, I, O)) {
        linear_backward_bf16(dx, dw, dout, NULL, reinterpret_cast<const __nv_bfloat16 *>(x16), w, N,
                             I, O);
    } else {
        float *x = (float *)cuda_workspace((size_t)N * I * sizeof(float)); // [N, I]
        cuda_from_bf16_op(x, x16, (size_t)N * I);
        linear_backward_f32(dx, dw, dout, x, w, N, I, O);
    }
    // After the GEMMs, as in cuda_linear_backward (the workspace is free again by then).
    if (db)
        cuda_column_sum(db, dout, NULL, NULL, N, O);
}
