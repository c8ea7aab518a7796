// hspmn_dist bench: full training steps on random tokens, timed through the op table.
//
// One run ("variant") builds the model, runs --bench_warmup untimed steps and --bench_steps
// timed ones, each: zero grad, forward, backward, dense-gradient all-reduce, AdamW. A
// Profiler attached to the model times every phase; the step time is the slowest rank's.
// --bench_sweep runs the base configuration, attn=dense, ffn=dense and each length of
// --bench_seq_lens, sparse and attn=dense (micro-batch scaled to keep --bench_tokens tokens
// per rank per step), freeing each model before the next, and ends with one summary row per
// variant and the attention speed-up of sparse queries at each length.
// --bench_kernels 1 times the main ops one by one instead (launch/lib/bench_kernels.h).
#include "launch/lib/bench.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/mpi_check.h"
#include "kernels/error.h"
#include "launch/lib/bench_kernels.h"
#include "model/flops.h"
#include "model/profile.h"
#include "optim/adamw.h"

#define BENCH_MAX_SEQ_LENS 16
#define MIB                (1024.0 * 1024.0)

// The bench flags with their defaults filled in (options.h keeps 0 for "default").
typedef struct BenchSettings {
    int steps, warmup, tokens;
    double peak_tflops; // per device
    int seq_lens[BENCH_MAX_SEQ_LENS];
    int n_seq_lens;
} BenchSettings;

// One configuration to time.
typedef struct BenchVariant {
    char name[32];
    ModelConfig cfg;
    int B; // sequences per rank per step
} BenchVariant;

// What one variant measured. Times are milliseconds per step.
typedef struct BenchResult {
    int ran;             // 0: skipped, out of memory
    double need_mib;     // the estimate that decided it
    double free_mib;     // what the device reported free before building
    double step_median;  // slowest rank, per step
    double step_mean;    // slowest rank, per step
    double tokens_per_s; // global
    double mfu;          // fraction of peak
    double flops_per_token;
    double peak_mib;        // tracked backend memory, most of any rank
    double device_used_mib; // total - free reported by the device, most of any rank
    double device_total_mib;
    double phase_fwd[PHASE_COUNT], phase_bwd[PHASE_COUNT]; // this rank's means
    double rank_step_mean;                                 // this rank's own mean step
} BenchResult;

// ---- settings -------------------------------------------------------------------------

static void parse_seq_lens(Session *s, const char *text, BenchSettings *bs) {
    bs->n_seq_lens = 0;
    const char *at = text;
    while (*at) {
        char *end = NULL;
        long v = strtol(at, &end, 10);
        if (end == at || (*end != ',' && *end != '\0') || v < 1 || v > (1L << 24))
            session_usage_error(s,
                                "--bench_seq_lens: '%s' is not a comma-separated list of "
                                "positive sequence lengths",
                                text);
        if (bs->n_seq_lens == BENCH_MAX_SEQ_LENS)
            session_usage_error(s, "--bench_seq_lens: at most %d lengths", BENCH_MAX_SEQ_LENS);
        bs->seq_lens[bs->n_seq_lens++] = (int)v;
        at = *end == ',' ? end + 1 : end;
    }
    if (bs->n_seq_lens == 0)
        session_usage_error(s, "--bench_seq_lens: empty list");
}

static BenchSettings bench_settings(Session *s) {
    const Options *o = &s->opt;
    BenchSettings bs;
    bs.steps = o->bench_steps > 0 ? o->bench_steps : 10;
    bs.warmup = o->bench_warmup_given ? o->bench_warmup : 3;
    bs.tokens = o->bench_tokens > 0 ? o->bench_tokens : 16384;
    bs.peak_tflops = o->peak_tflops > 0 ? o->peak_tflops : 800.0;
    parse_seq_lens(s, o->bench_seq_lens[0] ? o->bench_seq_lens : "1024,2048,4096,8192,16384", &bs);
    return bs;
}

// ---- random tokens ------------------------------------------------------------------------

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Token of (global sequence, position): the same on any rank count, from --seed alone.
static int32_t random_token(uint64_t seed, int64_t sequence, int t, int vocab) {
    uint64_t h = splitmix64(seed ^ splitmix64((uint64_t)sequence * 0x100000001b3ULL + (uint64_t)t));
    return (int32_t)(h % (uint64_t)vocab);
}

// tokens, targets [B, T] on the backend: random tokens, each target the next token.
static void upload_random_batch(const Ops *ops, int32_t *tokens, int32_t *targets, uint64_t seed,
                                int64_t first_sequence, int B, int T, int vocab) {
    size_t n = (size_t)B * T;
    int32_t *host_tokens = hs_malloc(n * sizeof(int32_t));  // [B, T]
    int32_t *host_targets = hs_malloc(n * sizeof(int32_t)); // [B, T]
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            host_tokens[(size_t)b * T + t] = random_token(seed, first_sequence + b, t, vocab);
            host_targets[(size_t)b * T + t] = random_token(seed, first_sequence + b, t + 1, vocab);
        }
    ops->copy_from_host(tokens, host_tokens, n * sizeof(int32_t));
    ops->copy_from_host(targets, host_targets, n * sizeof(int32_t));
    free(host_tokens);
    free(host_targets);
}

// ---- memory estimate (the sweep skips a variant that cannot fit) ----------------------------

// Bytes one rank will allocate for a variant: parameters, gradients and both AdamW moments,
// the model's activation arena and backward scratch (as model_build_with measures them), the
// slot exchange's buffers, one chunk of the LM head's logits, plus a margin for what this sum
// leaves out (optimizer scalars, library workspaces). An estimate: it errs on the large side.
static double estimate_bytes(Session *s, const BenchVariant *v, int bf16) {
    const ModelConfig *c = &v->cfg;
    ParamLayout layout;
    param_layout_build(&layout, c, s->info.rank, s->info.world);
    double state = 4.0 * 4.0 * (double)layout.n_local;
    param_layout_free(&layout);
    const ModelOptions mo = session_model_options(s);
    const double model = (double)model_memory_bytes(c, v->B, c->seq_len, s->info.world, &mo);
    const double H = c->d_model, R = c->ptr_dim, K = c->top_k;
    // floats per token of the slot exchange (dist/slot_exchange.c)
    double exchange = c->ffn == FFN_MEMORY ? 4 * K * (R + H) + 2 * R : 0.0;
    double tokens = (double)v->B * c->seq_len;
    // The LM head's logits exist one chunk of tokens at a time.
    double logits =
        (double)model_default_head_chunk(c->vocab_size, v->B * c->seq_len) * c->vocab_size;
    // bf16 matmuls: the cuda backend's workspace holds the LM head's bf16 copies of its
    // weight and of yn and one chunk of bf16 dlogits (kernels/cuda/cuda_lm_head.cu), and
    // grows by half again when it grows.
    double workspace =
        bf16 ? 1.5 * (2.0 * logits + 2.0 * c->vocab_size * H + 2.0 * tokens * H) : 0.0;
    return 1.15 * (state + model + 4.0 * (exchange * tokens + logits) + workspace) + 256.0 * MIB;
}

// 1 on every rank when every rank has room for the variant (by the estimate).
static int variant_fits(Session *s, const BenchVariant *v, BenchResult *r) {
    size_t free_bytes = 0, total_bytes = 0;
    s->ops->memory_device_info(&free_bytes, &total_bytes);
    r->need_mib =
        estimate_bytes(s, v, s->ops->kind != BACKEND_CPU && strcmp(s->opt.matmul, "bf16") == 0) /
        MIB;
    r->free_mib = (double)free_bytes / MIB;
    // An unknown free size (0) never blocks; the allocation itself is then the judge.
    double short_ranks = free_bytes > 0 && r->need_mib > r->free_mib ? 1.0 : 0.0;
    comm_host_sum_f64(s->comm, &short_ranks, 1);
    return short_ranks == 0.0;
}

// ---- timing one variant -------------------------------------------------------------------

typedef struct BenchRun {
    Session *s;
    Model model;
    Optimizer optim;
    Profiler *profiler;
    int32_t *tokens, *targets; // [B, T] backend
    ForwardArgs args;
} BenchRun;

static void bench_run_open(BenchRun *run, Session *s, const BenchVariant *v) {
    const Ops *ops = s->ops;
    const int B = v->B, T = v->cfg.seq_len, world = s->info.world;
    memset(run, 0, sizeof(*run));
    run->s = s;
    session_check_backend_limits(s, &v->cfg);
    const ModelOptions mo = session_model_options(s);
    model_build_with(&run->model, &v->cfg, ops, s->comm, B, T, &mo);
    model_init(&run->model, s->opt.seed);
    OptimConfig oc = optim_config_default();
    oc.weight_decay = (float)s->opt.weight_decay;
    oc.grad_clip = (float)s->opt.grad_clip;
    oc.slot_value_lr_mult = (float)s->opt.slot_value_lr_mult;
    optimizer_init(&run->optim, &oc, ops, &run->model.layout);
    run->tokens = ops->alloc((size_t)B * T * sizeof(int32_t));
    run->targets = ops->alloc((size_t)B * T * sizeof(int32_t));
    const int64_t first = (int64_t)s->info.rank * B;
    upload_random_batch(ops, run->tokens, run->targets, s->opt.seed, first, B, T,
                        v->cfg.vocab_size);
    const double global_sequences = (double)B * world;
    run->args = (ForwardArgs){.tokens = run->tokens,
                              .targets = run->targets,
                              .training = 1,
                              .seed = s->opt.seed,
                              .step = 0,
                              .seq_offset = (uint32_t)first,
                              .ce_scale = (float)(1.0 / (global_sequences * T)),
                              .token_scale = (float)(1.0 / (global_sequences * T)),
                              .seq_scale = (float)(1.0 / global_sequences),
                              .want_grad = 1};
    run->profiler = profiler_create(ops);
    run->model.profiler = run->profiler;
}

static void bench_run_close(BenchRun *run) {
    const Ops *ops = run->s->ops;
    ops->synchronize();
    run->model.profiler = NULL;
    profiler_destroy(run->profiler);
    ops->free(run->tokens);
    ops->free(run->targets);
    optimizer_free(&run->optim);
    model_free(&run->model);
}

// One full training step under the profiler; returns its time in milliseconds (this rank).
static float bench_step(BenchRun *run, uint32_t step) {
    Model *model = &run->model;
    Profiler *p = run->profiler;
    profiler_begin_step(p);
    profile_begin(p, PHASE_OPTIMIZER, PROFILE_FORWARD);
    model_zero_grad(model);
    profile_end(p);
    run->args.step = step;
    model_forward(model, &run->args);
    model_backward(model);
    profile_begin(p, PHASE_COMM, PROFILE_FORWARD);
    grads_allreduce(run->s->comm, model->grads, model->layout.n_dense);
    profile_end(p);
    profile_begin(p, PHASE_OPTIMIZER, PROFILE_FORWARD);
    optimizer_step(&run->optim, model->params, model->grads, run->s->comm, (float)run->s->opt.lr);
    profile_end(p);
    return profiler_end_step(p);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void max_over_ranks(double *vals, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce(bench max)");
}

static void measure_variant(Session *s, const BenchVariant *v, const BenchSettings *bs,
                            BenchResult *r) {
    const Ops *ops = s->ops;
    const int world = s->info.world, T = v->cfg.seq_len;
    ops->synchronize();
    ops->memory_reset_peak();
    BenchRun run;
    bench_run_open(&run, s, v);
    for (int i = 0; i < bs->warmup; i++)
        bench_step(&run, (uint32_t)i);
    profiler_reset(run.profiler);
    double *step_ms = hs_malloc((size_t)bs->steps * sizeof(double)); // [steps]
    for (int i = 0; i < bs->steps; i++)
        step_ms[i] = bench_step(&run, (uint32_t)(bs->warmup + i));
    // A data-parallel step lasts as long as its slowest rank.
    max_over_ranks(step_ms, bs->steps);
    double mean = 0.0;
    for (int i = 0; i < bs->steps; i++)
        mean += step_ms[i] / bs->steps;
    qsort(step_ms, (size_t)bs->steps, sizeof(double), compare_doubles);
    r->step_median = bs->steps % 2 ? step_ms[bs->steps / 2]
                                   : 0.5 * (step_ms[bs->steps / 2 - 1] + step_ms[bs->steps / 2]);
    r->step_mean = mean;
    free(step_ms);
    const double tokens_per_step = (double)v->B * T * world;
    r->tokens_per_s = mean > 0 ? tokens_per_step / (mean * 1e-3) : 0.0;
    r->flops_per_token = model_flops_per_token(&v->cfg, T, 1);
    r->mfu = r->flops_per_token * r->tokens_per_s / (bs->peak_tflops * 1e12 * world);
    for (int ph = 0; ph < PHASE_COUNT; ph++) {
        r->phase_fwd[ph] = profiler_phase_mean_ms(run.profiler, ph, PROFILE_FORWARD);
        r->phase_bwd[ph] = profiler_phase_mean_ms(run.profiler, ph, PROFILE_BACKWARD);
    }
    r->rank_step_mean = profiler_step_mean_ms(run.profiler);
    size_t free_bytes = 0, total_bytes = 0;
    ops->memory_device_info(&free_bytes, &total_bytes);
    double mem[3] = {(double)ops->memory_peak() / MIB, (double)(total_bytes - free_bytes) / MIB,
                     (double)total_bytes / MIB};
    max_over_ranks(mem, 3);
    r->peak_mib = mem[0];
    r->device_used_mib = mem[1];
    r->device_total_mib = mem[2];
    bench_run_close(&run);
    r->ran = 1;
}

// ---- printing (rank 0) --------------------------------------------------------------------

static void print_variant_header(const Session *s, const BenchVariant *v, const BenchSettings *bs) {
    const ModelConfig *c = &v->cfg;
    printf("== bench %s: %s, %d rank(s), %d thread(s) per rank, comm %s, matmul %s\n", v->name,
           s->ops->name, s->info.world, s->threads, s->comm_kind == COMM_NCCL ? "nccl" : "mpi",
           s->ops->kind == BACKEND_CPU ? "fp32 (cpu)" : s->opt.matmul);
    printf("model: L%d H%d nh%d nkv%d T%d V%d S%d R%d K%d capacity %g (n_sel %d), attn=%s "
           "ffn=%s%s%s%s\n",
           c->n_layers, c->d_model, c->n_heads, c->n_kv_heads, c->seq_len, c->vocab_size,
           c->n_slots, c->ptr_dim, c->top_k, c->capacity, model_n_selected(c, c->seq_len),
           c->attn == ATTN_DENSE ? "dense" : "sparse", c->ffn == FFN_DENSE ? "dense" : "memory",
           c->ffn == FFN_MEMORY && s->opt.refetch_slot_rows
               ? "; slot rows refetched in the backward (--refetch_slot_rows 1)"
               : "",
           s->opt.recompute_elementwise
               ? "; norms, conv, GELU recomputed in the backward (--recompute_elementwise 1)"
               : "",
           strcmp(s->opt.activations, "bf16") == 0
               ? "; activations kept in bf16 for the backward (--activations bf16)"
               : "");
    printf("batch: %d sequences per rank x %d rank(s) = %lld tokens per step; warmup %d, "
           "timed %d steps\n",
           v->B, s->info.world, (long long)v->B * c->seq_len * s->info.world, bs->warmup,
           bs->steps);
}

// Rank 0's phases, in ms per step and as a share of rank 0's own mean step time.
static void print_phase_table(const BenchResult *r) {
    const double step = r->rank_step_mean;
    printf("phases (rank 0, ms per step):\n");
    printf("  %-12s %10s %10s %10s %8s\n", "phase", "fwd ms", "bwd ms", "total ms", "% step");
    double sum = 0.0;
    for (int ph = 0; ph < PHASE_COUNT; ph++) {
        double total = r->phase_fwd[ph] + r->phase_bwd[ph];
        sum += total;
        printf("  %-12s %10.3f %10.3f %10.3f %7.1f%%\n", profile_phase_name(ph), r->phase_fwd[ph],
               r->phase_bwd[ph], total, step > 0 ? 100.0 * total / step : 0.0);
    }
    printf("  %-12s %10s %10s %10.3f %7.1f%%\n", "(sum)", "", "", sum,
           step > 0 ? 100.0 * sum / step : 0.0);
    printf("  %-12s %10s %10s %10.3f %7.1f%%\n", "(step)", "", "", step, 100.0);
}

static void print_variant_result(const Session *s, const BenchVariant *v, const BenchSettings *bs,
                                 const BenchResult *r) {
    if (!r->ran) {
        printf("out of memory: needs about %.0f MiB per rank, %.0f MiB free; skipped\n\n",
               r->need_mib, r->free_mib);
        return;
    }
    printf("model FLOPs per token: %.3f MFLOP training, %.3f MFLOP forward (MODEL.md)\n",
           r->flops_per_token / 1e6, model_flops_per_token(&v->cfg, v->cfg.seq_len, 0) / 1e6);
    printf("step time: median %.3f ms, mean %.3f ms (slowest rank)\n", r->step_median,
           r->step_mean);
    printf("tokens/s: %.1f (all %d rank(s), from the mean step)\n", r->tokens_per_s, s->info.world);
    const char *peak_note = "; cpu backend: the GPU peak is not this machine's";
    if (s->ops->kind == BACKEND_CUDA)
        peak_note = strcmp(s->opt.matmul, "bf16") == 0
                        ? "; the peak is the bf16 dense rate (--matmul bf16: bf16 tensor-core "
                          "GEMMs, attention and top-K search)"
                        : "; the peak is the bf16 dense rate, these GEMMs run in the "
                          "--matmul setting's precision (not bf16)";
    printf("MFU: %.4g%% of %g TFLOP/s per device x %d device(s) (--peak_tflops)%s\n",
           100.0 * r->mfu, bs->peak_tflops, s->info.world, peak_note);
    printf("memory: peak %.1f MiB allocated through the backend (most of any rank); device "
           "reports %.1f of %.1f MiB in use%s\n",
           r->peak_mib, r->device_used_mib, r->device_total_mib,
           s->ops->kind == BACKEND_CUDA ? " (cudaMemGetInfo: all processes, cuBLAS, NCCL)"
                                        : " (host memory, /proc/meminfo)");
    print_phase_table(r);
    printf("\n");
}

static double attention_ms(const BenchResult *r) {
    return r->phase_fwd[PHASE_ATTENTION] + r->phase_bwd[PHASE_ATTENTION];
}

// What sparse queries buy: for every sparse variant that has an attn=dense twin (the same
// length, sequences and FFN), the attention phase of the twin over its own (forward +
// backward, the q/k/v/o GEMMs included).
static void print_attention_speedups(const BenchVariant *variants, const BenchResult *results,
                                     int n) {
    int printed = 0;
    for (int i = 0; i < n; i++) {
        const BenchVariant *sparse = &variants[i];
        if (sparse->cfg.attn != ATTN_SPARSE || !results[i].ran || attention_ms(&results[i]) <= 0)
            continue;
        for (int j = 0; j < n; j++) {
            const BenchVariant *dense = &variants[j];
            if (dense->cfg.attn != ATTN_DENSE || !results[j].ran ||
                dense->cfg.seq_len != sparse->cfg.seq_len || dense->B != sparse->B ||
                dense->cfg.ffn != sparse->cfg.ffn)
                continue;
            if (!printed++)
                printf("attention phase, attn=dense over sparse (capacity %g):\n",
                       sparse->cfg.capacity);
            printf("  T=%-6d %s vs %s: %.3f / %.3f ms = %.2fx\n", sparse->cfg.seq_len, dense->name,
                   sparse->name, attention_ms(&results[j]), attention_ms(&results[i]),
                   attention_ms(&results[j]) / attention_ms(&results[i]));
            break;
        }
    }
}

static void print_sweep_summary(const BenchVariant *variants, const BenchResult *results, int n) {
    printf("== sweep summary\n");
    printf("  %-14s %6s %5s %12s %8s %10s %13s %10s\n", "variant", "T", "B", "tok/s", "MFU %",
           "peak MiB", "attention ms", "slot ms");
    for (int i = 0; i < n; i++) {
        const BenchResult *r = &results[i];
        if (!r->ran) {
            printf("  %-14s %6d %5d out of memory (needs ~%.0f MiB, %.0f MiB free)\n",
                   variants[i].name, variants[i].cfg.seq_len, variants[i].B, r->need_mib,
                   r->free_mib);
            continue;
        }
        printf("  %-14s %6d %5d %12.1f %8.3g %10.1f %13.3f %10.3f\n", variants[i].name,
               variants[i].cfg.seq_len, variants[i].B, r->tokens_per_s, 100.0 * r->mfu, r->peak_mib,
               attention_ms(r), r->phase_fwd[PHASE_SLOT_MEMORY] + r->phase_bwd[PHASE_SLOT_MEMORY]);
    }
    print_attention_speedups(variants, results, n);
    fflush(stdout);
}

// ---- the variants ---------------------------------------------------------------------------

// The base configuration, then (with --bench_sweep) attn=dense, ffn=dense and each length,
// sparse and attn=dense.
static int build_variants(Session *s, const BenchSettings *bs, BenchVariant *out, int cap) {
    int n = 0;
    BenchVariant base = {.cfg = s->cfg, .B = s->opt.micro_batch};
    snprintf(base.name, sizeof(base.name), "base");
    out[n++] = base;
    if (!s->opt.bench_sweep)
        return n;
    BenchVariant v = base;
    snprintf(v.name, sizeof(v.name), "attn=dense");
    v.cfg.attn = ATTN_DENSE;
    out[n++] = v;
    v = base;
    snprintf(v.name, sizeof(v.name), "ffn=dense");
    v.cfg.ffn = FFN_DENSE;
    out[n++] = v;
    // Each length twice: as configured, then with attn=dense (its twin for the speed-up).
    for (int i = 0; i < bs->n_seq_lens && n + 2 <= cap; i++) {
        v = base;
        snprintf(v.name, sizeof(v.name), "T=%d", bs->seq_lens[i]);
        v.cfg.seq_len = bs->seq_lens[i];
        v.B = bs->tokens / bs->seq_lens[i] > 0 ? bs->tokens / bs->seq_lens[i] : 1;
        char err[256];
        if (model_config_validate(&v.cfg, err, sizeof(err)) != 0)
            session_usage_error(s, "--bench_seq_lens %d: %s", bs->seq_lens[i], err);
        out[n++] = v;
        snprintf(v.name, sizeof(v.name), "T=%d/dense", bs->seq_lens[i]);
        v.cfg.attn = ATTN_DENSE;
        out[n++] = v;
    }
    return n;
}

int bench_main(Session *s) {
    const int rank = s->info.rank;
    session_resolve_config(s, 0);
    BenchSettings bs = bench_settings(s);
    if (!s->ops->timer_create || !s->ops->memory_peak || !s->ops->memory_device_info)
        hs_fatal("bench: the %s backend lacks the timer and memory ops", s->ops->name);
    if (s->opt.bench_kernels) {
        KernelBenchSettings ks = {.steps = bs.steps,
                                  .warmup = bs.warmup,
                                  .peak_tflops = bs.peak_tflops,
                                  .peak_gbps = s->opt.peak_gbps > 0 ? s->opt.peak_gbps
                                                                    : BENCH_KERNELS_DEFAULT_GBPS};
        return bench_kernels_main(s, &ks);
    }
    BenchVariant variants[3 + 2 * BENCH_MAX_SEQ_LENS];
    BenchResult results[3 + 2 * BENCH_MAX_SEQ_LENS];
    int n = build_variants(s, &bs, variants, 3 + 2 * BENCH_MAX_SEQ_LENS);
    for (int i = 0; i < n; i++) {
        BenchResult *r = &results[i];
        memset(r, 0, sizeof(*r));
        if (rank == 0) {
            print_variant_header(s, &variants[i], &bs);
            fflush(stdout);
        }
        if (variant_fits(s, &variants[i], r))
            measure_variant(s, &variants[i], &bs, r);
        if (rank == 0) {
            print_variant_result(s, &variants[i], &bs, r);
            fflush(stdout);
        }
    }
    if (rank == 0 && n > 1)
        print_sweep_summary(variants, results, n);
    return 0;
}
