// What every mode of hspmn_dist sets up before its loop: ranks, backend, communicator,
// threads, run directory, the checkpoint to start from, the model configuration, the model
// and the data source.
#pragma once
#include <stdint.h>

#include "dist/comm.h"
#include "io/checkpoint.h"
#include "io/data.h"
#include "kernels/ops.h"
#include "launch/lib/options.h"
#include "model/config.h"
#include "model/model.h"

typedef struct Session {
    Options opt;
    CommInfo info;
    const Ops *ops;
    CommKind comm_kind;
    Comm *comm;
    int threads; // OpenMP threads per rank (1 without OpenMP)

    char run_dir[OPTIONS_PATH_MAX];
    // The checkpoint to start from ("" = a fresh start) and its step (-1 if none).
    char ckpt_path[OPTIONS_PATH_MAX];
    int64_t ckpt_step;

    ModelConfig cfg;
    Model model;
    DataSource data;
    int model_built, data_opened; // what session_close must free
} Session;

// Exit codes. A usage error (bad flag, impossible combination) is reported on rank 0 and
// every rank leaves with OPTIONS_EXIT_USAGE; everything else goes through hs_fatal.
//
// session_usage_error prints "hspmn_dist: error: <message>" on rank 0, shuts MPI down and
// exits with OPTIONS_EXIT_USAGE. Call it on every rank at the same point.
// Refuse (usage error naming the entry) a configuration the backend's kernels cannot run,
// before anything is allocated (Ops' max_seq_len, max_head_dim, max_top_k, max_ptr_dim).
void session_check_backend_limits(const Session *s, const ModelConfig *c);

_Noreturn void session_usage_error(const Session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Pick device, comm and threads, create the communicator. opt is parsed already.
void session_open_backend(Session *s);

// Settle the run directory (default runs/<timestamp>, agreed by all ranks) and the
// checkpoint to start from (--resume auto|none|PATH). require_ckpt: eval and sample
// cannot run without one.
void session_resolve_run(Session *s, int require_ckpt);

// Model configuration: from the flags (train), or from the checkpoint (eval, sample).
void session_resolve_config(Session *s, int from_checkpoint);

// Build the model for micro-batches of B sequences (T = cfg.seq_len).
void session_build_model(Session *s, int B);
// The model's memory options (model.h ModelOptions) as --refetch_slot_rows and
// --recompute_elementwise ask.
ModelOptions session_model_options(const Session *s);

// Load s->ckpt_path into the model's parameters (every rank its own rows). m_host, v_host:
// host [layout.n_local] buffers for the AdamW moments, or NULL to discard them. state and
// optim_step may be NULL. A bad file is a fatal error naming it.
void session_load_checkpoint(Session *s, float *m_host, float *v_host, CheckpointState *state,
                             int64_t *optim_step);

// Open the data source with cfg's T and V and `seed` (the run's seed drives the tasks).
void session_open_data(Session *s, uint64_t seed);

// Print the configuration table (rank 0).
void session_print_config(const Session *s, int accum_steps);

void session_close(Session *s);

// Milliseconds of wall-clock time (monotonic).
double session_now_seconds(void);
