// hspmn_dist's command line: `hspmn_dist [train|eval|sample] [--flag value ...]`.
//
// Every rank parses the same argv the same way, so every rank reaches the same verdict
// (and the same exit code) without talking to the others.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "model/config.h"

typedef enum { MODE_TRAIN = 0, MODE_EVAL, MODE_SAMPLE, MODE_BENCH } RunMode;

// Exit code for a bad command line (the shell convention for usage errors).
#define OPTIONS_EXIT_USAGE 2

// A model entry given on the command line, applied after the preset and the data source's
// vocabulary and sequence length, so flags win whatever their order.
typedef struct ModelOverride {
    const char *name;  // MODEL.md name, e.g. "d_model"
    const char *value; // as typed
} ModelOverride;

#define OPTIONS_MAX_OVERRIDES 32
#define OPTIONS_PATH_MAX      1024

typedef struct Options {
    RunMode mode;
    int help; // --help: print the flags and leave

    // model
    char preset[16]; // small | tiny | seed
    ModelOverride overrides[OPTIONS_MAX_OVERRIDES];
    int n_overrides;

    // batch and schedule
    int micro_batch; // sequences per rank per micro-step
    int batch;       // global sequences per optimizer step
    int steps;
    double lr;
    int warmup;         // linear warm-up steps
    double min_lr_frac; // cosine decays to lr * min_lr_frac
    double weight_decay;
    double grad_clip; // global grad-norm clip; 0 = off
    double slot_value_lr_mult;
    uint64_t seed;

    // data and run directory
    char data[OPTIONS_PATH_MAX];    // tasks | mqar | facts | text:PATH | bin:GLOB | h5:PATH:/ds
    int data_given;                 // 1: --data was typed (else a resumed run keeps its own)
    char run_dir[OPTIONS_PATH_MAX]; // "" = runs/<timestamp>
    int ckpt_every;                 // 0 = only at the end
    int keep;                       // checkpoints kept (0 = all)
    char resume[OPTIONS_PATH_MAX];  // auto | none | PATH
    int eval_every;                 // 0 = only at the end
    int eval_batches;
    int log_every;
    double step_timeout; // seconds without progress before the job aborts (0: no watchdog)

    // hardware
    char device[8]; // cpu | cuda | "" (choose)
    char comm[8];   // mpi | nccl | "" (choose)
    char matmul[8]; // fp32 | tf32 | bf16 (ops.h MatmulPrecision); "" until the backend is chosen
    char activations[8];       // fp32 | bf16 (ModelOptions.bf16_activations); "" until --matmul is
                               // resolved
    int threads;               // OpenMP threads per rank; 0 = choose
    int refetch_slot_rows;     // 1: the backward fetches the slot rows again (ModelOptions)
    int recompute_elementwise; // 1: the backward recomputes norms, conv, GELU (ModelOptions)

    // sample
    char prompt[OPTIONS_PATH_MAX];     // text (byte data)
    char prompt_ids[OPTIONS_PATH_MAX]; // "1,2,3"
    double temperature;
    int sample_top_k; // 0 = the whole vocabulary
    int max_new_tokens;

    // bench (launch/lib/bench.h). 0 / "" = the bench's default, so options_defaults need not
    // know them: steps 10, warmup 3, tokens 16384, peak 800 TFLOP/s, lengths
    // 1024,2048,4096,8192,16384.
    int bench_steps;          // timed steps
    int bench_warmup;         // untimed steps first
    int bench_warmup_given;   // 1: --bench_warmup was typed (so 0 means none, not default)
    int bench_sweep;          // 1: run the list of variants
    int bench_tokens;         // tokens per rank per step in the sweep's sequence-length rows
    double peak_tflops;       // per-device peak for MFU
    char bench_seq_lens[256]; // the sweep's sequence lengths, comma-separated
    int bench_kernels;        // 1: time the main ops one by one instead (bench_kernels.h)
    double peak_gbps;         // per-device memory bandwidth ceiling, GB/s (0 = 3350)

    // testing only (not in --help): this rank SIGKILLs itself halfway through writing the
    // checkpoint of step debug_die_step, to prove a torn write leaves the last one intact.
    int debug_die_rank;
    int debug_die_step;
    // testing only (not in --help): this rank stops (sleeps for ever) at the start of step
    // debug_hang_step, as a hung GPU or peer would, to prove the watchdog ends the job.
    int debug_hang_rank;
    int debug_hang_step;
} Options;

// Fill `opt` with every default.
void options_defaults(Options *opt);

// Parse argv into opt. Returns 0 on success; on a bad flag or value writes a message naming
// the flag and the value into err and returns -1.
int options_parse(Options *opt, int argc, char **argv, char *err, int errlen);

// The model configuration: the preset, then the data's vocabulary and sequence length
// (data_vocab / data_seq_len; 0 = the source does not fix it), then the --flags.
// Returns 0, or -1 with a message in err.
int options_model_config(const Options *opt, int data_vocab, int data_seq_len, ModelConfig *cfg,
                         char *err, int errlen);

// --help text: every flag with its default.
void options_print_help(FILE *out);

// The mode as a word ("train", "eval", "sample").
const char *options_mode_name(RunMode mode);
