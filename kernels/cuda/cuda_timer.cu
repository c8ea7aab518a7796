// Timers and memory accounting of the cuda backend (kernels/ops.h, "timing and memory
// accounting"). A timer is a CUDA event recorded on the backend stream, so two of them
// measure the GPU time of the work enqueued between them without stopping the host; the
// wait happens once, in timer_elapsed_ms.
//
// Memory: cuda_alloc / cuda_free report every buffer here. Device pointers cannot carry a
// size header that the host could read, so the sizes live in a host table keyed by pointer.
#include <unordered_map>

#include "kernels/cuda/cuda_common.cuh"

// ---- timers ---------------------------------------------------------------------------

void *cuda_timer_create(void) {
    cudaEvent_t event = NULL;
    CUDA_CHECK(cudaEventCreate(&event)); // with timing (no cudaEventDisableTiming)
    return (void *)event;
}

void cuda_timer_record(void *timer) {
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)timer, cuda_stream()));
}

float cuda_timer_elapsed_ms(void *start, void *end) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)end));
    CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return ms;
}

void cuda_timer_destroy(void *timer) {
    if (timer)
        CUDA_CHECK(cudaEventDestroy((cudaEvent_t)timer));
}

// ---- allocation tracking ----------------------------------------------------------------

struct AllocAccount {
    std::unordered_map<const void *, size_t> live; // device pointer -> bytes
    size_t in_use_bytes = 0;
    size_t peak_bytes = 0;
};

// Built on first use, so no static constructor order question arises.
static AllocAccount &account() {
    static AllocAccount a;
    return a;
}

void cuda_track_alloc(const void *ptr, size_t bytes) {
    AllocAccount &a = account();
    a.live[ptr] = bytes;
    a.in_use_bytes += bytes;
    if (a.in_use_bytes > a.peak_bytes)
        a.peak_bytes = a.in_use_bytes;
}

void cuda_track_free(const void *ptr) {
    AllocAccount &a = account();
    auto it = a.live.find(ptr);
    if (it == a.live.end())
        return; // not from cuda_alloc: nothing to subtract
    a.in_use_bytes -= it->second;
    a.live.erase(it);
}

size_t cuda_memory_in_use(void) {
    return account().in_use_bytes;
}

size_t cuda_memory_peak(void) {
    return account().peak_bytes;
}

void cuda_memory_reset_peak(void) {
    AllocAccount &a = account();
    a.peak_bytes = a.in_use_bytes;
}

void cuda_memory_device_info(size_t *free_bytes, size_t *total_bytes) {
    cuda_stream(); // a fatal error naming the call if the backend is not initialised
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}
