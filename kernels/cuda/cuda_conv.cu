// Causal depthwise convolution over time, per sequence and channel:
// out[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-Kc+1+j, c], with x = 0 before t = 0.
#include "kernels/cuda/cuda_common.cuh"

static const int CONV_THREADS = 256;

// out, x [B, T, H]; w [H, Kc]; bias [H]. One thread per output element.
__global__ void conv_forward_kernel(float *out, const float *x, const float *w, const float *bias,
                                    int B, int T, int H, int Kc) {
    size_t total = (size_t)B * T * H;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % H);
        size_t bt = i / H;
        int t = (int)(bt % T);
        size_t seq_start = bt - t; // row of (b, 0)
        float acc = bias[c];
        for (int j = 0; j < Kc; j++) {
            int s = t - Kc + 1 + j;
            if (s >= 0)
                acc += w[(size_t)c * Kc + j] * x[(seq_start + s) * H + c];
        }
        out[i] = acc;
    }
}

// dx[b,s,c] += sum_j w[c,j] dout[b, s+Kc-1-j, c]   (the taps that read x[b,s,c])
__global__ void conv_backward_dx_kernel(float *dx, const float *dout, const float *w, int B, int T,
                                        int H, int Kc) {
    size_t total = (size_t)B * T * H;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % H);
        size_t bs = i / H;
        int s = (int)(bs % T);
        size_t seq_start = bs - s;
        float acc = 0.0f;
        for (int j = 0; j < Kc; j++) {
            int t = s + Kc - 1 - j;
            if (t < T)
                acc += w[(size_t)c * Kc + j] * dout[(seq_start + t) * H + c];
        }
        dx[i] += acc;
    }
}

void cuda_conv_forward(float *out, const float *x, const float *w, const float *bias, int B, int T,
                       int H, int Kc) {
    size_t total = (size_t)B * T * H;
    if (total == 0)
        return;
    conv_forward_kernel<<<cuda_grid(total, CONV_THREADS), CONV_THREADS, 0, cuda_stream()>>>(
        out, x, w, bias, B, T, H, Kc);
    CUDA_CHECK_LAUNCH("conv_forward_kernel");
}

void cuda_conv_backward(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                        const float *w, int B, int T, int H, int Kc) {
    size_t total = (size_t)B * T * H;
    if (total == 0)
        return;
    if (dx) {
        conv_backward_dx_kernel<<<cuda_grid(total, CONV_THREADS), CONV_THREADS, 0, cuda_stream()>>>(
            dx, dout, w, B, T, H, Kc);
        CUDA_CHECK_LAUNCH("conv_backward_dx_kernel");
    }
    // dw[c,j] += sum_{b,t} dout[b,t,c] x[b, t-Kc+1+j, c]: tap j pairs each row of dout with
    // the row of x lag = Kc-1-j steps earlier in the same sequence, so this is a column sum
    // of lagged products over the B*T rows, lags 0 .. Kc-1 in one launch; lag l lands in
    // dw[c, Kc-1-l], i.e. at (dw + Kc-1)[c * Kc - l].
    if (Kc > 0)
        cuda_lagged_column_sums(dw + (Kc - 1), Kc, -1, dout, x, NULL, B * T, H, T, Kc);
    cuda_column_sum(dbias, dout, NULL, NULL, B * T, H);
}
