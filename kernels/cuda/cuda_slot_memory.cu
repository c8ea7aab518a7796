// Slot memory read-out on the GPU: softmax weights over a token's K chosen slots, the
// weighted sum of their value rows added to the residual, the routing-entropy loss, and the
// backwards of the read-out and of the scores. One block per token; K is small, so every
// thread computes the K weights itself (in double, as the cpu oracle).
#include "kernels/cuda/cuda_common.cuh"

#define SLOT_READ_THREADS 128
#define SLOT_READ_MAX_K   CUDA_MAX_TOP_K

// w log w with the limit 0 at w = 0 (padding slots of score -inf get w = 0).
__device__ inline double w_log_w(double w) {
    return w > 0.0 ? w * log(w) : 0.0;
}

// y, h [N, H]; w [N, K]; top_s [N, K]; vrows [N, K, H]; entropy [N] per-token entropies
__global__ void slot_read_forward_kernel(float *y, float *w, float *entropy, const float *h,
                                         const float *top_s, const float *vrows, int K, int H) {
    size_t n = blockIdx.x;
    const float *s = top_s + n * K;
    float weights[SLOT_READ_MAX_K];
    double max_s = s[0];
    for (int k = 1; k < K; k++)
        max_s = fmax(max_s, (double)s[k]);
    double sum = 0.0;
    for (int k = 0; k < K; k++)
        sum += exp((double)s[k] - max_s);
    double token_entropy = 0.0;
    for (int k = 0; k < K; k++) {
        double wk = exp((double)s[k] - max_s) / sum;
        weights[k] = (float)wk;
        token_entropy -= w_log_w(wk);
    }
    if (threadIdx.x == 0) {
        entropy[n] = (float)token_entropy;
        for (int k = 0; k < K; k++)
            w[n * K + k] = weights[k];
    }
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float acc = h[n * H + j];
        for (int k = 0; k < K; k++)
            acc += weights[k] * vrows[(n * K + k) * H + j];
        y[n * H + j] = acc;
    }
}

// y = h + sum_k w_k v_k, E = -sum_k w_k log w_k, w = softmax(s):
//   dh += dy;  dv_k = w_k dy;  dw_k = dy . v_k;  ds_k = w_k (dw_k - sum_j w_j dw_j)
//   plus the entropy part ds_k = -scale w_k (log w_k + E).
__global__ void slot_read_backward_kernel(float *dh, float *ds, float *dvrows, const float *dy,
                                          const float *w, const float *vrows, float scale, int K,
                                          int H) {
    __shared__ float dw[SLOT_READ_MAX_K];
    size_t n = blockIdx.x;
    const float *dy_row = dy + n * H;
    const float *w_row = w + n * K;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        dh[n * H + j] += dy_row[j];
    for (int k = 0; k < K; k++) {
        const float *v_row = vrows + (n * K + k) * H;
        float *dv_row = dvrows + (n * K + k) * H;
        float dot = 0.0f;
        for (int j = threadIdx.x; j < H; j += blockDim.x) {
            dot += dy_row[j] * v_row[j];
            dv_row[j] = w_row[k] * dy_row[j];
        }
        dot = block_sum(dot);
        if (threadIdx.x == 0)
            dw[k] = dot;
    }
    __syncthreads();
    if (threadIdx.x != 0)
        return;
    double dw_dot_w = 0.0, entropy = 0.0;
    for (int k = 0; k < K; k++) {
        dw_dot_w += (double)w_row[k] * dw[k];
        entropy -= w_log_w(w_row[k]);
    }
    for (int k = 0; k < K; k++) {
        double wk = w_row[k];
        double from_read = wk * (dw[k] - dw_dot_w);
        double from_entropy = wk > 0.0 ? -(double)scale * wk * (log(wk) + entropy) : 0.0;
        ds[n * K + k] = (float)(from_read + from_entropy);
    }
}

// s_tk = p_t . krows[t,k] / sqrt(R): one thread per (t, j):
//   dp[t, j] += sum_k ds_tk krows[t,k,j] / sqrt(R);  dkrows[t,k,j] = ds_tk p[t,j] / sqrt(R)
__global__ void slot_score_backward_kernel(float *dp, float *dkrows, const float *ds,
                                           const float *p, const float *krows, int N, int K, int R,
                                           float inv_sqrt_r) {
    size_t total = (size_t)N * R;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / R;
        int j = (int)(i % R);
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            float d = ds[n * K + k];
            acc += d * krows[(n * K + k) * R + j];
            dkrows[(n * K + k) * R + j] = d * inv_sqrt_r * p[i];
        }
        dp[i] += acc * inv_sqrt_r;
    }
}

static void check_read_k(const char *op, int K) {
    if (K < 1 || K > SLOT_READ_MAX_K)
        hs_fatal_at(__FILE__, __LINE__, "%s: K = %d outside [1, %d] supported by the cuda kernels",
                    op, K, SLOT_READ_MAX_K);
}

void cuda_slot_read_forward(float *y, float *w, float *loss, const float *h, const float *top_s,
                            const float *vrows, float scale, int N, int K, int H) {
    check_read_k("slot_read_forward", K);
    if (N == 0)
        return;
    float *entropy = (float *)cuda_workspace((size_t)N * sizeof(float)); // [N]
    slot_read_forward_kernel<<<N, SLOT_READ_THREADS, 0, cuda_stream()>>>(y, w, entropy, h, top_s,
                                                                         vrows, K, H);
    CUDA_CHECK_LAUNCH("slot_read_forward_kernel");
    cuda_add_scaled_sum(loss, entropy, N, scale);
}

void cuda_slot_read_backward(float *dh, float *ds, float *dvrows, const float *dy, const float *w,
                             const float *vrows, float scale, int N, int K, int H) {
    check_read_k("slot_read_backward", K);
    if (N == 0)
        return;
    slot_read_backward_kernel<<<N, SLOT_READ_THREADS, 0, cuda_stream()>>>(dh, ds, dvrows, dy, w,
                                                                          vrows, scale, K, H);
    CUDA_CHECK_LAUNCH("slot_read_backward_kernel");
}

void cuda_slot_score_backward(float *dp, float *dkrows, const float *ds, const float *p,
                              const float *krows, int N, int K, int R) {
    size_t total = (size_t)N * R;
    if (total == 0)
        return;
    const int threads = 256;
    slot_score_backward_kernel<<<cuda_grid(total, threads), threads, 0, cuda_stream()>>>(
        dp, dkrows, ds, p, krows, N, K, R, (float)(1.0 / sqrt((double)R)));
    CUDA_CHECK_LAUNCH("slot_score_backward_kernel");
}
