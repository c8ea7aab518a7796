// Optimizer kernels: the sum of squares for the global gradient norm, and one AdamW step
// on fp32 master weights.
#include "kernels/cpu/cpu_ops.h"

#include <math.h>

void cpu_sum_squares(float *out, const float *x, size_t n) {
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += (double)x[i] * x[i];
    out[0] = (float)(out[0] + acc);
}

// Decoupled weight decay (the decay term uses the parameter before this step).
void cpu_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                      int t) {
    const double bias1 = 1.0 - pow((double)beta1, t); // bias corrections of step t (from 1)
    const double bias2 = 1.0 - pow((double)beta2, t);
#pragma omp parallel for if (cpu_worth_threads((double)n))
    for (long i = 0; i < (long)n; i++) {
        double g = (double)grad[i] * grad_scale;
        double mi = beta1 * (double)m[i] + (1.0 - beta1) * g;
        double vi = beta2 * (double)v[i] + (1.0 - beta2) * g * g;
        m[i] = (float)mi;
        v[i] = (float)vi;
        double update = (mi / bias1) / (sqrt(vi / bias2) + eps) + weight_decay * (double)param[i];
        param[i] = (float)(param[i] - lr * update);
    }
}
