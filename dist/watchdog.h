// A watchdog for hung jobs. A rank whose peer died or hung waits forever inside a collective
// (MPI or NCCL): nothing returns an error, the job just stops making progress and burns its
// allocation. The trainer calls watchdog_beat at every step (and after evaluation and
// checkpoints); a thread on each rank checks the time since the last beat and, past the
// timeout, prints what was last seen and aborts the whole job (MPI_Abort), so every rank exits
// non-zero. Checkpoints already written stay complete (they are renamed into place only
// when whole), so the run resumes from the last one.
#pragma once
#include <stdint.h>

typedef struct Watchdog Watchdog;

// Starts the watchdog thread of this rank; timeout_s <= 0 gives NULL (no watchdog). Every
// other function accepts NULL and does nothing.
Watchdog *watchdog_start(double timeout_s, int rank);
// Progress: `what` (a string literal: "step", "eval", "checkpoint") and the step number.
void watchdog_beat(Watchdog *w, const char *what, int64_t step);
// Stops and joins the thread.
void watchdog_stop(Watchdog *w);
