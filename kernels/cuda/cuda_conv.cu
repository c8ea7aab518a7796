// Causal depthwise convolution over time, per sequence and channel:
// out[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-Kc+1+j, c], with x = 0 before t = 0.
#include "kernels/cuda/cuda_common.cuh"

static const int CONV_THREADS = 256;
static const int CONV_COLS = 32, CONV_ROW_LANES = 8;

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

// dw[c,j] += sum_{b,t} dout[b,t,c] x[b, t-Kc+1+j, c]. Block: 32 channels x 8 row lanes for
// one tap j (blockIdx.y); the lanes are summed in a fixed order (deterministic).
__global__ void conv_backward_dw_kernel(float *dw, const float *dout, const float *x, int B, int T,
                                        int H, int Kc) {
    __shared__ float partial[CONV_ROW_LANES][CONV_COLS];
    int c = blockIdx.x * CONV_COLS + threadIdx.x;
    int j = blockIdx.y;
    int shift = Kc - 1 - j; // x lags dout by this many steps
    float acc = 0.0f;
    if (c < H) {
        for (int bt = threadIdx.y; bt < B * T; bt += CONV_ROW_LANES) {
            int t = bt % T;
            if (t - shift >= 0)
                acc += dout[(size_t)bt * H + c] * x[(size_t)(bt - shift) * H + c];
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < H) {
        float total = 0.0f;
        for (int lane = 0; lane < CONV_ROW_LANES; lane++)
            total += partial[lane][threadIdx.x];
        dw[(size_t)c * Kc + j] += total;
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
    dim3 block(CONV_COLS, CONV_ROW_LANES);
    dim3 grid((H + CONV_COLS - 1) / CONV_COLS, Kc);
    conv_backward_dw_kernel<<<grid, block, 0, cuda_stream()>>>(dw, dout, x, B, T, H, Kc);
    CUDA_CHECK_LAUNCH("conv_backward_dw_kernel");
    cuda_column_sum(dbias, dout, NULL, NULL, B * T, H);
}
