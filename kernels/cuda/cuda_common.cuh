// Internal header of the cuda backend: error checking, the backend's stream, cuBLAS handle
// and scratch workspace, warp/block reductions, and the host entry points of every op
// (each defined in the .cu file of its concern; kernels/cuda/cuda_ops.cu puts them in the
// op table). fp32 everywhere in this first version: the kernels take `float` buffers and
// accumulate in fp32, so a bf16 variant can later be added beside each entry point.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "kernels/ops.h"
}
#include "kernels/cuda/cuda_backend.h"

// The largest shapes the kernels take: each kernel checks its own at every call, and the op
// table publishes them (Ops.max_*) so a configuration is refused before anything is built.
#define CUDA_MAX_SEQ_LEN  16384 // select_topn holds a sequence in a block: 16 positions a thread
#define CUDA_MAX_HEAD_DIM 128   // attention: a head's dimensions spread over a warp's lanes
#define CUDA_MAX_TOP_K    32    // slot_topk lists and slot_read weights
#define CUDA_MAX_PTR_DIM  64    // slot_topk keeps a pointer in registers

// The fatal-error function of kernels/error.h. That header is C11 (it spells the attribute
// _Noreturn, which C++ does not know), so the .cu files declare the same C function here
// with the C++ spelling of the attribute.
extern "C" [[noreturn]] void hs_fatal_at(const char *file, int line, const char *fmt, ...);

static inline void cuda_check_at(const char *file, int line, cudaError_t err, const char *what) {
    if (err != cudaSuccess)
        hs_fatal_at(file, line, "%s failed: %s (%s)", what, cudaGetErrorString(err),
                    cudaGetErrorName(err));
}
static inline void cublas_check_at(const char *file, int line, cublasStatus_t status,
                                   const char *what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        hs_fatal_at(file, line, "%s failed: %s (%s)", what, cublasGetStatusString(status),
                    cublasGetStatusName(status));
}
#define CUDA_CHECK(call)   cuda_check_at(__FILE__, __LINE__, (call), #call)
#define CUBLAS_CHECK(call) cublas_check_at(__FILE__, __LINE__, (call), #call)
// After every kernel launch: a bad launch configuration is reported where it happened.
#define CUDA_CHECK_LAUNCH(kernel_name)                                                             \
    cuda_check_at(__FILE__, __LINE__, cudaGetLastError(), "launch of " kernel_name)

// ---- backend state (kernels/cuda/cuda_backend.cu) -----------------------------------------
cudaStream_t cuda_stream(void);
cublasHandle_t cuda_cublas(void);
// Streaming multiprocessors of the backend's device.
int cuda_sm_count(void);
// A device scratch buffer of at least `bytes`, owned by the backend and reused by every op.
// Ops run in order on the one stream, so an op may use it freely until it returns; it must
// not hold on to it. Growing it synchronizes the stream.
void *cuda_workspace(size_t bytes);
// The cuBLAS compute type of the linear GEMMs for the precision last set with
// cuda_set_matmul_precision (CUBLAS_COMPUTE_32F until then).
cublasComputeType_t cuda_matmul_compute_type(void);
// bf16 mode (--matmul bf16): besides the GEMMs, attention and the slot top-K search run
// their bf16 tensor-core kernels (cuda_attention_tc.cu, cuda_slot_topk_tc.cu).
static inline bool cuda_bf16_tensor_cores(void) {
    return cuda_matmul_compute_type() == CUBLAS_COMPUTE_32F_FAST_16BF;
}

// Blocks of `kernel` (`threads` a block, `shared_bytes` of dynamic shared memory) that the
// whole GPU holds at once: a grid of this many runs in one wave.
template <typename Kernel>
static inline int cuda_resident_blocks(Kernel kernel, int threads, size_t shared_bytes) {
    int per_sm = 0;
    CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes));
    return (per_sm < 1 ? 1 : per_sm) * cuda_sm_count();
}

// Grid size for a grid-stride loop over n elements (capped; the loops cover the rest).
static inline int cuda_grid(size_t n, int threads) {
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    if (blocks > 65535u * 8u)
        blocks = 65535u * 8u;
    return blocks == 0 ? 1 : (int)blocks;
}

// Calls f.template operator()<Index>() with Index = uint32_t when a flat walk's `cells` fit in
// 32 bits, else size_t: kernels that divide a cell index per cell (to find its row) pay far
// less for a 32-bit division than for a 64-bit one.
template <typename F> void with_cell_index(size_t cells, F &&f) {
    if (cells <= UINT32_MAX)
        f.template operator()<uint32_t>();
    else
        f.template operator()<size_t>();
}

// ---- atomic adds --------------------------------------------------------------------------
// *dst += v, four floats, each added atomically (row scatters where indices repeat). The
// float4 atomicAdd of compute capability 9.x does it in one instruction; older GPUs take
// four. dst 16-byte aligned.
__device__ inline void atomic_add_float4(float4 *dst, float4 v) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(dst, v);
#else
    float *d = reinterpret_cast<float *>(dst);
    atomicAdd(d, v.x);
    atomicAdd(d + 1, v.y);
    atomicAdd(d + 2, v.z);
    atomicAdd(d + 3, v.w);
#endif
}

// ---- reductions (deterministic: a fixed tree for a given blockDim) -------------------------
__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ inline float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
// Every thread of the block gets the sum. blockDim.x must be a multiple of 32.
__device__ inline float block_sum(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // an earlier call may still be reading `partial`
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    v = lane < n_warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}
__device__ inline float block_max(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    v = lane < n_warps ? partial[lane] : -INFINITY;
    return warp_max(v);
}

// loss[0] += scale * sum(values[0..n)), summed in double by one block in a fixed order:
// how every loss op stays deterministic (no float atomics on the loss).
void cuda_add_scaled_sum(float *loss, const float *values, int n, float scale);
// out[c] += sum_n a[n, c] * (b ? b[n, c] : 1) * (row_scale ? row_scale[n] : 1), deterministic.
// out [C]; a, b [N, C]; row_scale [N]
void cuda_column_sum(float *out, const float *a, const float *b, const float *row_scale, int N,
                     int C);
// Lagged column sums (the conv's dw): for l in [0, lags), over the rows with
// n % period >= l, out[c * out_stride + l * lag_step] += sum_n a[n, c] * b[n - l, c] *
// (row_scale ? row_scale[n] : 1). Deterministic, uses the workspace.
void cuda_lagged_column_sums(float *out, int out_stride, int lag_step, const float *a,
                             const float *b, const float *row_scale, int N, int C, int period,
                             int lags);
// dst [rows, ld] bf16 <- src [rows, cols] fp32 rounded to nearest, columns [cols, ld) zero;
// ld even and >= cols (cuda_linear.cu). How the bf16 kernels make their operand copies: the
// linear op's GEMM operands, attention's q, k, v, dout and the top-K search's keys.
void cuda_to_bf16_padded(__nv_bfloat16 *dst, int ld, const float *src, int rows, int cols);
// The bf16 operands of the linear op's GEMMs (cuda_linear.cu), shared with the LM head's
// own loop (cuda_lm_head.cu):
// - cuda_bf16_ld: the row length of a bf16 copy, `cols` rounded up to 8 (16 bytes);
//   cuda_bf16_bytes: the bytes of [rows, cuda_bf16_ld(cols)].
// - cuda_to_bf16: dst [rows, cuda_bf16_ld(cols)] <- src [rows, cols], padding zero.
// - cuda_weight_to_bf16: w16 [o_pad, cuda_bf16_ld(I)] <- w [O, I], rows O..o_pad-1 zero.
// - cuda_gemm_bf16: C (fp32, column-major) = op(A) op(B) + beta C, bf16 A and B.
// - cuda_linear_uses_bf16: whether a linear of N tokens, I inputs and O outputs runs on
//   bf16 copies (bf16 mode and no dimension too small for the conversions to pay).
int cuda_bf16_ld(int cols);
size_t cuda_bf16_bytes(int rows, int cols);
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, int rows, int cols);
void cuda_weight_to_bf16(__nv_bfloat16 *w16, const float *w, int O, int I, int o_pad);
void cuda_gemm_bf16(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                    const __nv_bfloat16 *a, int lda, const __nv_bfloat16 *b, int ldb, float beta,
                    float *c, int ldc);
bool cuda_linear_uses_bf16(int N, int I, int O);
// The fused cross-entropy with bf16 gradients (cuda_loss.cu): per row n of logits
// [N, ld_in] (first V columns), ce[n] = CE (ce may be NULL), argmax[n] (may be NULL) and
// dlogits [N, ld_out] = scale (softmax - onehot) rounded to bf16, columns [V, ld_out) zero
// (dlogits may be NULL). Ignored rows (target outside [0, V)) get ce 0 and zero gradients.
void cuda_cross_entropy_bf16_grad(float *ce, __nv_bfloat16 *dlogits, int ld_out, int32_t *argmax,
                                  const float *logits, int ld_in, const int32_t *targets,
                                  float scale, int N, int V);

// ---- the ops (signatures of kernels/ops.h) --------------------------------------------------
// cuda_backend.cu
void cuda_init(int device);
void cuda_shutdown(void);
void *cuda_alloc(size_t bytes);
void cuda_free(void *ptr);
void cuda_zero(void *ptr, size_t bytes);
void cuda_copy_to_host(void *host_dst, const void *src, size_t bytes);
void cuda_copy_from_host(void *dst, const void *host_src, size_t bytes);
void cuda_copy(void *dst, const void *src, size_t bytes);
void cuda_synchronize(void);
void cuda_set_matmul_precision(MatmulPrecision precision);
// cuda_elementwise.cu
void cuda_gather_rows(float *out, const float *table, const int32_t *idx, int M, int D,
                      int row_offset);
void cuda_scatter_add_rows(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                           int row_offset);
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_axpy(float *y, float alpha, const float *x, size_t n);
void cuda_scale(float *x, float alpha, size_t n);
void cuda_gelu_forward(float *out, const float *x, size_t n);
void cuda_gelu_backward(float *dx, const float *dout, const float *x, size_t n);
// cuda_linear.cu (next to the bf16 copies of the matmul operands)
void cuda_to_bf16_op(uint16_t *dst, const float *src, size_t n);
void cuda_from_bf16_op(float *dst, const uint16_t *src, size_t n);
// cuda_rmsnorm.cu
void cuda_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int H);
void cuda_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                           const float *rstd, int N, int H);
// cuda_linear.cu
void cuda_linear_forward(float *out, const float *x, const float *w, const float *b, int N, int I,
                         int O);
void cuda_linear_forward_keep_bf16(float *out, uint16_t *x16, const float *x, const float *w,
                                   const float *b, int N, int I, int O);
void cuda_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, int N, int I, int O);
void cuda_linear_backward_bf16_input(float *dx, float *dw, float *db, const float *dout,
                                     const uint16_t *x16, const float *w, int N, int I, int O);
// cuda_conv.cu
void cuda_conv_forward(float *out, const float *x, const float *w, const float *bias, int B, int T,
                       int H, int Kc);
void cuda_conv_backward(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                        const float *w, int B, int T, int H, int Kc);
// cuda_router.cu
void cuda_gumbel_noise(float *out, uint64_t seed, uint32_t step, uint32_t layer,
                       uint32_t seq_offset, int B, int T);
void cuda_select_topn(int32_t *sel, const float *z, int B, int T, int n_sel);
void cuda_select_threshold(int32_t *sel, int32_t *count, const float *r, int N);
void cuda_token_positions(int32_t *pos, const int32_t *idx, int M, int T);
// cuda_rope.cu
void cuda_rope_forward(float *x, const int32_t *pos, int M, int nheads, int hd, float theta);
void cuda_rope_backward(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta);
// cuda_attention.cu
void cuda_attention_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                            const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *o, const float *lse,
                             const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
// cuda_attention_tc.cu: the bf16 tensor-core kernels, chosen by cuda_attention.cu in bf16 mode
void cuda_attention_forward_tc(float *o, float *lse, const float *q, const float *k, const float *v,
                               const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
void cuda_attention_backward_tc(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *o, const float *lse,
                                const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
// cuda_slot_topk_tc.cu: the bf16 tensor-core search, chosen by cuda_slot_topk in bf16 mode
void cuda_slot_topk_tc(float *top_s, int32_t *top_i, const float *p, const float *keys, int N,
                       int R, int rows, int row_offset, int K);
// cuda_gate.cu
void cuda_gated_scatter_add(float *h, const float *y, const float *r, const int32_t *idx, int M,
                            int H);
void cuda_gated_scatter_add_backward(float *dy, float *dr, const float *dh, const float *y,
                                     const float *r, const int32_t *idx, int M, int H);
// cuda_slot_memory.cu
void cuda_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                    int rows, int row_offset, int K);
void cuda_slot_topk_merge(float *top_s, int32_t *top_i, const float *cand_s, const int32_t *cand_i,
                          int P, int N, int K);
void cuda_slot_read_forward(float *y, float *w, float *loss, const float *h, const float *top_s,
                            const float *values, const int32_t *idx, float scale, int N, int K,
                            int H);
void cuda_slot_read_backward(float *dh, float *ds, float *dvalues, const float *dy, const float *w,
                             const float *values, const int32_t *idx, float scale, int N, int K,
                             int H);
void cuda_slot_score_backward(float *dp, float *dkrows, const float *ds, const float *p,
                              const float *krows, int N, int K, int R);
// cuda_loss.cu
void cuda_cross_entropy_forward(float *loss, const float *logits, const int32_t *targets,
                                float scale, int N, int V);
void cuda_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                 float scale, int N, int V);
// cuda_lm_head.cu
void cuda_lm_head_loss(float *loss, int32_t *predictions, float *dyn, float *dw, float *logits,
                       const float *yn, const float *w, const int32_t *targets, float scale, int N,
                       int H, int V, int chunk);
void cuda_cross_entropy_fused(float *loss, float *dlogits, int32_t *argmax, const float *logits,
                              const int32_t *targets, float scale, int N, int V);
void cuda_route_loss_forward(float *loss, const float *r, const int32_t *sel, float rho,
                             float token_scale, float seq_scale, int B, int T, int n_sel);
void cuda_route_loss_backward(float *dr, const float *r, const int32_t *sel, float rho,
                              float token_scale, float seq_scale, int B, int T, int n_sel);
// cuda_optim.cu
void cuda_sum_squares(float *out, const float *x, size_t n);
void cuda_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                       int t);
// cuda_timer.cu: events on the backend stream, and the accounting of cuda_alloc / cuda_free
void *cuda_timer_create(void);
void cuda_timer_record(void *timer);
float cuda_timer_elapsed_ms(void *start, void *end);
void cuda_timer_destroy(void *timer);
void cuda_track_alloc(const void *ptr, size_t bytes); // called by cuda_alloc
void cuda_track_free(const void *ptr);                // called by cuda_free
size_t cuda_memory_in_use(void);
size_t cuda_memory_peak(void);
void cuda_memory_reset_peak(void);
void cuda_memory_device_info(size_t *free_bytes, size_t *total_bytes);
