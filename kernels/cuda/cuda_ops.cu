// The op table of the cuda backend: every entry of kernels/ops.h, each implemented in the
// .cu file of its concern (see cuda_common.cuh for which). Designated initializers (C++20)
// must follow the declaration order of kernels/ops.h, so the compiler catches a misplaced entry.
#include "kernels/cuda/cuda_common.cuh"

static const Ops cuda_ops = {
    .kind = BACKEND_CUDA,
    .name = "cuda",
    .init = cuda_init,
    .shutdown = cuda_shutdown,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .zero = cuda_zero,
    .copy_to_host = cuda_copy_to_host,
    .copy_from_host = cuda_copy_from_host,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .gather_rows = cuda_gather_rows,
    .scatter_add_rows = cuda_scatter_add_rows,
    .add = cuda_add,
    .axpy = cuda_axpy,
    .scale = cuda_scale,
    .gelu_forward = cuda_gelu_forward,
    .gelu_backward = cuda_gelu_backward,
    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,
    .linear_forward = cuda_linear_forward,
    .linear_backward = cuda_linear_backward,
    .conv_forward = cuda_conv_forward,
    .conv_backward = cuda_conv_backward,
    .gumbel_noise = cuda_gumbel_noise,
    .select_topn = cuda_select_topn,
    .select_threshold = cuda_select_threshold,
    .token_positions = cuda_token_positions,
    .rope_forward = cuda_rope_forward,
    .rope_backward = cuda_rope_backward,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .gated_scatter_add = cuda_gated_scatter_add,
    .gated_scatter_add_backward = cuda_gated_scatter_add_backward,
    .slot_topk = cuda_slot_topk,
    .slot_topk_merge = cuda_slot_topk_merge,
    .slot_read_forward = cuda_slot_read_forward,
    .slot_read_backward = cuda_slot_read_backward,
    .slot_score_backward = cuda_slot_score_backward,
    .cross_entropy_forward = cuda_cross_entropy_forward,
    .cross_entropy_backward = cuda_cross_entropy_backward,
    .route_loss_forward = cuda_route_loss_forward,
    .route_loss_backward = cuda_route_loss_backward,
    .sum_squares = cuda_sum_squares,
    .adamw_update = cuda_adamw_update,
    .timer_create = cuda_timer_create,
    .timer_record = cuda_timer_record,
    .timer_elapsed_ms = cuda_timer_elapsed_ms,
    .timer_destroy = cuda_timer_destroy,
    .memory_in_use = cuda_memory_in_use,
    .memory_peak = cuda_memory_peak,
    .memory_reset_peak = cuda_memory_reset_peak,
    .memory_device_info = cuda_memory_device_info,
    .set_matmul_precision = cuda_set_matmul_precision,
    // The kernels' own limits (cuda_router.cu, cuda_attention.cu, cuda_slot_topk.cu, which
    // also check them at each call).
    .max_seq_len = 16384,
    .max_head_dim = 128,
    .max_top_k = 32,
    .max_ptr_dim = 64,
};

// NULL when no GPU is visible (or no driver): callers fall back to the cpu backend.
extern "C" const Ops *ops_cuda(void) {
    return ops_cuda_device_count() > 0 ? &cuda_ops : NULL;
}
