// AdamW on fp32 master weights with global gradient-norm clipping and skip-on-non-finite.
//
// The parameters, gradients and both moments are flat buffers of layout->n_local floats on
// the backend (model/params.h): the replicated dense span [0, n_dense) first, then this
// rank's rows of the slot tables. Each rank updates exactly what it holds.
#pragma once
#include <stddef.h>

#include "dist/comm.h"
#include "kernels/ops.h"
#include "model/params.h"

typedef struct OptimConfig {
    float beta1, beta2, eps;
    float weight_decay;       // applied to GROUP_DECAY tensors only
    float grad_clip;          // clip the global gradient norm to this; <= 0: no clipping
    float slot_value_lr_mult; // learning-rate multiplier of the slot values (GROUP_SLOT_VALUES)
} OptimConfig;

// beta1 0.9, beta2 0.95, eps 1e-8, weight_decay 0.1, grad_clip 1.0, slot_value_lr_mult 1.0.
OptimConfig optim_config_default(void);

typedef struct Optimizer {
    OptimConfig cfg;
    const Ops *ops;
    const ParamLayout *layout; // borrowed: must outlive the optimizer
    float *m;                  // [n_local] first moments, backend, zero at start
    float *v;                  // [n_local] second moments, backend, zero at start
    int t;          // steps taken (AdamW's bias-correction step of the next update is t + 1)
    float *sq_sums; // backend [2]: sum of squares of the dense span and of the shard span
} Optimizer;

// What one optimizer_step did.
typedef struct OptimStepResult {
    int skipped;      // 1: the gradient norm was not finite; nothing was changed
    double grad_norm; // global norm before clipping (inf/nan when skipped)
    float grad_scale; // min(1, grad_clip / grad_norm): the factor the update used
} OptimStepResult;

void optimizer_init(Optimizer *opt, const OptimConfig *cfg, const Ops *ops,
                    const ParamLayout *layout);
void optimizer_free(Optimizer *opt);

// The global gradient norm: the dense span (already all-reduced, identical on every rank)
// plus every rank's shard spans. comm may be NULL (a single rank). Same value on all ranks.
double optimizer_grad_norm(Optimizer *opt, const float *grads, Comm *comm);

// One AdamW step at learning rate lr (slot values: lr * slot_value_lr_mult). grads must hold
// the global gradient (dense span all-reduced, see grads_allreduce). When the global norm
// is not finite, every rank skips the step alike and params, m, v and t stay untouched.
OptimStepResult optimizer_step(Optimizer *opt, float *params, const float *grads, Comm *comm,
                               float lr);

// Data-parallel gradient sync: SUM over ranks of the dense span grads [0, n_dense). The loss
// of every rank is already normalised by the GLOBAL token count, so the sum over ranks is the
// global gradient (no division by the world size). comm may be NULL (nothing to do).
void grads_allreduce(Comm *comm, float *grads, size_t n_dense);
