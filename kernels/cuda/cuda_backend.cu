// Lifetime and memory of the cuda backend: one device per process, one stream that every op
// is enqueued on, one cuBLAS handle bound to that stream, a reusable scratch workspace, and
// the backend's settings (the precision of the linear ops' GEMMs).
#include "kernels/cuda/cuda_common.cuh"

typedef struct CudaBackend {
    int initialized;
    int device;
    int sm_count; // of the device, asked once at init (launch shapes read it)
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *workspace; // device scratch, see cuda_workspace
    size_t workspace_bytes;
    MatmulPrecision matmul; // of every linear GEMM, see cuda_matmul_compute_type
} CudaBackend;

// No device bound (before cuda_init and after cuda_shutdown).
static const CudaBackend unbound_backend = {0, -1, 0, NULL, NULL, NULL, 0, MATMUL_FP32};
static CudaBackend backend = unbound_backend;

static void require_initialized(const char *what) {
    if (!backend.initialized)
        hs_fatal_at(__FILE__, __LINE__,
                    "cuda backend: %s called before ops->init(device) bound a GPU", what);
}

void cuda_init(int device) {
    if (backend.initialized) {
        if (device != backend.device)
            hs_fatal_at(__FILE__, __LINE__,
                        "cuda backend: already initialised on device %d, asked for device %d",
                        backend.device, device);
        return;
    }
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
        hs_fatal_at(__FILE__, __LINE__, "cuda backend: device %d does not exist (%d visible)",
                    device, count);
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaDeviceGetAttribute(&backend.sm_count, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&backend.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&backend.cublas));
    CUBLAS_CHECK(cublasSetStream(backend.cublas, backend.stream));
    backend.device = device;
    backend.initialized = 1;
    // A precision chosen before init takes effect now (fp32 unless one was).
    cuda_set_matmul_precision(backend.matmul);
}

void cuda_shutdown(void) {
    if (!backend.initialized)
        return;
    CUDA_CHECK(cudaStreamSynchronize(backend.stream));
    if (backend.workspace)
        CUDA_CHECK(cudaFree(backend.workspace));
    CUBLAS_CHECK(cublasDestroy(backend.cublas));
    CUDA_CHECK(cudaStreamDestroy(backend.stream));
    backend = unbound_backend;
}

// The handle's math mode matters only to calls that take no cublasComputeType_t (cuBLAS
// reads it for the cublas<T> routines); the linear GEMMs name their compute type
// explicitly (cuda_matmul_compute_type). It is still set to match the precision, so that no
// call on this handle can use TF32 behind our back in fp32 mode (pedantic: the prescribed
// fp32 arithmetic throughout), and nothing holds the fast compute types back in the others.
void cuda_set_matmul_precision(MatmulPrecision precision) {
    if (precision != MATMUL_FP32 && precision != MATMUL_TF32 && precision != MATMUL_BF16)
        hs_fatal_at(__FILE__, __LINE__,
                    "cuda backend: unknown matmul precision %d (fp32 = 0, tf32 = 1, bf16 = 2)",
                    (int)precision);
    backend.matmul = precision;
    if (!backend.initialized)
        return; // cuda_init applies it
    cublasMath_t mode = precision == MATMUL_FP32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH;
    CUBLAS_CHECK(cublasSetMathMode(backend.cublas, mode));
}

// What each precision asks of cuBLAS (cublasGemmEx with fp32 A, B and C in every mode):
//   fp32: CUBLAS_COMPUTE_32F: fp32 multiplies and fp32 accumulation on CUDA cores, about
//         1e-7 relative per product (with the handle's pedantic math mode, no TF32).
//   tf32: CUBLAS_COMPUTE_32F_FAST_TF32: inputs rounded to TF32 (8-bit exponent, 10-bit
//         mantissa: about 5e-4 relative each) for the tensor cores, fp32 accumulation.
//   bf16: CUBLAS_COMPUTE_32F_FAST_16BF: inputs rounded to bf16 (8-bit exponent, 7-bit
//         mantissa: about 4e-3 relative each) for the tensor cores, fp32 accumulation;
//         cuBLAS may pick a TF32 kernel instead, which is only more precise.
// The exponent range is fp32's in all three, so no loss scaling is needed.
// cuda_linear.cu reads this type to tell the mode; in the bf16 mode it rounds the operands
// to bf16 copies itself (cuBLAS given fp32 operands did not reach the bf16 tensor cores).
cublasComputeType_t cuda_matmul_compute_type(void) {
    switch (backend.matmul) {
    case MATMUL_TF32:
        return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MATMUL_BF16:
        return CUBLAS_COMPUTE_32F_FAST_16BF;
    case MATMUL_FP32:
        break;
    }
    return CUBLAS_COMPUTE_32F;
}

cudaStream_t cuda_stream(void) {
    require_initialized("an op");
    return backend.stream;
}

int cuda_sm_count(void) {
    require_initialized("an op");
    return backend.sm_count;
}

cublasHandle_t cuda_cublas(void) {
    require_initialized("a cuBLAS op");
    return backend.cublas;
}

extern "C" void *ops_cuda_stream(void) {
    require_initialized("ops_cuda_stream");
    return (void *)backend.stream;
}

// One buffer for every op's scratch. Its contents are dead between ops, and reuse inside an
// op is ordered by the stream: a kernel enqueued later runs after the earlier ones that read
// the same bytes. The one hazard is holding a pointer across a call that asks for the
// workspace again (cuda_column_sum does): growing frees the old buffer. So an op asks once
// for everything it needs at the same time (carved with cuda_workspace_carve) and calls
// such helpers only after its last use of its own parts.
void *cuda_workspace(size_t bytes) {
    if (bytes <= backend.workspace_bytes)
        return backend.workspace;
    cudaStream_t stream = cuda_stream();
    // Earlier ops on the stream may still read the old buffer.
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (backend.workspace)
        CUDA_CHECK(cudaFree(backend.workspace));
    size_t grown = bytes + bytes / 2; // room to grow without reallocating every call
    cudaError_t err = cudaMalloc(&backend.workspace, grown);
    if (err != cudaSuccess)
        hs_fatal_at(__FILE__, __LINE__, "cuda backend: workspace of %zu bytes: cudaMalloc: %s",
                    grown, cudaGetErrorString(err));
    backend.workspace_bytes = grown;
    return backend.workspace;
}

void *cuda_alloc(size_t bytes) {
    cudaStream_t stream = cuda_stream();
    void *ptr = NULL;
    cudaError_t err = cudaMalloc(&ptr, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        hs_fatal_at(__FILE__, __LINE__,
                    "cuda backend: cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes free)",
                    bytes, cudaGetErrorString(err), free_bytes, total_bytes);
    }
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream));
    cuda_track_alloc(ptr, bytes);
    return ptr;
}

void cuda_free(void *ptr) {
    if (!ptr)
        return;
    // The stream may still be using it.
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
    cuda_track_free(ptr);
    CUDA_CHECK(cudaFree(ptr));
}

void cuda_zero(void *ptr, size_t bytes) {
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, cuda_stream()));
}

// Copies to and from pageable host memory: the host buffer is usable when the call returns,
// so these synchronize the stream (they are not in the hot loop).
void cuda_copy_to_host(void *host_dst, const void *src, size_t bytes) {
    cudaStream_t stream = cuda_stream();
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

void cuda_copy_from_host(void *dst, const void *host_src, size_t bytes) {
    cudaStream_t stream = cuda_stream();
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

void cuda_copy(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

void cuda_synchronize(void) {
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
}

extern "C" int ops_cuda_device_count(void) {
    int count = 0;
    // No driver or no device is not an error here: the caller falls back to the cpu.
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky status so later calls do not see it
        return 0;
    }
    return count;
}

extern "C" int ops_cuda_device_bus_id(int device, char *out, int len) {
    CUDA_CHECK(cudaDeviceGetPCIBusId(out, len, device));
    return 0;
}
