// Losses on the GPU: cross entropy over [N, V] logits and the router's route loss. Each
// forward writes one value per row (or sequence) to the workspace and adds their scaled sum
// with one block in a fixed order, so the loss is deterministic.
#include "kernels/cuda/cuda_common.cuh"

#define CE_THREADS    512
#define ROUTE_THREADS 256

// One block per row: ce[n] = logsumexp(logits[n]) - logits[n, target] (0 when ignored).
// logits [N, V]; targets [N]; ce [N]
__global__ void cross_entropy_forward_kernel(float *ce, const float *logits, const int32_t *targets,
                                             int V) {
    size_t n = blockIdx.x;
    int32_t target = targets[n];
    // A kernel cannot stop the job the way the cpu backend's check does: a target outside
    // [0, V) is read as ignored rather than read out of bounds (the data sources reject
    // tokens >= V before they get here).
    if (target < 0 || target >= V) { // the whole block takes this branch
        if (threadIdx.x == 0)
            ce[n] = 0.0f;
        return;
    }
    const float *row = logits + n * V;
    float row_max = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        row_max = fmaxf(row_max, row[j]);
    row_max = block_max(row_max);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        sum += expf(row[j] - row_max);
    sum = block_sum(sum);
    if (threadIdx.x == 0)
        ce[n] = logf(sum) + row_max - row[target];
}

// dlogits[n] = scale * (softmax(logits[n]) - onehot(target)), 0 on ignored rows. In place is
// fine: every element is read for the reductions before any is written, and then read and
// written by the same thread.
__global__ void cross_entropy_backward_kernel(float *dlogits, const float *logits,
                                              const int32_t *targets, float scale, int V) {
    size_t n = blockIdx.x;
    int32_t target = targets[n];
    const float *row = logits + n * V;
    float *drow = dlogits + n * V;
    if (target < 0 || target >= V) { // as in the forward
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            drow[j] = 0.0f;
        return;
    }
    float row_max = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        row_max = fmaxf(row_max, row[j]);
    row_max = block_max(row_max);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        sum += expf(row[j] - row_max);
    sum = block_sum(sum);
    float inv_sum = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float prob = expf(row[j] - row_max) * inv_sum;
        drow[j] = scale * (prob - (j == target ? 1.0f : 0.0f));
    }
}

// selected [B*T] = 1 at every flat index of sel [B*n_sel] (zeroed beforehand)
__global__ void mark_selected_kernel(float *selected, const int32_t *sel, int count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count)
        selected[sel[i]] = 1.0f;
}

__device__ inline float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

// One block per sequence: partial[b] = token_scale * sum_t BCEwithLogits(r_t, selected_t)
//                                    + seq_scale * (mean_t sigmoid(r_t) - rho)^2
__global__ void route_loss_forward_kernel(float *partial, const float *r, const float *selected,
                                          float rho, float token_scale, float seq_scale, int T) {
    size_t b = blockIdx.x;
    float bce = 0.0f, gate_sum = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        float x = r[b * T + t], label = selected[b * T + t];
        // max(x, 0) - x y + log(1 + exp(-|x|)): stable for large |x|
        bce += fmaxf(x, 0.0f) - x * label + log1pf(expf(-fabsf(x)));
        gate_sum += sigmoidf(x);
    }
    bce = block_sum(bce);
    gate_sum = block_sum(gate_sum);
    if (threadIdx.x == 0) {
        float excess = gate_sum / T - rho;
        partial[b] = token_scale * bce + seq_scale * excess * excess;
    }
}

// dr[b, t] += token_scale (sigmoid(r) - selected) + seq_scale 2 (mean - rho) g (1 - g) / T
__global__ void route_loss_backward_kernel(float *dr, const float *r, const float *selected,
                                           float rho, float token_scale, float seq_scale, int T) {
    size_t b = blockIdx.x;
    float gate_sum = 0.0f;
    for (int t = threadIdx.x; t < T; t += blockDim.x)
        gate_sum += sigmoidf(r[b * T + t]);
    gate_sum = block_sum(gate_sum);
    float excess = gate_sum / T - rho;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        float gate = sigmoidf(r[b * T + t]);
        dr[b * T + t] += token_scale * (gate - selected[b * T + t]) +
                         seq_scale * 2.0f * excess * gate * (1.0f - gate) / T;
    }
}

void cuda_cross_entropy_forward(float *loss, const float *logits, const int32_t *targets,
                                float scale, int N, int V) {
    if (N == 0)
        return;
    float *ce = (float *)cuda_workspace((size_t)N * sizeof(float)); // [N]
    cross_entropy_forward_kernel<<<N, CE_THREADS, 0, cuda_stream()>>>(ce, logits, targets, V);
    CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
    cuda_add_scaled_sum(loss, ce, N, scale);
}

void cuda_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                 float scale, int N, int V) {
    if (N == 0)
        return;
    cross_entropy_backward_kernel<<<N, CE_THREADS, 0, cuda_stream()>>>(dlogits, logits, targets,
                                                                       scale, V);
    CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

// The 0/1 selection mask [B*T] in the workspace, followed by `extra` more floats.
static float *selection_mask(const int32_t *sel, int B, int T, int n_sel, size_t extra) {
    size_t cells = (size_t)B * T;
    float *selected = (float *)cuda_workspace((cells + extra) * sizeof(float));
    CUDA_CHECK(cudaMemsetAsync(selected, 0, cells * sizeof(float), cuda_stream()));
    int count = B * n_sel;
    if (count > 0) {
        mark_selected_kernel<<<(count + 255) / 256, 256, 0, cuda_stream()>>>(selected, sel, count);
        CUDA_CHECK_LAUNCH("mark_selected_kernel");
    }
    return selected;
}

void cuda_route_loss_forward(float *loss, const float *r, const int32_t *sel, float rho,
                             float token_scale, float seq_scale, int B, int T, int n_sel) {
    if (B == 0 || T == 0)
        return;
    float *selected = selection_mask(sel, B, T, n_sel, (size_t)B);
    float *partial = selected + (size_t)B * T; // [B]
    route_loss_forward_kernel<<<B, ROUTE_THREADS, 0, cuda_stream()>>>(partial, r, selected, rho,
                                                                      token_scale, seq_scale, T);
    CUDA_CHECK_LAUNCH("route_loss_forward_kernel");
    cuda_add_scaled_sum(loss, partial, B, 1.0f);
}

void cuda_route_loss_backward(float *dr, const float *r, const int32_t *sel, float rho,
                              float token_scale, float seq_scale, int B, int T, int n_sel) {
    if (B == 0 || T == 0)
        return;
    float *selected = selection_mask(sel, B, T, n_sel, 0);
    route_loss_backward_kernel<<<B, ROUTE_THREADS, 0, cuda_stream()>>>(dr, r, selected, rho,
                                                                       token_scale, seq_scale, T);
    CUDA_CHECK_LAUNCH("route_loss_backward_kernel");
}
