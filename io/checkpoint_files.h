// File-system side of checkpoints: run dir, durability (fsync), atomic publish by rename,
// keeping the newest K, finding the latest. Used by checkpoint.c (rank 0 only).
#pragma once
#include <stdint.h>

// mkdir run_dir if it does not exist (one level; its parent must exist). Fatal on failure.
void checkpoint_make_dir(const char *run_dir);
// fsync a closed file so its bytes are on disk before it is published. Fatal on failure.
void checkpoint_fsync_file(const char *path);
// rename tmp_path to final_path and fsync run_dir so the rename itself is durable.
void checkpoint_publish(const char *tmp_path, const char *final_path, const char *run_dir);
// Delete all but the newest keep_last complete checkpoints of run_dir (keep_last <= 0: none),
// never the one of step `just_written` nor any newer one: those belong to another run and
// are not ours to delete.
void checkpoint_prune(const char *run_dir, int keep_last, int64_t just_written);
// Parse "ckpt_<step>.h5" exactly; returns the step, or -1 for any other name.
int64_t checkpoint_step_of_name(const char *name);
