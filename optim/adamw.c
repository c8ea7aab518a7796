// AdamW with global-norm clipping and skip-on-non-finite (see adamw.h).
#include "optim/adamw.h"

#include <math.h>

#include "kernels/error.h"

OptimConfig optim_config_default(void) {
    OptimConfig c = {
        .beta1 = 0.9f,
        .beta2 = 0.95f,
        .eps = 1e-8f,
        .weight_decay = 0.1f,
        .grad_clip = 1.0f,
        .slot_value_lr_mult = 1.0f,
    };
    return c;
}

void optimizer_init(Optimizer *opt, const OptimConfig *cfg, const Ops *ops,
                    const ParamLayout *layout) {
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        hs_fatal("adamw: beta1=%g and beta2=%g must lie in [0, 1)", (double)cfg->beta1,
                 (double)cfg->beta2);
    if (!(cfg->eps > 0.0f))
        hs_fatal("adamw: eps=%g must be > 0", (double)cfg->eps);
    if (!(cfg->weight_decay >= 0.0f))
        hs_fatal("adamw: weight_decay=%g must be >= 0", (double)cfg->weight_decay);
    if (!(cfg->slot_value_lr_mult >= 0.0f))
        hs_fatal("adamw: slot_value_lr_mult=%g must be >= 0", (double)cfg->slot_value_lr_mult);
    opt->cfg = *cfg;
    opt->ops = ops;
    opt->layout = layout;
    opt->m = ops->alloc(layout->n_local * sizeof(float)); // alloc zero-fills
    opt->v = ops->alloc(layout->n_local * sizeof(float));
    opt->sq_sums = ops->alloc(2 * sizeof(float));
    opt->t = 0;
}

void optimizer_free(Optimizer *opt) {
    opt->ops->free(opt->m);
    opt->ops->free(opt->v);
    opt->ops->free(opt->sq_sums);
    opt->m = opt->v = opt->sq_sums = NULL;
}

void grads_allreduce(Comm *comm, float *grads, size_t n_dense) {
    if (!comm || comm_world(comm) == 1 || n_dense == 0)
        return;
    comm_allreduce_sum(comm, grads, n_dense);
}

double optimizer_grad_norm(Optimizer *opt, const float *grads, Comm *comm) {
    const Ops *ops = opt->ops;
    const ParamLayout *layout = opt->layout;
    ops->zero(opt->sq_sums, 2 * sizeof(float));
    ops->sum_squares(opt->sq_sums, grads, layout->n_dense);
    ops->sum_squares(opt->sq_sums + 1, grads + layout->n_dense, layout->n_local - layout->n_dense);
    float host[2];
    ops->copy_to_host(host, opt->sq_sums, sizeof(host));
    // The dense span is the same on every rank; only the shards differ, so only they are
    // summed across ranks.
    double shard_sq = host[1];
    if (comm)
        comm_host_sum_f64(comm, &shard_sq, 1);
    return sqrt((double)host[0] + shard_sq);
}

// The learning-rate multiplier and weight decay of one tensor's group.
static void group_settings(const OptimConfig *cfg, ParamGroup group, float *lr_mult, float *wd) {
    *lr_mult = group == GROUP_SLOT_VALUES ? cfg->slot_value_lr_mult : 1.0f;
    *wd = group == GROUP_DECAY ? cfg->weight_decay : 0.0f;
}

OptimStepResult optimizer_step(Optimizer *opt, float *params, const float *grads, Comm *comm,
                               float lr) {
    OptimStepResult result = {0};
    result.grad_norm = optimizer_grad_norm(opt, grads, comm);
    // Every rank sees the same norm, so every rank makes the same choice here.
    if (!isfinite(result.grad_norm)) {
        result.skipped = 1;
        result.grad_scale = 0.0f;
        return result;
    }
    const OptimConfig *cfg = &opt->cfg;
    result.grad_scale = 1.0f;
    if (cfg->grad_clip > 0.0f && result.grad_norm > cfg->grad_clip)
        result.grad_scale = (float)(cfg->grad_clip / result.grad_norm);

    opt->t++;
    // One update per run of adjacent tensors with the same settings (AdamW is elementwise,
    // so where the calls split changes no value): the slot keys and values of every layer,
    // say, are one call rather than 16, and each GPU launch gets more work.
    const ParamLayout *layout = opt->layout;
    int i = 0;
    while (i < layout->n_tensors) {
        const ParamTensor *first = &layout->tensors[i++];
        if (first->numel == 0)
            continue;
        float lr_mult, wd;
        group_settings(cfg, first->group, &lr_mult, &wd);
        size_t end = first->offset + first->numel;
        for (; i < layout->n_tensors; i++) {
            const ParamTensor *next = &layout->tensors[i];
            float next_lr_mult, next_wd;
            group_settings(cfg, next->group, &next_lr_mult, &next_wd);
            if (next->numel != 0 &&
                (next->offset != end || next_lr_mult != lr_mult || next_wd != wd))
                break;
            end += next->numel;
        }
        size_t at = first->offset;
        opt->ops->adamw_update(params + at, grads + at, opt->m + at, opt->v + at, end - at,
                               lr * lr_mult, cfg->beta1, cfg->beta2, cfg->eps, wd,
                               result.grad_scale, opt->t);
    }
    return result;
}
