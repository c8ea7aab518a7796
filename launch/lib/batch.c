// Micro-batches: data source -> host buffers -> backend buffers.
#include "launch/lib/batch.h"

#include <stdlib.h>

#include "kernels/error.h"

void batch_alloc(Batch *b, const Ops *ops, int B, int T) {
    size_t n = (size_t)B * (size_t)T;
    b->B = B;
    b->T = T;
    b->first = -1;
    b->tokens_host = hs_malloc(n * sizeof(int32_t));
    b->targets_host = hs_malloc(n * sizeof(int32_t));
    b->tokens = ops->alloc(n * sizeof(int32_t));
    b->targets = ops->alloc(n * sizeof(int32_t));
}

void batch_free(Batch *b, const Ops *ops) {
    free(b->tokens_host);
    free(b->targets_host);
    ops->free(b->tokens);
    ops->free(b->targets);
}

void batch_read(Batch *b, const DataSource *ds, int64_t first, int split) {
    char err[1024];
    if (data_batch(ds, first, b->B, split, b->tokens_host, b->targets_host, err, sizeof(err)) != 0)
        hs_fatal("data %s: reading sequences %lld..%lld of the %s split: %s", ds->spec,
                 (long long)first, (long long)(first + b->B - 1), split ? "eval" : "train", err);
    b->first = first;
}

void batch_upload(Batch *b, const Ops *ops) {
    size_t bytes = (size_t)b->B * (size_t)b->T * sizeof(int32_t);
    ops->copy_from_host(b->tokens, b->tokens_host, bytes);
    ops->copy_from_host(b->targets, b->targets_host, bytes);
}

int64_t batch_scored_tokens(const Batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < (int64_t)b->B * b->T; i++)
        n += b->targets_host[i] >= 0;
    return n;
}
