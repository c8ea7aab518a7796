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
// Every GEMM (forward, dx, dw) goes through cublasGemmEx with the backend's compute type;
// the bias and db (a broadcast and a column sum) stay fp32 whatever the setting.
#include "kernels/cuda/cuda_common.cuh"

static const int BIAS_THREADS = 256;

// out[n, o] = b[o]   out [N, O]: the gemm then accumulates with beta = 1.
__global__ void broadcast_bias_kernel(float *out, const float *b, int N, int O) {
    size_t total = (size_t)N * O;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = b[i % O];
}

// C [m, n] (column-major, ld ldc) = alpha op(A) op(B) + beta C: fp32 storage, alpha and
// beta fp32 (as every 32F compute type wants), products in the backend's matmul precision.
static void gemm_f32(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc) {
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), op_a, op_b, m, n, k, &alpha, a, CUDA_R_32F, lda, b,
                              CUDA_R_32F, ldb, &beta, c, CUDA_R_32F, ldc,
                              cuda_matmul_compute_type(), CUBLAS_GEMM_DEFAULT));
}

// out [N, O] (overwritten), x [N, I], w [O, I], b [O] or NULL
void cuda_linear_forward(float *out, const float *x, const float *w, const float *b, int N, int I,
                         int O) {
    if (N == 0 || O == 0)
        return;
    float beta = 0.0f;
    if (b) {
        size_t total = (size_t)N * O;
        broadcast_bias_kernel<<<cuda_grid(total, BIAS_THREADS), BIAS_THREADS, 0, cuda_stream()>>>(
            out, b, N, O);
        CUDA_CHECK_LAUNCH("broadcast_bias_kernel");
        beta = 1.0f;
    }
    gemm_f32(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, x, I, beta, out, O);
}

// dx [N, I] += dout . w (may be NULL); dw [O, I] += dout^T . x; db [O] += column sums of dout
void cuda_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, int N, int I, int O) {
    if (N == 0 || O == 0 || I == 0)
        return;
    if (dx)
        gemm_f32(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w, I, dout, O, 1.0f, dx, I);
    gemm_f32(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dout, O, 1.0f, dw, I);
    if (db)
        cuda_column_sum(db, dout, NULL, NULL, N, O);
}
