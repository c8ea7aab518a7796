// Held-out evaluation: loss and per-task accuracy on split 1 of the data source.
#pragma once
#include <stdint.h>

#include "io/data.h"
#include "launch/lib/session.h"

typedef struct EvalResult {
    double loss;                       // mean cross-entropy over scored tokens
    double accuracy[DATA_N_TASKS + 1]; // by TaskKind; NaN where a task had no positions
    double accuracy_all;               // over every scored position
    int64_t tokens;                    // scored tokens
} EvalResult;

// n_batches global batches of micro_batch x world sequences (the model's B per rank), the
// same sequences whatever the rank count. Collective.
void eval_run(Session *s, int n_batches, EvalResult *out);

// "eval step 120: loss 1.234 | acc mqar 0.812 facts 0.433 | all 0.622" (rank 0).
void eval_print(const Session *s, const EvalResult *r, int64_t step);

// `hspmn_dist eval`: load the checkpoint, evaluate, print. Returns the exit code.
int eval_main(Session *s);
