// HDF5 checkpoints: one file per checkpoint, written collectively with parallel HDF5, read
// back at any rank count (each rank selects its own rows of the global datasets).
//
// File schema (every dataset has the GLOBAL shape, whatever the number of ranks):
//   /model/...                 every parameter at its MODEL.md path (fp32). The fp32 host
//                              parameters ARE the master weights of the CPU backend.
//   /optim/m/model/...         AdamW first moment, same paths prefixed by /optim/m
//   /optim/v/model/...         AdamW second moment, prefixed by /optim/v
//   /optim/master/model/...    only when the caller passes master weights (a backend whose
//                              params are bf16 stores its fp32 masters here)
//   /optim/step                int64 scalar
//   /state/step, /state/data_cursor, /state/seed, /state/rng   int64 / uint64 scalars
//   /config                    group with one string attribute per model_config_names
//                              entry, plus the caller's training settings (key -> value)
//   /  attribute format_version = 1 (int)
//
// Crash safety: the file is written as ckpt_<step>.h5.tmp in the run dir, closed, fsync'd,
// and renamed by rank 0 to ckpt_<step>.h5 only after a barrier shows every rank is done;
// then older checkpoints beyond the last `keep_last` are deleted. A crash mid-write leaves
// only a .tmp file, which checkpoint_find_latest ignores.
//
// Buffers are HOST buffers of layout->n_local floats laid out by model/params.h; the caller
// copies them from the device first.
#pragma once
#include <mpi.h>
#include <stdint.h>

#include "model/config.h"
#include "model/params.h"

#define CHECKPOINT_FORMAT_VERSION 1

// Run state that is not a tensor.
typedef struct CheckpointState {
    int64_t step;        // optimizer steps completed
    int64_t data_cursor; // global sequences consumed (io/data.h)
    uint64_t seed;       // run seed
    uint64_t rng;        // any extra RNG state of the caller (0 if none)
} CheckpointState;

// One training setting stored as a /config attribute (not checked on load).
typedef struct CheckpointSetting {
    const char *key;
    const char *value;
} CheckpointSetting;

// What to save. params, m, v: host [layout->n_local]; master: host [n_local] or NULL.
typedef struct CheckpointData {
    const ModelConfig *cfg;
    const ParamLayout *layout;
    const float *params;
    const float *m;
    const float *v;
    const float *master;
    int64_t optim_step; // AdamW step count (/optim/step)
    CheckpointState state;
    const CheckpointSetting *settings; // [n_settings], may be NULL
    int n_settings;
} CheckpointData;

// Collective over `comm` (every rank calls it with its own layout and buffers). Writes
// <run_dir>/ckpt_<state.step>.h5 (creating run_dir if missing), keeps the newest
// `keep_last` checkpoints (<= 0: keep all). Any HDF5, MPI or file error is fatal with
// file:line and the path. If path_out is not NULL, the final path is copied there.
void checkpoint_save(MPI_Comm comm, const char *run_dir, const CheckpointData *data, int keep_last,
                     char *path_out, int path_len);

// Collective over `comm`. Opens `path` read-only, checks format_version and that every
// model entry of /config equals `cfg` (a mismatch names the entry, both values and the
// file), then reads this rank's rows of every tensor of `layout` into params, m, v (host
// [n_local]); master may be NULL (not read) or a buffer to fill from /optim/master (a
// missing /optim/master is then an error). state and optim_step may be NULL.
// Returns 0, or -1 with a message in err on every rank (unopenable / truncated file,
// missing dataset or wrong shape naming the path, config mismatch).
int checkpoint_load(MPI_Comm comm, const char *path, const ModelConfig *cfg,
                    const ParamLayout *layout, float *params, float *m, float *v, float *master,
                    CheckpointState *state, int64_t *optim_step, char *err, int errlen);

// Not collective (serial HDF5 open): fill *cfg from the /config attributes of `path`,
// starting from model_config_default() for entries the file lacks. For eval / sample with
// --ckpt. Returns 0, or -1 with a message.
int checkpoint_read_config(const char *path, ModelConfig *cfg, char *err, int errlen);
// Not collective: one training setting saved in /config (e.g. "data"). 0 and the value in
// out, or -1 when the file or the setting is missing.
int checkpoint_read_setting(const char *path, const char *key, char *out, int outlen);

// Newest complete checkpoint in run_dir: the ckpt_<step>.h5 with the largest step
// (*.tmp and other names ignored). Writes its path to path_out and returns the step, or
// returns -1 when there is none (or run_dir does not exist). For --resume auto.
int64_t checkpoint_find_latest(const char *run_dir, char *path_out, int path_len);
