// hspmn_dist bench: times full training steps (zero grad, forward, backward, gradient
// all-reduce, AdamW) on random tokens and prints tokens/s, MFU, peak memory and where the
// step time goes, phase by phase; --bench_sweep repeats it over a list of variants.
// docs/PERFORMANCE.md explains the output.
#pragma once
#include "launch/lib/session.h"

// Runs the bench mode on an open session (backend and communicator ready); rank 0 prints.
// Returns the process exit code.
int bench_main(Session *s);
