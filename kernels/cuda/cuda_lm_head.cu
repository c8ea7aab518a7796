// The LM head and its loss (lm_head_loss in kernels/ops.h) on the cuda backend.
//
// Outside bf16 mode it is the composition every backend can run (kernels/lm_head_composed.c:
// linear_forward, cross_entropy_fused, linear_backward per chunk). In bf16 mode that
// composition pays, per chunk of 1280 tokens at the seed shape, for work that does not
// depend on the chunk or that a better layout avoids:
// - the [V, H] weight converted to bf16 twice (forward and backward linear), 26 times a step;
// - the GEMM writing into an aligned scratch and a pass copying it to the unpadded [rows, V]
//   logits (V = 50257 is odd: cuBLAS needs 16-byte aligned rows for its fast kernels);
// - dlogits written in fp32 by the cross-entropy, then read again to make their bf16 copy.
// Here the chunk loop is written out instead:
// - w and yn are converted once a call (the head runs once a step): w16 [v_pad, ld_h] with
//   zero rows V..v_pad-1, yn16 [N, ld_h];
// - the forward GEMM writes the logits straight into the scratch as [rows, v_pad] (the
//   scratch has room for V + 8 floats a row);
// - the fused cross-entropy writes dlogits in bf16 [rows, v_pad] with zero padding, which is
//   the operand both backward GEMMs take as it is;
// - the dx GEMM writes dyn's rows of the chunk (beta = 0), so dyn needs no zeroing pass.
// The products see the same bf16 operands as the composition's, rounded from the same fp32
// values, and accumulate in fp32 the same way (dw over chunks with beta = 1).
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"

static void lm_head_loss_bf16(float *loss, int32_t *predictions, float *dyn, float *dw,
                              float *logits, const float *yn, const float *w,
                              const int32_t *targets, float scale, int N, int H, int V, int chunk) {
    const int ld_h = cuda_bf16_ld(H), v_pad = cuda_bf16_ld(V);
    if (chunk > N)
        chunk = N;
    const size_t w_bytes = cuda_bf16_bytes(v_pad, H), yn_bytes = cuda_bf16_bytes(N, H);
    const size_t dlogits_bytes = dyn ? cuda_bf16_bytes(chunk, V) : 0;
    const size_t ce_bytes = loss ? (size_t)chunk * sizeof(float) : 0;
    char *cursor = (char *)cuda_workspace(
        cuda_workspace_part_bytes(w_bytes) + cuda_workspace_part_bytes(yn_bytes) +
        cuda_workspace_part_bytes(dlogits_bytes) + cuda_workspace_part_bytes(ce_bytes));
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, w_bytes);   // [v_pad, ld_h]
    __nv_bfloat16 *yn16 = (__nv_bfloat16 *)cuda_workspace_carve(&cursor, yn_bytes); // [N, ld_h]
    __nv_bfloat16 *dlogits16 =
        (__nv_bfloat16 *)cuda_workspace_carve(&cursor, dlogits_bytes); // [chunk, v_pad]
    float *ce = (float *)cuda_workspace_carve(&cursor, ce_bytes);      // [chunk]
    cuda_weight_to_bf16(w16, w, V, H, v_pad);
    cuda_to_bf16(yn16, yn, N, H);
    for (int first = 0; first < N; first += chunk) {
        const int rows = N - first < chunk ? N - first : chunk;
        const __nv_bfloat16 *yn16_c = yn16 + (size_t)first * ld_h; // [rows, ld_h]
        // logits [rows, v_pad]: columns V..v_pad-1 are products with w16's zero rows
        cuda_gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, v_pad, rows, H, w16, ld_h, yn16_c, ld_h, 0.0f,
                       logits, v_pad);
        cuda_cross_entropy_bf16_grad(ce, dyn ? dlogits16 : NULL, v_pad,
                                     predictions ? predictions + first : NULL, logits, v_pad,
                                     targets + first, scale, rows, V);
        if (loss)
            cuda_add_scaled_sum(loss, ce, rows, scale);
        if (!dyn)
            continue;
        // dyn_c^T [H, rows] = w16^T [H, v_pad] . dlogits16^T [v_pad, rows] (zero padding on
        // both sides of the sum); dw^T [H, V] += yn16_c^T [H, rows] . dlogits16 [rows, V]
        cuda_gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, H, rows, v_pad, w16, ld_h, dlogits16, v_pad, 0.0f,
                       dyn + (size_t)first * H, H);
        cuda_gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, H, V, rows, yn16_c, ld_h, dlogits16, v_pad, 1.0f,
                       dw, H);
    }
}

void cuda_lm_head_loss(float *loss, int32_t *predictions, float *dyn, float *dw, float *logits,
                       const float *yn, const float *w, const int32_t *targets, float scale, int N,
                       int H, int V, int chunk) {
    if (chunk < 1)
        hs_fatal_at(__FILE__, __LINE__, "lm_head_loss: %d tokens per chunk (must be >= 1)", chunk);
    if (N == 0)
        return;
    if (cuda_linear_uses_bf16(N, H, V))
        lm_head_loss_bf16(loss, predictions, dyn, dw, logits, yn, w, targets, scale, N, H, V,
                          chunk);
    else
        lm_head_loss_composed(ops_cuda(), loss, predictions, dyn, dw, logits, yn, w, targets, scale,
                              N, H, V, chunk);
}
