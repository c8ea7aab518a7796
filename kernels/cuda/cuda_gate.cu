// The attention gate: h[idx[m], :] += g_m * y[m, :], g_m = sigmoid(r[idx[m]]) (1 when r is
// NULL), and its backward. One block per gathered row m.
#include "kernels/cuda/cuda_common.cuh"

static const int GATE_THREADS = 128;

__device__ inline float gate_of(const float *r, int32_t token) {
    return r ? 1.0f / (1.0f + expf(-r[token])) : 1.0f;
}

// h [N, H]; y [M, H]; idx [M]. The selected tokens are distinct, so each element of h gets
// one add; atomicAdd keeps repeated indices (not produced by the router) correct too.
__global__ void gated_scatter_add_kernel(float *h, const float *y, const float *r,
                                         const int32_t *idx, int H) {
    int m = blockIdx.x;
    int32_t token = idx[m];
    float gate = gate_of(r, token);
    for (int c = threadIdx.x; c < H; c += blockDim.x)
        atomicAdd(&h[(size_t)token * H + c], gate * y[(size_t)m * H + c]);
}

// dy[m] = g dh[idx[m]] (overwrites); dr[idx[m]] += g (1 - g) <dh[idx[m]], y[m]>
__global__ void gated_scatter_add_backward_kernel(float *dy, float *dr, const float *dh,
                                                  const float *y, const float *r,
                                                  const int32_t *idx, int H) {
    int m = blockIdx.x;
    int32_t token = idx[m];
    float gate = gate_of(r, token);
    const float *dh_row = dh + (size_t)token * H;
    const float *y_row = y + (size_t)m * H;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        dy[(size_t)m * H + c] = gate * dh_row[c];
        dot += dh_row[c] * y_row[c];
    }
    if (dr && r) {
        dot = block_sum(dot);
        if (threadIdx.x == 0)
            atomicAdd(&dr[token], gate * (1.0f - gate) * dot);
    }
}

void cuda_gated_scatter_add(float *h, const float *y, const float *r, const int32_t *idx, int M,
                            int H) {
    if (M == 0)
        return;
    gated_scatter_add_kernel<<<M, GATE_THREADS, 0, cuda_stream()>>>(h, y, r, idx, H);
    CUDA_CHECK_LAUNCH("gated_scatter_add_kernel");
}

void cuda_gated_scatter_add_backward(float *dy, float *dr, const float *dh, const float *y,
                                     const float *r, const int32_t *idx, int M, int H) {
    if (M == 0)
        return;
    gated_scatter_add_backward_kernel<<<M, GATE_THREADS, 0, cuda_stream()>>>(dy, dr, dh, y, r, idx,
                                                                             H);
    CUDA_CHECK_LAUNCH("gated_scatter_add_backward_kernel");
}
