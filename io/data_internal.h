// Shared between the data source files of io/ (not part of the public interface).
#pragma once
#include <stdint.h>

#include "io/data.h"

// Built-in tasks (data_tasks.c): fill tokens [T] and targets [T] of sequence g.
void data_tasks_mqar(const DataSource *ds, int64_t g, int split, int32_t *tokens, int32_t *targets);
void data_tasks_facts(const DataSource *ds, int64_t g, int split, int32_t *tokens,
                      int32_t *targets);
// The object token of fact (subject, relation): a pure function of the seed.
int32_t data_facts_object(const DataSource *ds, int subject, int relation);

// Token streams (data_stream.c). Open the files of `ds->spec` after its prefix is parsed.
int data_stream_open_text(DataSource *ds, const char *path, char *err, int errlen);
int data_stream_open_bin(DataSource *ds, const char *patterns, char *err, int errlen);
int data_stream_open_hdf5(DataSource *ds, const char *path, const char *dataset, char *err,
                          int errlen);
// After the files are open: compute the splits, check one sequence fits in each.
int data_stream_finish(DataSource *ds, char *err, int errlen);
void data_stream_close(DataSource *ds);
// Read n tokens starting at stream index `first` into out [n], checking each < vocab_size.
int data_stream_read(const DataSource *ds, int64_t first, int64_t n, int32_t *out, char *err,
                     int errlen);
