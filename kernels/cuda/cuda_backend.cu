// Lifetime and memory of the cuda backend: one device per process, one stream that every op
// is enqueued on, one cuBLAS handle bound to that stream, and a reusable scratch workspace.
#include "kernels/cuda/cuda_common.cuh"

typedef struct CudaBackend {
    int initialized;
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *workspace; // device scratch, see cuda_workspace
    size_t workspace_bytes;
} CudaBackend;

static CudaBackend backend = {0, -1, NULL, NULL, NULL, 0};

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
    CUDA_CHECK(cudaStreamCreateWithFlags(&backend.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&backend.cublas));
    CUBLAS_CHECK(cublasSetStream(backend.cublas, backend.stream));
    // Plain fp32 products: no TF32 unless asked for, so results stay close to the cpu oracle.
    CUBLAS_CHECK(cublasSetMathMode(backend.cublas, CUBLAS_PEDANTIC_MATH));
    backend.device = device;
    backend.initialized = 1;
}

void cuda_shutdown(void) {
    if (!backend.initialized)
        return;
    CUDA_CHECK(cudaStreamSynchronize(backend.stream));
    if (backend.workspace)
        CUDA_CHECK(cudaFree(backend.workspace));
    CUBLAS_CHECK(cublasDestroy(backend.cublas));
    CUDA_CHECK(cudaStreamDestroy(backend.stream));
    backend = (CudaBackend){0, -1, NULL, NULL, NULL, 0};
}

cudaStream_t cuda_stream(void) {
    require_initialized("an op");
    return backend.stream;
}

cublasHandle_t cuda_cublas(void) {
    require_initialized("a cuBLAS op");
    return backend.cublas;
}

extern "C" void *ops_cuda_stream(void) {
    require_initialized("ops_cuda_stream");
    return (void *)backend.stream;
}

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
