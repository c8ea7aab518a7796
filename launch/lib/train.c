// The training loop. One optimizer step, on every rank:
//   read this rank's micro-batches (by global sequence index, so any rank count reads the
//   same global batch) -> count the scored tokens of the whole batch -> for each micro-batch
//   forward + backward (losses scaled by 1 / global tokens, so gradients add up to the
//   global mean) -> all-reduce the dense gradients -> AdamW at the scheduled lr.
// The data cursor after step k is k * batch whatever the rank count, which is what lets a
// checkpoint resume on a different number of ranks.
#include "launch/lib/train.h"

#include <dirent.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/mpi_check.h"
#include "dist/watchdog.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "kernels/error.h"
#include "launch/lib/batch.h"
#include "launch/lib/eval.h"
#include "launch/lib/layer_stats.h"
#include "launch/lib/metrics_recover.h"
#include "optim/adamw.h"
#include "optim/schedule.h"

// Everything the loop carries from step to step.
typedef struct Trainer {
    Session *s;
    Optimizer optim;
    LrSchedule schedule;
    int accum;           // micro-batches per rank per step
    Batch *micro;        // [accum]
    uint64_t seed;       // run seed (from the checkpoint when resuming)
    int64_t start_step;  // steps completed before this process started
    int64_t data_cursor; // global sequences consumed
    Metrics *metrics;    // rank 0 only
    LayerStats stats;
    float *loss_sum;    // [3] backend memory: ce, route, entropy summed over the micro-batches
    Watchdog *watchdog; // NULL with --step_timeout 0
} Trainer;

// Extra metrics next to io/metrics.h's standard ones.
static const char *const extra_scalars[] = {"eval_loss", "eval_acc_mqar", "eval_acc_facts",
                                            "eval_acc_all", "skipped"};
#define N_EXTRA_SCALARS ((int)(sizeof(extra_scalars) / sizeof(extra_scalars[0])))

// ---- set-up ------------------------------------------------------------------------------

static int accumulation_steps(Session *s) {
    const Options *o = &s->opt;
    long per_pass = (long)o->micro_batch * s->info.world;
    if (o->batch % per_pass != 0)
        session_usage_error(s,
                            "--batch %d is not divisible by --micro_batch %d x %d ranks = %ld: "
                            "each step must be a whole number of micro-batches on every rank",
                            o->batch, o->micro_batch, s->info.world, per_pass);
    return (int)(o->batch / per_pass);
}

static void trainer_init_optimizer(Trainer *tr) {
    Session *s = tr->s;
    OptimConfig oc = optim_config_default();
    oc.weight_decay = (float)s->opt.weight_decay;
    oc.grad_clip = (float)s->opt.grad_clip;
    oc.slot_value_lr_mult = (float)s->opt.slot_value_lr_mult;
    optimizer_init(&tr->optim, &oc, s->ops, &s->model.layout);
    tr->schedule.lr = (float)s->opt.lr;
    // A run shorter than the default warm-up warms up over all of it.
    tr->schedule.warmup_steps = s->opt.warmup < s->opt.steps ? s->opt.warmup : s->opt.steps;
    tr->schedule.total_steps = s->opt.steps;
    tr->schedule.min_lr_frac = (float)s->opt.min_lr_frac;
    char err[256];
    if (lr_schedule_validate(&tr->schedule, err, sizeof(err)) != 0)
        session_usage_error(s, "learning-rate schedule: %s", err);
}

// Fresh start (MODEL.md init from --seed) or resume (params, moments, step, cursor, seed).
static void trainer_start_state(Trainer *tr) {
    Session *s = tr->s;
    tr->seed = s->opt.seed;
    tr->start_step = 0;
    tr->data_cursor = 0;
    if (!s->ckpt_path[0]) {
        model_init(&s->model, tr->seed);
        return;
    }
    size_t n = s->model.layout.n_local;
    float *m_host = hs_malloc(n * sizeof(float));
    float *v_host = hs_malloc(n * sizeof(float));
    CheckpointState state;
    int64_t optim_step = 0;
    session_load_checkpoint(s, m_host, v_host, &state, &optim_step);
    s->ops->copy_from_host(tr->optim.m, m_host, n * sizeof(float));
    s->ops->copy_from_host(tr->optim.v, v_host, n * sizeof(float));
    s->ops->synchronize();
    tr->optim.t = (int)optim_step;
    free(m_host);
    free(v_host);
    if (state.seed != s->opt.seed && s->info.rank == 0)
        printf("note: continuing with the checkpoint's seed %llu (--seed %llu ignored)\n",
               (unsigned long long)state.seed, (unsigned long long)s->opt.seed);
    tr->seed = state.seed;
    tr->start_step = state.step;
    tr->data_cursor = state.data_cursor;
    if (s->info.rank == 0)
        printf("resumed from %s at step %lld (data cursor %lld)\n", s->ckpt_path,
               (long long)state.step, (long long)state.data_cursor);
}

// ---- checkpoints ---------------------------------------------------------------------------

// Testing aid (--debug_die_rank/--debug_die_step): a thread that SIGKILLs this process as
// soon as the checkpoint's temporary file appears in the run dir, i.e. in the middle of the
// collective write, the way a node failure would.
static void *die_when_tmp_appears(void *arg) {
    const char *run_dir = arg;
    for (;;) {
        DIR *dir = opendir(run_dir);
        if (dir) {
            struct dirent *e;
            while ((e = readdir(dir)) != NULL) {
                size_t len = strlen(e->d_name);
                if (len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
                    fprintf(stderr, "debug: rank killing itself during the write of %s/%s\n",
                            run_dir, e->d_name);
                    raise(SIGKILL);
                }
            }
            closedir(dir);
        }
    }
    return NULL;
}

static void arm_debug_death(Trainer *tr, int64_t step_done) {
    const Options *o = &tr->s->opt;
    if (o->debug_die_step != step_done || o->debug_die_rank != tr->s->info.rank)
        return;
    pthread_t thread;
    if (pthread_create(&thread, NULL, die_when_tmp_appears, tr->s->run_dir) != 0)
        hs_fatal("pthread_create failed for --debug_die_step");
    pthread_detach(thread);
}

// --debug_hang_step: this rank stops at the start of that step, as a hung GPU or peer would.
static void debug_hang(const Trainer *tr, int64_t step) {
    const Options *o = &tr->s->opt;
    if (o->debug_hang_step != step || o->debug_hang_rank != tr->s->info.rank)
        return;
    fprintf(stderr, "debug: rank %d hangs at the start of step %lld (--debug_hang_step)\n",
            tr->s->info.rank, (long long)step);
    fflush(stderr);
    for (;;)
        pause();
}

static void save_checkpoint(Trainer *tr, int64_t step_done) {
    Session *s = tr->s;
    const Options *o = &s->opt;
    size_t n = s->model.layout.n_local;
    float *params = hs_malloc(n * sizeof(float));
    float *m = hs_malloc(n * sizeof(float));
    float *v = hs_malloc(n * sizeof(float));
    s->ops->copy_to_host(params, s->model.params, n * sizeof(float));
    s->ops->copy_to_host(m, tr->optim.m, n * sizeof(float));
    s->ops->copy_to_host(v, tr->optim.v, n * sizeof(float));
    s->ops->synchronize();

    char text[9][64];
    snprintf(text[0], 64, "%d", o->micro_batch);
    snprintf(text[1], 64, "%d", o->batch);
    snprintf(text[2], 64, "%d", o->steps);
    snprintf(text[3], 64, "%.9g", o->lr);
    snprintf(text[4], 64, "%d", o->warmup);
    snprintf(text[5], 64, "%.9g", o->min_lr_frac);
    snprintf(text[6], 64, "%.9g", o->weight_decay);
    snprintf(text[7], 64, "%.9g", o->grad_clip);
    snprintf(text[8], 64, "%.9g", o->slot_value_lr_mult);
    const CheckpointSetting settings[] = {
        {"micro_batch", text[0]},  {"batch", text[1]},     {"steps", text[2]},
        {"lr", text[3]},           {"warmup", text[4]},    {"min_lr_frac", text[5]},
        {"weight_decay", text[6]}, {"grad_clip", text[7]}, {"slot_value_lr_mult", text[8]},
        {"data", o->data},         {"preset", o->preset},
    };
    CheckpointData data = {
        .cfg = &s->cfg,
        .layout = &s->model.layout,
        .params = params,
        .m = m,
        .v = v,
        .master = NULL,
        .optim_step = tr->optim.t,
        .state = {.step = step_done, .data_cursor = tr->data_cursor, .seed = tr->seed, .rng = 0},
        .settings = settings,
        .n_settings = (int)(sizeof(settings) / sizeof(settings[0])),
    };
    arm_debug_death(tr, step_done);
    char path[OPTIONS_PATH_MAX];
    double t0 = session_now_seconds();
    checkpoint_save(MPI_COMM_WORLD, s->run_dir, &data, o->keep, path, sizeof(path));
    if (s->info.rank == 0)
        printf("checkpoint %s (%.2f s)\n", path, session_now_seconds() - t0);
    free(params);
    free(m);
    free(v);
}

// ---- one step ------------------------------------------------------------------------------

typedef struct StepResult {
    LossParts loss; // global means
    OptimStepResult optim;
    float lr;
} StepResult;

static void train_step(Trainer *tr, int64_t step, StepResult *out) {
    Session *s = tr->s;
    Model *model = &s->model;
    const Options *o = &s->opt;
    const int rank = s->info.rank, world = s->info.world;

    // The loss is a mean over the scored tokens of the whole global batch: count them first.
    double scored = 0.0;
    for (int a = 0; a < tr->accum; a++) {
        int64_t first = data_batch_first_index(tr->data_cursor, a, rank, world, o->micro_batch);
        batch_read(&tr->micro[a], &s->data, first, 0);
        scored += (double)batch_scored_tokens(&tr->micro[a]);
    }
    comm_host_sum_f64(s->comm, &scored, 1);
    if (scored <= 0.0)
        hs_fatal("data %s: the batch at cursor %lld has no positions with a target", o->data,
                 (long long)tr->data_cursor);

    // The loss parts are summed on the device and read once after the last micro-batch:
    // one wait for the GPU per step here, whatever the number of micro-batches.
    model_zero_grad(model);
    s->ops->zero(tr->loss_sum, 3 * sizeof(float));
    for (int a = 0; a < tr->accum; a++) {
        Batch *b = &tr->micro[a];
        batch_upload(b, s->ops);
        ForwardArgs args = {.tokens = b->tokens,
                            .targets = b->targets,
                            .training = 1,
                            .seed = tr->seed,
                            .step = (uint32_t)step,
                            .seq_offset = (uint32_t)b->first,
                            .ce_scale = (float)(1.0 / scored),
                            .token_scale = 1.0f / (float)((int64_t)o->batch * model->T),
                            .seq_scale = 1.0f / (float)o->batch,
                            .want_grad = 1};
        model_forward(model, &args);
        model_backward(model);
        s->ops->axpy(tr->loss_sum, 1.0f, model->losses, 3);
    }
    float sums[3];
    s->ops->copy_to_host(sums, tr->loss_sum, sizeof(sums));
    double parts[4] = {sums[0], sums[1], sums[2], (double)sums[0] + sums[1] + sums[2]};
    grads_allreduce(s->comm, model->grads, model->layout.n_dense);
    out->lr = lr_schedule_at(&tr->schedule, (int)step);
    out->optim = optimizer_step(&tr->optim, model->params, model->grads, s->comm, out->lr);
    comm_host_sum_f64(s->comm, parts, 4);
    out->loss.ce = parts[0];
    out->loss.route = parts[1];
    out->loss.entropy = parts[2];
    out->loss.total = parts[3];
    tr->data_cursor += o->batch;
}

// ---- logging -------------------------------------------------------------------------------

static void format_duration(double seconds, char *out, size_t cap) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, cap, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else
        snprintf(out, cap, "%ldm%02lds", s / 60, s % 60);
}

static void print_progress(const Trainer *tr, int64_t step_done, const StepResult *r,
                           double tok_per_s, double seconds_per_step) {
    const Options *o = &tr->s->opt;
    char eta[32];
    format_duration(seconds_per_step * (double)(o->steps - step_done), eta, sizeof(eta));
    printf("step %5lld/%d | loss %.6f (ce %.4f route %.4f ent %.4f) | lr %.3e | grad_norm %.4f"
           " | %.0f tok/s | ETA %s\n",
           (long long)step_done, o->steps, r->loss.total, r->loss.ce, r->loss.route,
           r->loss.entropy, r->lr, r->optim.grad_norm, tok_per_s, eta);
    fflush(stdout);
}

static void run_eval(Trainer *tr, int64_t step_done) {
    Session *s = tr->s;
    if (s->opt.eval_batches <= 0)
        return;
    EvalResult r;
    eval_run(s, s->opt.eval_batches, &r);
    eval_print(s, &r, step_done);
    if (tr->metrics) {
        metrics_set(tr->metrics, "eval_loss", r.loss);
        metrics_set(tr->metrics, "eval_acc_mqar", r.accuracy[TASK_MQAR]);
        metrics_set(tr->metrics, "eval_acc_facts", r.accuracy[TASK_FACTS]);
        metrics_set(tr->metrics, "eval_acc_all", r.accuracy_all);
    }
}

// metrics.h5 on rank 0: new, or continued after the resume step. A file left open by a
// crashed writer is moved aside and its rows up to the resume step carried over.
static void open_metrics(Trainer *tr) {
    Session *s = tr->s;
    const int resuming = s->ckpt_path[0] != '\0';
    const int crashed = resuming && metrics_set_aside_if_crashed(s->run_dir);
    tr->metrics = metrics_open(s->run_dir, extra_scalars, N_EXTRA_SCALARS, NULL, 0, s->cfg.n_layers,
                               resuming && !crashed ? tr->start_step : -1, 10);
    if (crashed) {
        const char *scalars[32];
        int n = 0;
        for (int i = 0; metrics_standard_scalars[i] && n < 31; i++)
            scalars[n++] = metrics_standard_scalars[i];
        for (int i = 0; i < N_EXTRA_SCALARS && n < 31; i++)
            scalars[n++] = extra_scalars[i];
        scalars[n] = NULL;
        int64_t rows = metrics_replay_crashed(tr->metrics, s->run_dir, tr->start_step, scalars,
                                              metrics_standard_per_layer, s->cfg.n_layers);
        printf("note: carried %lld metrics rows over from the crashed run\n", (long long)rows);
    }
}

static int due(int64_t step_done, int every, int64_t last) {
    return step_done == last || (every > 0 && step_done % every == 0);
}

// ---- the loop --------------------------------------------------------------------------------

int train_main(Session *s) {
    Trainer tr;
    memset(&tr, 0, sizeof(tr));
    tr.s = s;
    const Options *o = &s->opt;
    session_resolve_run(s, 0);
    session_resolve_config(s, 0);
    tr.accum = accumulation_steps(s);
    session_build_model(s, o->micro_batch);
    trainer_init_optimizer(&tr);
    trainer_start_state(&tr);
    session_open_data(s, tr.seed);
    session_print_config(s, tr.accum);

    tr.loss_sum = s->ops->alloc(3 * sizeof(float));
    tr.micro = hs_calloc((size_t)tr.accum, sizeof(Batch));
    for (int a = 0; a < tr.accum; a++)
        batch_alloc(&tr.micro[a], s->ops, o->micro_batch, s->cfg.seq_len);
    layer_stats_init(&tr.stats, &s->cfg, s->model.B * s->model.T);
    if (s->info.rank == 0)
        open_metrics(&tr);

    const int64_t last = o->steps;
    const double tokens_per_step = (double)o->batch * s->cfg.seq_len;
    double window_start = session_now_seconds();
    int64_t window_steps = 0;
    if (tr.start_step >= last && s->info.rank == 0)
        printf("nothing to do: the checkpoint is at step %lld of --steps %d\n",
               (long long)tr.start_step, o->steps);

    tr.watchdog = watchdog_start(o->step_timeout, s->info.rank);
    for (int64_t step = tr.start_step; step < last; step++) {
        StepResult r;
        watchdog_beat(tr.watchdog, "step", step + 1);
        debug_hang(&tr, step + 1);
        train_step(&tr, step, &r);
        const int64_t step_done = step + 1;
        window_steps++;
        if (r.optim.skipped && s->info.rank == 0)
            printf("warning: step %lld skipped: the gradient norm is not finite (%g)\n",
                   (long long)step_done, r.optim.grad_norm);

        const int log_now = due(step_done, o->log_every, last);
        double elapsed = session_now_seconds() - window_start;
        double tok_per_s = elapsed > 0 ? tokens_per_step * window_steps / elapsed : 0.0;
        if (log_now)
            layer_stats_measure(&tr.stats, &s->model, s->info.world);
        if (tr.metrics) {
            metrics_begin(tr.metrics, step_done);
            metrics_set(tr.metrics, "loss", r.loss.total);
            metrics_set(tr.metrics, "ce", r.loss.ce);
            metrics_set(tr.metrics, "route_loss", r.loss.route);
            metrics_set(tr.metrics, "entropy", r.loss.entropy);
            metrics_set(tr.metrics, "lr", r.lr);
            metrics_set(tr.metrics, "grad_norm", r.optim.grad_norm);
            metrics_set(tr.metrics, "tok_per_s", tok_per_s);
            metrics_set(tr.metrics, "skipped", r.optim.skipped);
            if (log_now) {
                metrics_set_layers(tr.metrics, "routed_fraction", tr.stats.routed_fraction);
                metrics_set_layers(tr.metrics, "slot_hit_fraction", tr.stats.slot_hit_fraction);
                metrics_set_layers(tr.metrics, "slot_usage_entropy", tr.stats.slot_entropy);
            }
        }
        if (log_now) {
            if (s->info.rank == 0)
                print_progress(&tr, step_done, &r, tok_per_s, elapsed / (double)window_steps);
            window_steps = 0;
        }
        if (due(step_done, o->eval_every, last)) {
            watchdog_beat(tr.watchdog, "the evaluation after step", step_done);
            run_eval(&tr, step_done);
        }
        if (tr.metrics)
            metrics_commit(tr.metrics);
        if (due(step_done, o->ckpt_every, last)) {
            // The curves up to a checkpoint reach the disk before it does: a crash after it
            // loses no rows that a resume would keep.
            if (tr.metrics)
                metrics_flush(tr.metrics);
            watchdog_beat(tr.watchdog, "the checkpoint of step", step_done);
            save_checkpoint(&tr, step_done);
        }
        if (log_now)
            window_start = session_now_seconds(); // eval and checkpoints are not step time
    }

    watchdog_stop(tr.watchdog);
    if (tr.metrics)
        metrics_close(tr.metrics);
    layer_stats_free(&tr.stats);
    for (int a = 0; a < tr.accum; a++)
        batch_free(&tr.micro[a], s->ops);
    free(tr.micro);
    s->ops->free(tr.loss_sum);
    optimizer_free(&tr.optim);
    if (s->info.rank == 0)
        printf("done: %s\n", s->run_dir);
    return 0;
}
