// `hspmn_dist train`: the training loop (gradient accumulation, data-parallel dense grads,
// sharded slot tables, AdamW, checkpoints, periodic eval, metrics).
#pragma once

#include "launch/lib/session.h"

// Returns the process exit code.
int train_main(Session *s);
