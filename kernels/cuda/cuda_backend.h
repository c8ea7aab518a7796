// C-callable extras of the cuda backend, beyond the op table (kernels/ops.h): what dist/
// needs to put NCCL work on the same stream as the ops, and the carving of the ops' scratch
// workspace.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Carving one workspace request (cuda_workspace, kernels/cuda/cuda_common.cuh) into the
// parts an op needs at the same time: ask for the sum of cuda_workspace_part_bytes of each
// part, then take the parts in the same order with cuda_workspace_carve. Every part starts
// 256-byte aligned (cudaMalloc aligns the base as much), as cuBLAS and vector loads want.
static inline size_t cuda_workspace_part_bytes(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}
// The part of `bytes` at *cursor; moves *cursor past it.
static inline void *cuda_workspace_carve(char **cursor, size_t bytes) {
    void *part = *cursor;
    *cursor += cuda_workspace_part_bytes(bytes);
    return part;
}

// The backend's cudaStream_t (as void *, so C code without CUDA headers can pass it on).
// Fatal error when the backend has not been initialised (ops->init).
void *ops_cuda_stream(void);

#ifdef __cplusplus
}
#endif
