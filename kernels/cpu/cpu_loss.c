// Losses: next-token cross-entropy (with ignored targets; also fused, forward and backward
// in one op) and the router's route loss
// (BCE towards the selection plus the squared gap of the mean gate to the capacity rho).
// Each forward adds scale * sum into loss[0]; sums run serially in double.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <math.h>
#include <stdlib.h>

static void check_target(const char *op, int32_t target, int n, int V) {
    if (target >= V)
        hs_fatal("%s: targets[%d] = %d is not below the vocabulary size %d", op, n, target, V);
}

// max and sum_v exp(logit_v - max) of one row
static void row_softmax_stats(const float *row, int V, double *max_out, double *sum_out) {
    double max_l = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > max_l)
            max_l = row[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++)
        sum += exp((double)row[v] - max_l);
    *max_out = max_l;
    *sum_out = sum;
}

void cpu_cross_entropy_forward(float *loss, const float *logits, const int32_t *targets,
                               float scale, int N, int V) {
    double *ce_of = hs_calloc((size_t)N, sizeof(double)); // [N], 0 on ignored rows
#pragma omp parallel for if (cpu_worth_threads((double)N * V))
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0)
            continue;
        check_target("cross_entropy_forward", targets[n], n, V);
        const float *row = logits + (size_t)n * V; // [V]
        double max_l, sum;
        row_softmax_stats(row, V, &max_l, &sum);
        ce_of[n] = max_l + log(sum) - row[targets[n]];
    }
    double total = 0.0;
    for (int n = 0; n < N; n++)
        total += ce_of[n];
    free(ce_of);
    loss[0] = (float)(loss[0] + scale * total);
}

// Every row's statistics are read before that row is written, so dlogits may alias logits.
void cpu_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                float scale, int N, int V) {
#pragma omp parallel for if (cpu_worth_threads((double)N * V))
    for (int n = 0; n < N; n++) {
        const float *row = logits + (size_t)n * V; // [V]
        float *drow = dlogits + (size_t)n * V;     // [V]
        int32_t target = targets[n];
        if (target < 0) {
            for (int v = 0; v < V; v++)
                drow[v] = 0.0f;
            continue;
        }
        check_target("cross_entropy_backward", target, n, V);
        double max_l, sum;
        row_softmax_stats(row, V, &max_l, &sum);
        for (int v = 0; v < V; v++) {
            double prob = exp((double)row[v] - max_l) / sum;
            drow[v] = (float)(scale * (prob - (v == target ? 1.0 : 0.0)));
        }
    }
}

// Index of the row's largest logit, ties to the lower index (a NaN is never larger).
static int32_t row_argmax(const float *row, int V) {
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (row[v] > row[best])
            best = v;
    return best;
}

// The forward and backward above in one pass per row: the same double statistics, so the
// loss and dlogits equal those of the two separate ops. A row is read whole (for its
// statistics and argmax) before it is written, so dlogits may alias logits.
void cpu_cross_entropy_fused(float *loss, float *dlogits, int32_t *argmax, const float *logits,
                             const int32_t *targets, float scale, int N, int V) {
    double *ce_of = hs_calloc((size_t)N, sizeof(double)); // [N], 0 on ignored rows
#pragma omp parallel for if (cpu_worth_threads((double)N * V))
    for (int n = 0; n < N; n++) {
        const float *row = logits + (size_t)n * V; // [V]
        int32_t target = targets[n];
        if (argmax)
            argmax[n] = row_argmax(row, V);
        if (target < 0) {
            if (dlogits)
                for (int v = 0; v < V; v++)
                    dlogits[(size_t)n * V + v] = 0.0f;
            continue;
        }
        check_target("cross_entropy_fused", target, n, V);
        double max_l, sum;
        row_softmax_stats(row, V, &max_l, &sum);
        ce_of[n] = max_l + log(sum) - row[target];
        if (dlogits) {
            float *drow = dlogits + (size_t)n * V; // [V]
            for (int v = 0; v < V; v++) {
                double prob = exp((double)row[v] - max_l) / sum;
                drow[v] = (float)(scale * (prob - (v == target ? 1.0 : 0.0)));
            }
        }
    }
    if (loss) {
        double total = 0.0;
        for (int n = 0; n < N; n++)
            total += ce_of[n];
        loss[0] = (float)(loss[0] + scale * total);
    }
    free(ce_of);
}

static double sigmoid(double x) {
    return 1.0 / (1.0 + exp(-x));
}

// BCEWithLogits(r, y) = max(r, 0) - r y + log(1 + exp(-|r|)), stable for any r.
static double bce_with_logits(double r, double y) {
    return fmax(r, 0.0) - r * y + log1p(exp(-fabs(r)));
}

// selected[t] = 1 for the tokens named in sel (flat indices b*T + t), 0 elsewhere.
static unsigned char *selection_flags(const int32_t *sel, int B, int T, int n_sel) {
    unsigned char *selected = hs_calloc((size_t)B * T, 1); // [B*T]
    for (int j = 0; j < B * n_sel; j++) {
        if (sel[j] < 0 || sel[j] >= B * T)
            hs_fatal("route_loss: sel[%d] = %d outside [0, B*T = %d)", j, sel[j], B * T);
        selected[sel[j]] = 1;
    }
    return selected;
}

void cpu_route_loss_forward(float *loss, const float *r, const int32_t *sel, float rho,
                            float token_scale, float seq_scale, int B, int T, int n_sel) {
    unsigned char *selected = selection_flags(sel, B, T, n_sel);
    double bce_sum = 0.0, gap_sum = 0.0;
    for (int b = 0; b < B; b++) {
        double gate_sum = 0.0;
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)b * T + t;
            bce_sum += bce_with_logits(r[n], selected[n]);
            gate_sum += sigmoid(r[n]);
        }
        double gap = gate_sum / T - rho;
        gap_sum += gap * gap;
    }
    free(selected);
    loss[0] = (float)(loss[0] + (double)token_scale * bce_sum + (double)seq_scale * gap_sum);
}

// d/dr_t: token_scale (sigmoid(r_t) - y_t) + seq_scale * 2 (mean - rho) sigmoid'(r_t) / T
void cpu_route_loss_backward(float *dr, const float *r, const int32_t *sel, float rho,
                             float token_scale, float seq_scale, int B, int T, int n_sel) {
    unsigned char *selected = selection_flags(sel, B, T, n_sel);
    for (int b = 0; b < B; b++) {
        const float *rb = r + (size_t)b * T; // [T]
        double gate_sum = 0.0;
        for (int t = 0; t < T; t++)
            gate_sum += sigmoid(rb[t]);
        double gap = gate_sum / T - rho;
        for (int t = 0; t < T; t++) {
            double g = sigmoid(rb[t]);
            double d_bce = g - selected[(size_t)b * T + t];
            double d_gap = 2.0 * gap * g * (1.0 - g) / T;
            dr[(size_t)b * T + t] += (float)(token_scale * d_bce + seq_scale * d_gap);
        }
    }
    free(selected);
}
