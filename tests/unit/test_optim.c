// optim/: the learning-rate schedule and AdamW through optimizer_step on the cpu backend,
// against values computed by hand in double precision.
#include <math.h>
#include <string.h>

#include "kernels/ops.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "tests/testutil.h"

// ---- schedule ------------------------------------------------------------------------------

START_TEST(test_schedule_key_steps) {
    LrSchedule s = {.lr = 1e-3f, .warmup_steps = 10, .total_steps = 110, .min_lr_frac = 0.1f};
    char err[128];
    ck_assert_int_eq(lr_schedule_validate(&s, err, sizeof(err)), 0);
    // Warmup: (step + 1) / warmup of the peak.
    ck_assert_float_eq_tol(lr_schedule_at(&s, 0), 1e-4f, 1e-10f);
    ck_assert_float_eq_tol(lr_schedule_at(&s, 4), 5e-4f, 1e-10f);
    ck_assert_float_eq_tol(lr_schedule_at(&s, 9), 1e-3f, 1e-10f);
    // Cosine from the peak at step 10 to the floor at step 110, halfway at step 60.
    ck_assert_float_eq_tol(lr_schedule_at(&s, 10), 1e-3f, 1e-10f);
    ck_assert_float_eq_tol(lr_schedule_at(&s, 60), 0.55e-3f, 1e-9f);
    double quarter = 1e-4 + 0.9e-3 * 0.5 * (1.0 + cos(3.14159265358979 * 0.25));
    ck_assert_float_eq_tol(lr_schedule_at(&s, 35), (float)quarter, 1e-9f);
    ck_assert_float_eq_tol(lr_schedule_at(&s, 110), 1e-4f, 1e-10f);
    ck_assert_float_eq_tol(lr_schedule_at(&s, 5000), 1e-4f, 1e-10f);
    // Monotone non-increasing after the warmup.
    for (int step = 10; step < 120; step++)
        ck_assert(lr_schedule_at(&s, step + 1) <= lr_schedule_at(&s, step));

    LrSchedule no_warmup = {.lr = 2.0f, .warmup_steps = 0, .total_steps = 4, .min_lr_frac = 0.0f};
    ck_assert_float_eq_tol(lr_schedule_at(&no_warmup, 0), 2.0f, 1e-6f);
    ck_assert_float_eq_tol(lr_schedule_at(&no_warmup, 2), 1.0f, 1e-6f);
    ck_assert_float_eq_tol(lr_schedule_at(&no_warmup, 4), 0.0f, 1e-6f);
}
END_TEST

START_TEST(test_schedule_validation) {
    char err[128];
    LrSchedule s = {.lr = 1e-3f, .warmup_steps = 10, .total_steps = 5, .min_lr_frac = 0.1f};
    ck_assert_int_eq(lr_schedule_validate(&s, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "total_steps"));
    s.total_steps = 100;
    s.min_lr_frac = 1.5f;
    ck_assert_int_eq(lr_schedule_validate(&s, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "min_lr_frac"));
    s.min_lr_frac = 0.1f;
    s.warmup_steps = -1;
    ck_assert_int_eq(lr_schedule_validate(&s, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "warmup_steps"));
}
END_TEST

// ---- AdamW -----------------------------------------------------------------------------------

// A small hand-made layout: one tensor of each group. Dense span: decay [6], no-decay [3];
// shard span: slot keys [4], slot values [5].
enum { N_TENSORS = 4, N_LOCAL = 18, N_DENSE = 9 };
static ParamTensor tensors[N_TENSORS];
static ParamLayout layout;

static void build_layout(void) {
    const ParamGroup groups[N_TENSORS] = {GROUP_DECAY, GROUP_NO_DECAY, GROUP_SLOT_KEYS,
                                          GROUP_SLOT_VALUES};
    const size_t sizes[N_TENSORS] = {6, 3, 4, 5};
    size_t offset = 0;
    memset(tensors, 0, sizeof(tensors));
    for (int i = 0; i < N_TENSORS; i++) {
        tensors[i].ndim = 1;
        tensors[i].shape[0] = (int64_t)sizes[i];
        tensors[i].rows = (int64_t)sizes[i];
        tensors[i].offset = offset;
        tensors[i].numel = sizes[i];
        tensors[i].group = groups[i];
        tensors[i].sharded = groups[i] == GROUP_SLOT_KEYS || groups[i] == GROUP_SLOT_VALUES;
        offset += sizes[i];
    }
    layout = (ParamLayout){.tensors = tensors,
                           .n_tensors = N_TENSORS,
                           .n_dense = N_DENSE,
                           .n_local = N_LOCAL,
                           .rank = 0,
                           .world = 1};
}

static int group_of(size_t i) {
    for (int t = 0; t < N_TENSORS; t++)
        if (i >= tensors[t].offset && i < tensors[t].offset + tensors[t].numel)
            return tensors[t].group;
    return -1;
}

// The reference AdamW of one element, in double: returns the new parameter, updates m, v.
static double reference_adamw(double param, double grad, double *m, double *v, double lr,
                              const OptimConfig *c, double wd, double grad_scale, int t) {
    double g = grad * grad_scale;
    *m = c->beta1 * *m + (1.0 - c->beta1) * g;
    *v = c->beta2 * *v + (1.0 - c->beta2) * g * g;
    double mhat = *m / (1.0 - pow(c->beta1, t));
    double vhat = *v / (1.0 - pow(c->beta2, t));
    return param - lr * (mhat / (sqrt(vhat) + c->eps) + wd * param);
}

// Runs `steps` optimizer steps with the given grads each step and compares every element of
// params, m and v with the reference.
static void check_against_reference(const OptimConfig *cfg, int steps, float lr, float grad_mult,
                                    double expect_scale) {
    build_layout();
    const Ops *ops = ops_cpu();
    TestRng rng = test_rng(7);
    float params[N_LOCAL], grads[N_LOCAL];
    test_fill_normal(&rng, params, N_LOCAL, 1.0f);
    test_fill_normal(&rng, grads, N_LOCAL, 0.5f);
    for (int i = 0; i < N_LOCAL; i++)
        grads[i] *= grad_mult;
    double ref_p[N_LOCAL], ref_m[N_LOCAL] = {0}, ref_v[N_LOCAL] = {0};
    for (int i = 0; i < N_LOCAL; i++)
        ref_p[i] = params[i];
    double norm = 0;
    for (int i = 0; i < N_LOCAL; i++)
        norm += (double)grads[i] * grads[i];
    norm = sqrt(norm);
    double scale = cfg->grad_clip > 0 && norm > cfg->grad_clip ? cfg->grad_clip / norm : 1.0;
    ck_assert_double_eq_tol(scale, expect_scale, 1e-6);

    Optimizer opt;
    optimizer_init(&opt, cfg, ops, &layout);
    for (int step = 1; step <= steps; step++) {
        OptimStepResult r = optimizer_step(&opt, params, grads, NULL, lr);
        ck_assert_int_eq(r.skipped, 0);
        ck_assert_double_eq_tol(r.grad_norm, norm, 1e-5 * norm);
        ck_assert_double_eq_tol(r.grad_scale, scale, 1e-6);
        ck_assert_int_eq(opt.t, step);
        for (int i = 0; i < N_LOCAL; i++) {
            int group = group_of((size_t)i);
            double wd = group == GROUP_DECAY ? cfg->weight_decay : 0.0;
            double lr_i = group == GROUP_SLOT_VALUES ? lr * cfg->slot_value_lr_mult : lr;
            ref_p[i] = reference_adamw(ref_p[i], grads[i], &ref_m[i], &ref_v[i], lr_i, cfg, wd,
                                       scale, step);
        }
        for (int i = 0; i < N_LOCAL; i++) {
            ck_assert_msg(fabs(params[i] - ref_p[i]) <= 1e-6 + 1e-5 * fabs(ref_p[i]),
                          "step %d param %d: got %.8g expected %.8g", step, i, params[i], ref_p[i]);
            ck_assert_msg(fabs(opt.m[i] - ref_m[i]) <= 1e-7 + 1e-5 * fabs(ref_m[i]),
                          "step %d m[%d]: got %.8g expected %.8g", step, i, opt.m[i], ref_m[i]);
            ck_assert_msg(fabs(opt.v[i] - ref_v[i]) <= 1e-9 + 1e-5 * fabs(ref_v[i]),
                          "step %d v[%d]: got %.8g expected %.8g", step, i, opt.v[i], ref_v[i]);
        }
    }
    optimizer_free(&opt);
}

START_TEST(test_adamw_matches_hand_computation) {
    OptimConfig cfg = optim_config_default();
    cfg.grad_clip = 0.0f; // no clipping
    cfg.slot_value_lr_mult = 3.0f;
    check_against_reference(&cfg, 3, 1e-2f, 1.0f, 1.0);
}
END_TEST

START_TEST(test_adamw_first_step_is_sign_descent) {
    // Step 1 without decay: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
    build_layout();
    OptimConfig cfg = optim_config_default();
    cfg.weight_decay = 0.0f;
    cfg.grad_clip = 0.0f;
    float params[N_LOCAL] = {0}, grads[N_LOCAL];
    for (int i = 0; i < N_LOCAL; i++)
        grads[i] = (i % 2 ? -1.0f : 1.0f) * (0.5f + (float)i);
    Optimizer opt;
    optimizer_init(&opt, &cfg, ops_cpu(), &layout);
    optimizer_step(&opt, params, grads, NULL, 0.1f);
    for (int i = 0; i < N_LOCAL; i++)
        ck_assert_float_eq_tol(params[i], i % 2 ? 0.1f : -0.1f, 1e-6f);
    optimizer_free(&opt);
}
END_TEST

START_TEST(test_clipping_scales_the_update) {
    OptimConfig cfg = optim_config_default();
    cfg.grad_clip = 0.5f;
    // A large eps makes the update depend on the gradient's size, so the clip shows.
    cfg.eps = 1.0f;
    // Gradients of norm about 0.5 * sqrt(18) * 20 = 42 are clipped to 0.5.
    build_layout();
    float grads[N_LOCAL];
    TestRng rng = test_rng(7);
    float scratch[N_LOCAL];
    test_fill_normal(&rng, scratch, N_LOCAL, 1.0f); // the params draw of the reference run
    test_fill_normal(&rng, grads, N_LOCAL, 0.5f);
    double norm = 0;
    for (int i = 0; i < N_LOCAL; i++)
        norm += (double)grads[i] * 20.0f * grads[i] * 20.0f;
    check_against_reference(&cfg, 2, 1e-2f, 20.0f, 0.5 / sqrt(norm));

    // And the clipped update is smaller than the unclipped one.
    build_layout();
    float p_clip[N_LOCAL] = {0}, p_free[N_LOCAL] = {0};
    for (int i = 0; i < N_LOCAL; i++)
        grads[i] *= 20.0f;
    Optimizer a, b;
    optimizer_init(&a, &cfg, ops_cpu(), &layout);
    OptimConfig no_clip = cfg;
    no_clip.grad_clip = 0.0f;
    optimizer_init(&b, &no_clip, ops_cpu(), &layout);
    OptimStepResult ra = optimizer_step(&a, p_clip, grads, NULL, 1e-2f);
    OptimStepResult rb = optimizer_step(&b, p_free, grads, NULL, 1e-2f);
    ck_assert(ra.grad_scale < 0.1f);
    ck_assert_float_eq(rb.grad_scale, 1.0f);
    for (int i = 0; i < N_LOCAL; i++)
        ck_assert_msg(fabsf(p_clip[i]) < fabsf(p_free[i]), "element %d: clipped %g, free %g", i,
                      p_clip[i], p_free[i]);
    optimizer_free(&a);
    optimizer_free(&b);
}
END_TEST

START_TEST(test_non_finite_gradient_skips_the_step) {
    build_layout();
    OptimConfig cfg = optim_config_default();
    TestRng rng = test_rng(3);
    float params[N_LOCAL], grads[N_LOCAL];
    test_fill_normal(&rng, params, N_LOCAL, 1.0f);
    test_fill_normal(&rng, grads, N_LOCAL, 1.0f);
    Optimizer opt;
    optimizer_init(&opt, &cfg, ops_cpu(), &layout);
    ck_assert_int_eq(optimizer_step(&opt, params, grads, NULL, 1e-2f).skipped, 0);

    float params_before[N_LOCAL], m_before[N_LOCAL], v_before[N_LOCAL];
    memcpy(params_before, params, sizeof(params));
    memcpy(m_before, opt.m, sizeof(m_before));
    memcpy(v_before, opt.v, sizeof(v_before));
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const int where[] = {2, 7, 15}; // a dense element, a no-decay one, a slot value
    for (int k = 0; k < 3; k++) {
        float g[N_LOCAL];
        memcpy(g, grads, sizeof(g));
        g[where[k]] = bad[k];
        OptimStepResult r = optimizer_step(&opt, params, g, NULL, 1e-2f);
        ck_assert_int_eq(r.skipped, 1);
        ck_assert(!isfinite(r.grad_norm));
        ck_assert_int_eq(opt.t, 1);
        ck_assert_mem_eq(params, params_before, sizeof(params));
        ck_assert_mem_eq(opt.m, m_before, sizeof(m_before));
        ck_assert_mem_eq(opt.v, v_before, sizeof(v_before));
    }
    // A finite step afterwards goes on from t = 1.
    ck_assert_int_eq(optimizer_step(&opt, params, grads, NULL, 1e-2f).skipped, 0);
    ck_assert_int_eq(opt.t, 2);
    optimizer_free(&opt);
}
END_TEST

START_TEST(test_weight_decay_only_on_decay_group) {
    // With zero gradients the Adam term is 0 and only the decay moves a parameter.
    build_layout();
    OptimConfig cfg = optim_config_default();
    cfg.weight_decay = 0.5f;
    float params[N_LOCAL], grads[N_LOCAL] = {0};
    for (int i = 0; i < N_LOCAL; i++)
        params[i] = 1.0f + (float)i;
    Optimizer opt;
    optimizer_init(&opt, &cfg, ops_cpu(), &layout);
    optimizer_step(&opt, params, grads, NULL, 0.1f);
    for (int i = 0; i < N_LOCAL; i++) {
        float before = 1.0f + (float)i;
        float expect = group_of((size_t)i) == GROUP_DECAY ? before * (1.0f - 0.1f * 0.5f) : before;
        ck_assert_msg(fabsf(params[i] - expect) <= 1e-6f * before,
                      "element %d (group %d): %g vs %g", i, group_of((size_t)i), params[i], expect);
    }
    optimizer_free(&opt);
}
END_TEST

START_TEST(test_grads_allreduce_without_comm_is_identity) {
    float grads[4] = {1, 2, 3, 4};
    grads_allreduce(NULL, grads, 4);
    ck_assert_float_eq(grads[0], 1);
    ck_assert_float_eq(grads[3], 4);
}
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_schedule_key_steps);
    tcase_add_test(tc, test_schedule_validation);
    tcase_add_test(tc, test_adamw_matches_hand_computation);
    tcase_add_test(tc, test_adamw_first_step_is_sign_descent);
    tcase_add_test(tc, test_clipping_scales_the_update);
    tcase_add_test(tc, test_non_finite_gradient_skips_the_step);
    tcase_add_test(tc, test_weight_decay_only_on_decay_group);
    tcase_add_test(tc, test_grads_allreduce_without_comm_is_identity);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(optim_suite());
}
