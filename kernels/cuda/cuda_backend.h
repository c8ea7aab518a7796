// C-callable extras of the cuda backend, beyond the op table (kernels/ops.h): what dist/
// needs to put NCCL work on the same stream as the ops.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// The backend's cudaStream_t (as void *, so C code without CUDA headers can pass it on).
// Fatal error when the backend has not been initialised (ops->init).
void *ops_cuda_stream(void);

#ifdef __cplusplus
}
#endif
