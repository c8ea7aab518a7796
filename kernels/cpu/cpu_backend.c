// The cpu backend: host memory, synchronous ops, and the Ops table that gathers the
// plain-C reference implementations of kernels/cpu/*.c.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"
#include "kernels/ops.h"

#include <stdlib.h>
#include <string.h>

static void cpu_init(int device) {
    (void)device; // the host has no devices to choose between
}

static void cpu_shutdown(void) {}

static void *cpu_alloc(size_t bytes) {
    void *ptr = hs_calloc(1, bytes ? bytes : 1); // a distinct pointer even for 0 bytes
    cpu_track_alloc(ptr, bytes);
    return ptr;
}

static void cpu_free(void *ptr) {
    cpu_track_free(ptr);
    free(ptr);
}

static void cpu_zero(void *ptr, size_t bytes) {
    if (bytes)
        memset(ptr, 0, bytes);
}

// Host to host: every copy direction is the same memcpy on this backend.
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src)
        memcpy(dst, src, bytes);
}

static void cpu_synchronize(void) {} // every cpu op has finished when it returns

// The cpu backend is the fp32 oracle: its products are always fp32 (with wider
// accumulation where kernels/cpu/cpu_linear.c uses it), whatever is asked. A value outside
// the enum is still an error, so a bad caller is caught on the cpu too.
static void cpu_set_matmul_precision(MatmulPrecision precision) {
    if (precision != MATMUL_FP32 && precision != MATMUL_TF32 && precision != MATMUL_BF16)
        hs_fatal("cpu backend: unknown matmul precision %d (fp32 = 0, tf32 = 1, bf16 = 2)",
                 (int)precision);
}

static void cpu_lm_head_loss(float *loss, int32_t *predictions, float *dyn, float *dw,
                             float *logits, const float *yn, const float *w, const int32_t *targets,
                             float scale, int N, int H, int V, int chunk) {
    lm_head_loss_composed(ops_cpu(), loss, predictions, dyn, dw, logits, yn, w, targets, scale, N,
                          H, V, chunk);
}

static const Ops cpu_ops_table = {
    .kind = BACKEND_CPU,
    .name = "cpu",
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy_to_host = cpu_copy,
    .copy_from_host = cpu_copy,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .add = cpu_add,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .to_bf16 = cpu_to_bf16,
    .from_bf16 = cpu_from_bf16,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .linear_forward = cpu_linear_forward,
    .linear_forward_keep_bf16 = cpu_linear_forward_keep_bf16,
    .linear_backward = cpu_linear_backward,
    .linear_backward_bf16_input = cpu_linear_backward_bf16_input,
    .conv_forward = cpu_conv_forward,
    .conv_backward = cpu_conv_backward,
    .gumbel_noise = cpu_gumbel_noise,
    .select_topn = cpu_select_topn,
    .select_threshold = cpu_select_threshold,
    .token_positions = cpu_token_positions,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .gated_scatter_add = cpu_gated_scatter_add,
    .gated_scatter_add_backward = cpu_gated_scatter_add_backward,
    .slot_topk = cpu_slot_topk,
    .slot_topk_merge = cpu_slot_topk_merge,
    .slot_read_forward = cpu_slot_read_forward,
    .slot_read_backward = cpu_slot_read_backward,
    .slot_score_backward = cpu_slot_score_backward,
    .cross_entropy_forward = cpu_cross_entropy_forward,
    .cross_entropy_backward = cpu_cross_entropy_backward,
    .cross_entropy_fused = cpu_cross_entropy_fused,
    .lm_head_loss = cpu_lm_head_loss,
    .route_loss_forward = cpu_route_loss_forward,
    .route_loss_backward = cpu_route_loss_backward,
    .sum_squares = cpu_sum_squares,
    .adamw_update = cpu_adamw_update,
    .timer_create = cpu_timer_create,
    .timer_record = cpu_timer_record,
    .timer_elapsed_ms = cpu_timer_elapsed_ms,
    .timer_destroy = cpu_timer_destroy,
    .memory_in_use = cpu_memory_in_use,
    .memory_peak = cpu_memory_peak,
    .memory_reset_peak = cpu_memory_reset_peak,
    .memory_device_info = cpu_memory_device_info,
    .set_matmul_precision = cpu_set_matmul_precision,
};

const Ops *ops_cpu(void) {
    return &cpu_ops_table;
}
