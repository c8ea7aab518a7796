// metrics.h5 in the run dir: training curves readable while the run writes them (SWMR).
//
// Written by rank 0 only (the other ranks never call these functions). The file holds
// one row per metrics_log call, aligned across datasets: row i of every dataset belongs to
// /step[i].
//   /<scalar>   float64 [n]      step (stored as float64 too), loss, ce, route_loss,
//                                entropy, lr, grad_norm, tok_per_s, and the caller's extra
//                                scalar names (e.g. "eval_acc_mqar")
//   /<layer>    float32 [n, L]   routed_fraction, slot_hit_fraction, slot_usage_entropy,
//                                and the caller's extra per-layer names
// A value not set for a row is NaN (e.g. eval accuracies between evals). Datasets are
// chunked and extendible; the file is created with the latest format and switched to SWMR
// write mode once every dataset exists, so readers can follow it with
// h5py.File(path, "r", libver="latest", swmr=True). Rows are flushed every `flush_every`
// logs and at close.
//
// Resume: opening with resume_step >= 0 reopens the existing file, drops the rows whose
// step is > resume_step (they were logged after the checkpoint being resumed) and
// appends after them, so the series has no duplicates.
#pragma once
#include <stdint.h>

typedef struct Metrics Metrics;

// The standard names, always present.
extern const char *const metrics_standard_scalars[];   // NULL-terminated, "step" first
extern const char *const metrics_standard_per_layer[]; // NULL-terminated

// Open <run_dir>/metrics.h5. extra_scalars [n_extra_scalars] and extra_per_layer
// [n_extra_per_layer] add names (may be NULL / 0). n_layers = L. resume_step < 0: start a
// new file (an existing one is replaced); >= 0: append as above (a missing file is
// created). Fatal error (naming the file) on any HDF5 failure.
Metrics *metrics_open(const char *run_dir, const char *const *extra_scalars, int n_extra_scalars,
                      const char *const *extra_per_layer, int n_extra_per_layer, int n_layers,
                      int64_t resume_step, int flush_every);

// Start a row for `step`: every value of the row starts as NaN.
void metrics_begin(Metrics *m, int64_t step);
// Set a scalar of the current row; an undeclared name is a fatal error naming it.
void metrics_set(Metrics *m, const char *name, double value);
// Set a per-layer metric of the current row: values [L].
void metrics_set_layers(Metrics *m, const char *name, const float *values);
// Append the row to every dataset (flushes every flush_every rows).
void metrics_commit(Metrics *m);
// Rows in the file (after resume truncation, plus rows committed since).
int64_t metrics_rows(const Metrics *m);
void metrics_flush(Metrics *m);
// Flush and close; m is freed.
void metrics_close(Metrics *m);

// Slot usage of one layer over a window: hist [n_slots] counts of hits per slot.
// hit_fraction = fraction of slots hit at least once; entropy = Shannon entropy (nats) of
// the usage distribution hist / sum(hist) (0 when there were no hits).
void metrics_slot_usage(const int64_t *hist, int64_t n_slots, double *hit_fraction,
                        double *entropy);
