// The LM head and its loss out of three ops of a table (see lm_head_loss in kernels/ops.h):
// per chunk of tokens, the logits GEMM, the fused cross-entropy (dlogits in place over the
// logits) and the backward GEMMs, so only one chunk of [chunk, V] logits is ever held. The
// cpu backend runs the head this way; the cuda backend too outside bf16 mode (in bf16 mode it
// has its own loop, kernels/cuda/cuda_lm_head.cu, that makes the bf16 operands once a call).
#include "kernels/error.h"
#include "kernels/ops.h"

void lm_head_loss_composed(const Ops *ops, float *loss, int32_t *predictions, float *dyn, float *dw,
                           float *logits, const float *yn, const float *w, const int32_t *targets,
                           float scale, int N, int H, int V, int chunk) {
    if (chunk < 1)
        hs_fatal("lm_head_loss: %d tokens per chunk (must be >= 1)", chunk);
    if (dyn)
        ops->zero(dyn, (size_t)N * H * sizeof(float)); // linear_backward adds into it
    for (int first = 0; first < N; first += chunk) {
        const int rows = N - first < chunk ? N - first : chunk;
        const float *yn_c = yn + (size_t)first * H; // [rows, H]
        ops->linear_forward(logits, yn_c, w, NULL, rows, H, V);
        ops->cross_entropy_fused(loss, dyn ? logits : NULL,
                                 predictions ? predictions + first : NULL, logits, targets + first,
                                 scale, rows, V);
        if (dyn)
            ops->linear_backward(dyn + (size_t)first * H, dw, NULL, logits, yn_c, w, rows, H, V);
    }
}
