// The op table of the cuda backend: every entry of kernels/ops.h, each implemented in the
// .cu file of its concern (see cuda_common.cuh for which).
#include "kernels/cuda/cuda_common.cuh"

static const Ops cuda_ops = {
    BACKEND_CUDA,
    "cuda",
    cuda_init,
    cuda_shutdown,
    cuda_alloc,
    cuda_free,
    cuda_zero,
    cuda_copy_to_host,
    cuda_copy_from_host,
    cuda_copy,
    cuda_synchronize,
    cuda_gather_rows,
    cuda_scatter_add_rows,
    cuda_add,
    cuda_axpy,
    cuda_scale,
    cuda_gelu_forward,
    cuda_gelu_backward,
    cuda_rmsnorm_forward,
    cuda_rmsnorm_backward,
    cuda_linear_forward,
    cuda_linear_backward,
    cuda_conv_forward,
    cuda_conv_backward,
    cuda_gumbel_noise,
    cuda_select_topn,
    cuda_select_threshold,
    cuda_rope_forward,
    cuda_rope_backward,
    cuda_attention_forward,
    cuda_attention_backward,
    cuda_gated_scatter_add,
    cuda_gated_scatter_add_backward,
    cuda_slot_topk,
    cuda_slot_topk_merge,
    cuda_slot_read_forward,
    cuda_slot_read_backward,
    cuda_slot_score_backward,
    cuda_cross_entropy_forward,
    cuda_cross_entropy_backward,
    cuda_route_loss_forward,
    cuda_route_loss_backward,
    cuda_sum_squares,
    cuda_adamw_update,
};

// NULL when no GPU is visible (or no driver): callers fall back to the cpu backend.
extern "C" const Ops *ops_cuda(void) {
    return ops_cuda_device_count() > 0 ? &cuda_ops : NULL;
}
