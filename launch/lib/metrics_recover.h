// A metrics.h5 left behind by a crashed run is still marked "open for SWMR write", and HDF5
// refuses to reopen it for appending. Before resuming, rank 0 moves such a file aside and
// carries its rows up to the resume step over into a fresh metrics.h5.
#pragma once
#include <stdint.h>

#include "io/metrics.h"

// Whether <run_dir>/metrics.h5 exists but cannot be reopened read-write; if so it is renamed
// to metrics.h5.crashed and 1 is returned. Rank 0 only.
int metrics_set_aside_if_crashed(const char *run_dir);

// Copy the rows with step <= resume_step of <run_dir>/metrics.h5.crashed into m (opened
// fresh), for the names m declares. Returns the rows copied. Rank 0 only.
int64_t metrics_replay_crashed(Metrics *m, const char *run_dir, int64_t resume_step,
                               const char *const *scalars, const char *const *per_layer,
                               int n_layers);
