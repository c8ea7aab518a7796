// One micro-batch of sequences on the host and on the backend.
#pragma once
#include <stdint.h>

#include "io/data.h"
#include "kernels/ops.h"

typedef struct Batch {
    int B, T;
    int64_t first;         // global index of the first sequence (io/data.h)
    int32_t *tokens_host;  // [B, T]
    int32_t *targets_host; // [B, T], -1 = no loss
    int32_t *tokens;       // [B, T] backend buffer
    int32_t *targets;      // [B, T] backend buffer
} Batch;

void batch_alloc(Batch *b, const Ops *ops, int B, int T);
void batch_free(Batch *b, const Ops *ops);
// Read sequences first .. first + B - 1 of `split` into the host buffers (fatal error with
// the data source's message on failure).
void batch_read(Batch *b, const DataSource *ds, int64_t first, int split);
// Copy the host buffers to the backend.
void batch_upload(Batch *b, const Ops *ops);
// Positions with a target (>= 0): the tokens the loss is a mean over.
int64_t batch_scored_tokens(const Batch *b);
