// Flag parsing and --help for hspmn_dist. Strict: "12x", "-3", "nan" and unknown flags are
// errors that name the flag and the value, never silently read as something else.
#include "launch/lib/options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *options_mode_name(RunMode mode) {
    switch (mode) {
    case MODE_TRAIN:
        return "train";
    case MODE_EVAL:
        return "eval";
    case MODE_SAMPLE:
        return "sample";
    case MODE_BENCH:
        return "bench";
    }
    return "?";
}

void options_defaults(Options *opt) {
    memset(opt, 0, sizeof(*opt));
    opt->mode = MODE_TRAIN;
    snprintf(opt->preset, sizeof(opt->preset), "small");
    // On: with several ranks it saves the value rows received (2 GB per rank at the seed
    // shape), with one the key rows (112 MB), for a row gather a layer (docs/PERFORMANCE.md,
    // sixth and eighth measurements); --recompute_elementwise (1.2 GB for 2.7%) stays off.
    opt->refetch_slot_rows = 1;
    opt->micro_batch = 8;
    opt->batch = 16;
    opt->steps = 3000;
    opt->lr = 3e-3;
    opt->warmup = 20;
    opt->min_lr_frac = 0.1;
    opt->weight_decay = 0.1;
    opt->grad_clip = 1.0;
    opt->slot_value_lr_mult = 1.0;
    opt->seed = 1234;
    opt->matmul[0] = '\0';      // bf16 on cuda, fp32 on cpu: chosen with the backend (session.c)
    opt->activations[0] = '\0'; // bf16 with bf16 matmuls, else fp32 (session.c)
    snprintf(opt->data, sizeof(opt->data), "tasks");
    opt->ckpt_every = 500;
    opt->keep = 2;
    snprintf(opt->resume, sizeof(opt->resume), "auto");
    opt->eval_every = 100;
    opt->eval_batches = 8;
    opt->log_every = 100;
    opt->temperature = 1.0;
    opt->sample_top_k = 0;
    opt->max_new_tokens = 64;
    opt->step_timeout = 1800.0;
    opt->debug_die_rank = -1;
    opt->debug_die_step = -1;
    opt->debug_hang_rank = -1;
    opt->debug_hang_step = -1;
}

static int fail(char *err, int errlen, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, (size_t)errlen, fmt, args);
    va_end(args);
    return -1;
}

// A whole-string integer in [lo, hi].
static int parse_int(const char *flag, const char *text, long lo, long hi, int *out, char *err,
                     int errlen) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE)
        return fail(err, errlen, "--%s: '%s' is not an integer", flag, text);
    if (v < lo || v > hi)
        return fail(err, errlen, "--%s: %s is out of range [%ld, %ld]", flag, text, lo, hi);
    *out = (int)v;
    return 0;
}

// A whole-string finite number in [lo, hi].
static int parse_double(const char *flag, const char *text, double lo, double hi, double *out,
                        char *err, int errlen) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v))
        return fail(err, errlen, "--%s: '%s' is not a finite number", flag, text);
    if (v < lo || v > hi)
        return fail(err, errlen, "--%s: %s is out of range [%g, %g]", flag, text, lo, hi);
    *out = v;
    return 0;
}

static int parse_u64(const char *flag, const char *text, uint64_t *out, char *err, int errlen) {
    char *end = NULL;
    errno = 0;
    if (text[0] == '-')
        return fail(err, errlen, "--%s: '%s' must not be negative", flag, text);
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE)
        return fail(err, errlen, "--%s: '%s' is not a non-negative integer", flag, text);
    *out = (uint64_t)v;
    return 0;
}

static int copy_string(const char *flag, const char *text, char *dst, size_t cap, char *err,
                       int errlen) {
    if (strlen(text) >= cap)
        return fail(err, errlen, "--%s: value is longer than %zu characters", flag, cap - 1);
    memcpy(dst, text, strlen(text) + 1);
    return 0;
}

static int one_of(const char *flag, const char *text, const char *const *choices, char *dst,
                  size_t cap, char *err, int errlen) {
    for (int i = 0; choices[i]; i++)
        if (strcmp(text, choices[i]) == 0)
            return copy_string(flag, text, dst, cap, err, errlen);
    char list[128] = "";
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? "|" : "", sizeof(list) - strlen(list) - 1);
        strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
    }
    return fail(err, errlen, "--%s: '%s' is not one of %s", flag, text, list);
}

// tasks | mqar | facts | text:PATH | bin:GLOB | h5:PATH:/dataset
static int check_data_spec(const char *text, char *err, int errlen) {
    if (!strcmp(text, "tasks") || !strcmp(text, "mqar") || !strcmp(text, "facts"))
        return 0;
    const char *prefixes[] = {"text:", "bin:", "h5:"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(text, prefixes[i], n) == 0) {
            if (text[n] == '\0')
                return fail(err, errlen, "--data: '%s' names no path", text);
            if (i == 2 && !strchr(text + n, ':'))
                return fail(err, errlen, "--data: '%s' must be h5:PATH:/dataset", text);
            return 0;
        }
    }
    return fail(err, errlen,
                "--data: unknown data kind '%s' (tasks|mqar|facts|text:PATH|bin:GLOB|"
                "h5:PATH:/dataset)",
                text);
}

static int is_model_entry(const char *name) {
    for (int i = 0; model_config_names[i]; i++)
        if (strcmp(name, model_config_names[i]) == 0)
            return 1;
    return 0;
}

// Check a model value now (on a scratch config), so a malformed one is a usage error.
static int add_model_override(Options *opt, const char *name, const char *value, char *err,
                              int errlen) {
    ModelConfig scratch = model_config_default();
    char why[256];
    if (model_config_set(&scratch, name, value, why, sizeof(why)) != 0)
        return fail(err, errlen, "--%s: '%s': %s", name, value, why);
    if (opt->n_overrides == OPTIONS_MAX_OVERRIDES)
        return fail(err, errlen, "--%s: too many model flags (at most %d)", name,
                    OPTIONS_MAX_OVERRIDES);
    opt->overrides[opt->n_overrides].name = name;
    opt->overrides[opt->n_overrides].value = value;
    opt->n_overrides++;
    return 0;
}

static int set_flag(Options *opt, const char *flag, const char *value, char *err, int errlen) {
    static const char *const presets[] = {"small", "tiny", "seed", NULL};
    static const char *const devices[] = {"cpu", "cuda", NULL};
    static const char *const comms[] = {"mpi", "nccl", NULL};
    static const char *const matmuls[] = {"fp32", "tf32", "bf16", NULL};
    static const char *const storages[] = {"fp32", "bf16", NULL};
    const long big = INT_MAX;
    if (!strcmp(flag, "preset"))
        return one_of(flag, value, presets, opt->preset, sizeof(opt->preset), err, errlen);
    if (!strcmp(flag, "micro_batch"))
        return parse_int(flag, value, 1, big, &opt->micro_batch, err, errlen);
    if (!strcmp(flag, "batch"))
        return parse_int(flag, value, 1, big, &opt->batch, err, errlen);
    if (!strcmp(flag, "steps"))
        return parse_int(flag, value, 0, big, &opt->steps, err, errlen);
    if (!strcmp(flag, "lr"))
        return parse_double(flag, value, 0.0, 10.0, &opt->lr, err, errlen);
    if (!strcmp(flag, "warmup"))
        return parse_int(flag, value, 0, big, &opt->warmup, err, errlen);
    if (!strcmp(flag, "min_lr_frac"))
        return parse_double(flag, value, 0.0, 1.0, &opt->min_lr_frac, err, errlen);
    if (!strcmp(flag, "weight_decay"))
        return parse_double(flag, value, 0.0, 10.0, &opt->weight_decay, err, errlen);
    if (!strcmp(flag, "grad_clip"))
        return parse_double(flag, value, 0.0, 1e9, &opt->grad_clip, err, errlen);
    if (!strcmp(flag, "slot_value_lr_mult"))
        return parse_double(flag, value, 0.0, 1e6, &opt->slot_value_lr_mult, err, errlen);
    if (!strcmp(flag, "seed"))
        return parse_u64(flag, value, &opt->seed, err, errlen);
    if (!strcmp(flag, "data")) {
        if (check_data_spec(value, err, errlen) != 0)
            return -1;
        opt->data_given = 1;
        return copy_string(flag, value, opt->data, sizeof(opt->data), err, errlen);
    }
    if (!strcmp(flag, "run_dir")) {
        if (value[0] == '\0')
            return fail(err, errlen, "--run_dir: empty path");
        return copy_string(flag, value, opt->run_dir, sizeof(opt->run_dir), err, errlen);
    }
    if (!strcmp(flag, "ckpt_every"))
        return parse_int(flag, value, 0, big, &opt->ckpt_every, err, errlen);
    if (!strcmp(flag, "keep"))
        return parse_int(flag, value, 0, big, &opt->keep, err, errlen);
    if (!strcmp(flag, "resume")) {
        if (value[0] == '\0')
            return fail(err, errlen, "--resume: empty value (auto|none|PATH)");
        return copy_string(flag, value, opt->resume, sizeof(opt->resume), err, errlen);
    }
    if (!strcmp(flag, "eval_every"))
        return parse_int(flag, value, 0, big, &opt->eval_every, err, errlen);
    if (!strcmp(flag, "eval_batches"))
        return parse_int(flag, value, 0, big, &opt->eval_batches, err, errlen);
    if (!strcmp(flag, "log_every"))
        return parse_int(flag, value, 1, big, &opt->log_every, err, errlen);
    if (!strcmp(flag, "device"))
        return one_of(flag, value, devices, opt->device, sizeof(opt->device), err, errlen);
    if (!strcmp(flag, "comm"))
        return one_of(flag, value, comms, opt->comm, sizeof(opt->comm), err, errlen);
    if (!strcmp(flag, "matmul"))
        return one_of(flag, value, matmuls, opt->matmul, sizeof(opt->matmul), err, errlen);
    if (!strcmp(flag, "activations"))
        return one_of(flag, value, storages, opt->activations, sizeof(opt->activations), err,
                      errlen);
    if (!strcmp(flag, "threads"))
        return parse_int(flag, value, 1, 1024, &opt->threads, err, errlen);
    if (!strcmp(flag, "prompt"))
        return copy_string(flag, value, opt->prompt, sizeof(opt->prompt), err, errlen);
    if (!strcmp(flag, "prompt_ids"))
        return copy_string(flag, value, opt->prompt_ids, sizeof(opt->prompt_ids), err, errlen);
    if (!strcmp(flag, "temperature"))
        return parse_double(flag, value, 0.0, 100.0, &opt->temperature, err, errlen);
    if (!strcmp(flag, "sample_top_k"))
        return parse_int(flag, value, 0, big, &opt->sample_top_k, err, errlen);
    if (!strcmp(flag, "max_new_tokens"))
        return parse_int(flag, value, 0, big, &opt->max_new_tokens, err, errlen);
    if (!strcmp(flag, "bench_steps"))
        return parse_int(flag, value, 1, big, &opt->bench_steps, err, errlen);
    if (!strcmp(flag, "bench_warmup")) {
        opt->bench_warmup_given = 1;
        return parse_int(flag, value, 0, big, &opt->bench_warmup, err, errlen);
    }
    if (!strcmp(flag, "bench_sweep"))
        return parse_int(flag, value, 0, 1, &opt->bench_sweep, err, errlen);
    if (!strcmp(flag, "bench_tokens"))
        return parse_int(flag, value, 1, big, &opt->bench_tokens, err, errlen);
    if (!strcmp(flag, "peak_tflops"))
        return parse_double(flag, value, 1e-6, 1e9, &opt->peak_tflops, err, errlen);
    if (!strcmp(flag, "refetch_slot_rows"))
        return parse_int(flag, value, 0, 1, &opt->refetch_slot_rows, err, errlen);
    if (!strcmp(flag, "recompute_elementwise"))
        return parse_int(flag, value, 0, 1, &opt->recompute_elementwise, err, errlen);
    if (!strcmp(flag, "bench_kernels"))
        return parse_int(flag, value, 0, 1, &opt->bench_kernels, err, errlen);
    if (!strcmp(flag, "peak_gbps"))
        return parse_double(flag, value, 1e-6, 1e9, &opt->peak_gbps, err, errlen);
    if (!strcmp(flag, "bench_seq_lens"))
        return copy_string(flag, value, opt->bench_seq_lens, sizeof(opt->bench_seq_lens), err,
                           errlen);
    if (!strcmp(flag, "step_timeout"))
        return parse_double(flag, value, 0.0, 1e7, &opt->step_timeout, err, errlen);
    if (!strcmp(flag, "debug_hang_rank"))
        return parse_int(flag, value, 0, big, &opt->debug_hang_rank, err, errlen);
    if (!strcmp(flag, "debug_hang_step"))
        return parse_int(flag, value, 0, big, &opt->debug_hang_step, err, errlen);
    if (!strcmp(flag, "debug_die_rank"))
        return parse_int(flag, value, 0, big, &opt->debug_die_rank, err, errlen);
    if (!strcmp(flag, "debug_die_step"))
        return parse_int(flag, value, 0, big, &opt->debug_die_step, err, errlen);
    if (is_model_entry(flag))
        return add_model_override(opt, flag, value, err, errlen);
    return fail(err, errlen, "unknown flag --%s (see hspmn_dist --help)", flag);
}

int options_parse(Options *opt, int argc, char **argv, char *err, int errlen) {
    options_defaults(opt);
    int have_mode = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        // The command (train|eval|sample) is the one bare word, wherever it stands.
        if (arg[0] != '-' && !have_mode) {
            if (!strcmp(arg, "train"))
                opt->mode = MODE_TRAIN;
            else if (!strcmp(arg, "eval"))
                opt->mode = MODE_EVAL;
            else if (!strcmp(arg, "sample"))
                opt->mode = MODE_SAMPLE;
            else if (!strcmp(arg, "bench"))
                opt->mode = MODE_BENCH;
            else
                return fail(err, errlen, "unknown command '%s' (train|eval|sample|bench)", arg);
            have_mode = 1;
            continue;
        }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            opt->help = 1;
            continue;
        }
        if (!strcmp(arg, "--bench_sweep")) { // a switch; "--bench_sweep 0|1" also reads
            int has_value =
                i + 1 < argc && (!strcmp(argv[i + 1], "0") || !strcmp(argv[i + 1], "1"));
            opt->bench_sweep = has_value ? argv[++i][0] == '1' : 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return fail(err, errlen, "unexpected argument '%s' (flags are --name value)", arg);
        // --name=value or --name value. The name is kept in argv's own storage: model
        // overrides point into it.
        char *name = argv[i] + 2;
        const char *value = NULL;
        char *eq = strchr(name, '=');
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return fail(err, errlen, "--%s: missing value", name);
            value = argv[++i];
        }
        if (set_flag(opt, name, value, err, errlen) != 0)
            return -1;
    }
    return 0;
}

// The "small" preset: a model that learns the built-in tasks in a few minutes on 2 cores.
static ModelConfig preset_small(void) {
    ModelConfig c = model_config_default();
    c.n_layers = 2;
    c.d_model = 64;
    // Two heads of 32 (one kv head) recall better than four of 16 at this width: a query
    // must match its key against every earlier key in one dot product.
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.n_slots = 1024;
    c.ptr_dim = 16;
    c.top_k = 8;
    // The router sees no position, so it cannot tell an MQAR query key from a stated key:
    // answering every query needs about 2 * n_pairs selected tokens plus slack for the
    // Gumbel noise; 0.5 of T = 64 gives 32 for 16 key tokens.
    c.capacity = 0.5;
    return c;
}

int options_model_config(const Options *opt, int data_vocab, int data_seq_len, ModelConfig *cfg,
                         char *err, int errlen) {
    if (!strcmp(opt->preset, "seed"))
        *cfg = model_config_default();
    else if (!strcmp(opt->preset, "tiny"))
        *cfg = model_config_tiny();
    else
        *cfg = preset_small();
    // small and tiny take the data's vocabulary and length; seed keeps MODEL.md's V and T
    // (the data must fit in V: checked below), so `--preset seed` is the reference model.
    int is_seed = !strcmp(opt->preset, "seed");
    if (data_vocab > 0 && !is_seed)
        cfg->vocab_size = data_vocab;
    if (data_seq_len > 0 && !is_seed)
        cfg->seq_len = data_seq_len;
    for (int i = 0; i < opt->n_overrides; i++) {
        char why[256];
        const ModelOverride *o = &opt->overrides[i];
        if (model_config_set(cfg, o->name, o->value, why, sizeof(why)) != 0)
            return fail(err, errlen, "--%s: '%s': %s", o->name, o->value, why);
    }
    if (data_vocab > 0 && cfg->vocab_size < data_vocab)
        return fail(err, errlen, "--vocab_size: %d is smaller than the data's vocabulary (%d)",
                    cfg->vocab_size, data_vocab);
    char why[256];
    if (model_config_validate(cfg, why, sizeof(why)) != 0)
        return fail(err, errlen, "model configuration (preset %s and flags): %s", opt->preset, why);
    return 0;
}

void options_print_help(FILE *out) {
    Options d;
    options_defaults(&d);
    fprintf(out, "usage: hspmn_dist [train|eval|sample|bench] [--flag value | --flag=value ...]\n"
                 "  train (the default) trains and checkpoints; eval scores the held-out data\n"
                 "  with a checkpoint; sample generates from a checkpoint (route=threshold);\n"
                 "  bench times training steps on random tokens (docs/PERFORMANCE.md).\n\n");
    fprintf(out, "model (MODEL.md entries; applied on top of the preset and the data's V, T):\n");
    fprintf(out, "  --%-20s %s\n", "preset",
            "small|tiny|seed (default small: L2 H64 nh2 nkv1 "
            "S1024 R16 K8 rho0.5, V and T from the data)");
    ModelConfig seed = model_config_default();
    for (int i = 0; model_config_names[i]; i++) {
        char value[64];
        model_config_get(&seed, model_config_names[i], value, sizeof(value));
        fprintf(out, "  --%-20s seed default %s\n", model_config_names[i], value);
    }
    fprintf(out, "\ntraining:\n");
    fprintf(out, "  --%-20s %d  sequences per rank per micro-step\n", "micro_batch", d.micro_batch);
    fprintf(out, "  --%-20s %d  global sequences per step (= micro_batch x ranks x accum)\n",
            "batch", d.batch);
    fprintf(out, "  --%-20s %d\n", "steps", d.steps);
    fprintf(out, "  --%-20s %g  peak learning rate\n", "lr", d.lr);
    fprintf(out, "  --%-20s %d  linear warm-up steps\n", "warmup", d.warmup);
    fprintf(out, "  --%-20s %g  cosine decay floor, fraction of lr\n", "min_lr_frac",
            d.min_lr_frac);
    fprintf(out, "  --%-20s %g\n", "weight_decay", d.weight_decay);
    fprintf(out, "  --%-20s %g  global grad-norm clip (0 = off)\n", "grad_clip", d.grad_clip);
    fprintf(out, "  --%-20s %g  lr multiplier of the slot values\n", "slot_value_lr_mult",
            d.slot_value_lr_mult);
    fprintf(out, "  --%-20s %llu\n", "seed", (unsigned long long)d.seed);
    fprintf(out, "\ndata and run directory:\n");
    fprintf(out, "  --%-20s %s  tasks|mqar|facts|text:PATH|bin:GLOB|h5:PATH:/dataset\n", "data",
            d.data);
    fprintf(out, "  --%-20s runs/<timestamp>\n", "run_dir");
    fprintf(out, "  --%-20s %d  steps between checkpoints (0 = only at the end)\n", "ckpt_every",
            d.ckpt_every);
    fprintf(out, "  --%-20s %d  checkpoints kept (0 = all)\n", "keep", d.keep);
    fprintf(out, "  --%-20s %s  auto (newest in run_dir) | none | PATH\n", "resume", d.resume);
    fprintf(out, "  --%-20s %d  steps between evals (0 = only at the end)\n", "eval_every",
            d.eval_every);
    fprintf(out, "  --%-20s %d  held-out batches per eval\n", "eval_batches", d.eval_batches);
    fprintf(out, "  --%-20s %d  steps between progress lines\n", "log_every", d.log_every);
    fprintf(out,
            "  --%-20s %g  seconds without progress (a step, an eval, a checkpoint) before the "
            "job aborts on every rank: a dead or hung peer otherwise hangs the job; 0 = off\n",
            "step_timeout", d.step_timeout);
    fprintf(out, "\nhardware:\n");
    fprintf(out, "  --%-20s cuda when a GPU is visible, else cpu  (cpu|cuda)\n", "device");
    fprintf(out, "  --%-20s nccl on cuda, mpi on cpu  (mpi|nccl)\n", "comm");
    fprintf(out, "  --%-20s $OMP_NUM_THREADS, else cores / ranks on the node\n", "threads");
    fprintf(out,
            "  --%-20s bf16 on cuda, fp32 on cpu  tensor work on cuda: fp32|tf32 (GEMMs)|bf16 "
            "(GEMMs, attention, top-K search: bf16 products, fp32 accumulation and master "
            "weights; fastest); the cpu is always fp32\n",
            "matmul");
    fprintf(out,
            "  --%-20s bf16 with bf16 matmuls, else fp32  how the activations the backward reads "
            "are kept between the forward and the backward: bf16 halves them (saves about 1.2 GB "
            "at the seed shape, micro_batch 4; the layer at work stays fp32, the forward and "
            "the loss are unchanged) (fp32|bf16)\n",
            "activations");
    fprintf(out,
            "  --%-20s %d  1: the backward fetches the slot rows each token read again instead "
            "of keeping them: the key rows, and with several ranks the value rows received (one "
            "rank reads its value rows in its table and keeps none). Saves (L-1) N K R floats "
            "with one rank (112 MB at the seed shape, micro_batch 4), (L-1) N K (R+H) with "
            "several (2 GB), for one more gather (and row exchange) a layer\n",
            "refetch_slot_rows", d.refetch_slot_rows);
    fprintf(out,
            "  --%-20s %d  1: the backward recomputes the two RMSNorms, the conv, GELU and the "
            "query gather of each layer instead of keeping their outputs (saves (L-1) N (3H + mH "
            "+ rho H) floats: 1.2 GB at the seed shape, micro_batch 4)\n",
            "recompute_elementwise", d.recompute_elementwise);
    fprintf(out, "\nsample:\n");
    fprintf(out, "  --%-20s text prompt (byte data)\n", "prompt");
    fprintf(out, "  --%-20s token ids, e.g. 1,2,3\n", "prompt_ids");
    fprintf(out, "  --%-20s %g  (0 = greedy)\n", "temperature", d.temperature);
    fprintf(out, "  --%-20s %d  sample among the k likeliest tokens (0 = all)\n", "sample_top_k",
            d.sample_top_k);
    fprintf(out, "  --%-20s %d\n", "max_new_tokens", d.max_new_tokens);
    fprintf(out, "\nbench (random tokens, no data files; micro_batch sequences per rank):\n");
    fprintf(out, "  --%-20s 10  timed training steps\n", "bench_steps");
    fprintf(out, "  --%-20s 3  untimed steps first\n", "bench_warmup");
    fprintf(out, "  --%-20s off  also run attn=dense, ffn=dense and the sequence lengths\n",
            "bench_sweep");
    fprintf(out, "  --%-20s 16384  tokens per rank per step in the sweep's length rows\n",
            "bench_tokens");
    fprintf(out, "  --%-20s 1024,2048,4096,8192,16384  the sweep's sequence lengths\n",
            "bench_seq_lens");
    fprintf(out, "  --%-20s 800  peak TFLOP/s per device for MFU\n", "peak_tflops");
    fprintf(out,
            "  --%-20s 0  1: time each main op alone at the model's shapes against its ceiling "
            "(--peak_tflops or --peak_gbps) instead of training steps\n",
            "bench_kernels");
    fprintf(out, "  --%-20s 3350  memory bandwidth ceiling, GB/s per device (--bench_kernels)\n",
            "peak_gbps");
    fprintf(out, "\n  --help               this text\n");
}
