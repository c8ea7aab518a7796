// Linear layer y = x . w^T + b with w in the [out, in] layout, and its backward.
// Dot products are accumulated in double; every parallel loop owns its output rows, so the
// results do not depend on the number of threads.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

#include <stdlib.h>

void cpu_linear_forward(float *out, const float *x, const float *w, const float *b, int N, int I,
                        int O) {
#pragma omp parallel for if (cpu_worth_threads((double)N * I * O))
    for (int n = 0; n < N; n++) {
        const float *xrow = x + (size_t)n * I; // [I]
        float *orow = out + (size_t)n * O;     // [O]
        for (int o = 0; o < O; o++) {
            const float *wrow = w + (size_t)o * I; // [I]
            double acc = b ? (double)b[o] : 0.0;
            for (int i = 0; i < I; i++)
                acc += (double)xrow[i] * wrow[i];
            orow[o] = (float)acc;
        }
    }
}

// dx[n, i] += sum_o dout[n, o] w[o, i]    (parallel over tokens n)
static void linear_backward_dx(float *dx, const float *dout, const float *w, int N, int I, int O) {
#pragma omp parallel if (cpu_worth_threads((double)N * I * O))
    {
        double *acc = hs_malloc((size_t)I * sizeof(double)); // [I] this thread's row of dx
#pragma omp for
        for (int n = 0; n < N; n++) {
            const float *drow = dout + (size_t)n * O; // [O]
            for (int i = 0; i < I; i++)
                acc[i] = 0.0;
            for (int o = 0; o < O; o++) {
                double d = drow[o];
                const float *wrow = w + (size_t)o * I; // [I]
                for (int i = 0; i < I; i++)
                    acc[i] += d * wrow[i];
            }
            float *dxrow = dx + (size_t)n * I;
            for (int i = 0; i < I; i++)
                dxrow[i] += (float)acc[i];
        }
        free(acc);
    }
}

// dw[o, i] += sum_n dout[n, o] x[n, i]; db[o] += sum_n dout[n, o]
// Parallel over output rows o: a token loop would need every thread to write every row.
static void linear_backward_dw(float *dw, float *db, const float *dout, const float *x, int N,
                               int I, int O) {
#pragma omp parallel if (cpu_worth_threads((double)N * I * O))
    {
        double *acc = hs_malloc((size_t)I * sizeof(double)); // [I] this thread's row of dw
#pragma omp for
        for (int o = 0; o < O; o++) {
            double bias_acc = 0.0;
            for (int i = 0; i < I; i++)
                acc[i] = 0.0;
            for (int n = 0; n < N; n++) {
                double d = dout[(size_t)n * O + o];
                bias_acc += d;
                if (d == 0.0)
                    continue; // common for unselected tokens; skipping changes nothing
                const float *xrow = x + (size_t)n * I; // [I]
                for (int i = 0; i < I; i++)
                    acc[i] += d * xrow[i];
            }
            float *dwrow = dw + (size_t)o * I;
            for (int i = 0; i < I; i++)
                dwrow[i] += (float)acc[i];
            if (db)
                db[o] += (float)bias_acc;
        }
        free(acc);
    }
}

void cpu_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                         const float *w, int N, int I, int O) {
    if (dx)
        linear_backward_dx(dx, dout, w, N, I, O);
    linear_backward_dw(dw, db, dout, x, N, I, O);
}

// The oracle widens the copy and runs the fp32 backward: the definition of the op.
void cpu_linear_backward_bf16_input(float *dx, float *dw, float *db, const float *dout,
                                    const uint16_t *x16, const float *w, int N, int I, int O) {
    float *x = hs_malloc((size_t)N * I * sizeof(float)); // [N, I]
    cpu_from_bf16(x, x16, (size_t)N * I);
    cpu_linear_backward(dx, dw, db, dout, x, w, N, I, O);
    free(x);
}

void cpu_linear_forward_keep_bf16(float *out, uint16_t *x16, const float *x, const float *w,
                                  const float *b, int N, int I, int O) {
    cpu_linear_forward(out, x, w, b, N, I, O);
    cpu_to_bf16(x16, x, (size_t)N * I);
}
