// Data sources: parse the spec, dispatch sequence reads, batch helpers and accuracy.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/data_internal.h"

static int has_suffix(const char *s, size_t len, const char *suffix) {
    size_t n = strlen(suffix);
    return len >= n && strncmp(s + len - n, suffix, n) == 0;
}

// "PATH.h5:/DATASET" (or .hdf5): split at the ":/" that follows the extension.
static int split_hdf5_spec(const char *spec, char *path, size_t path_len, const char **dataset) {
    const char *colon = strstr(spec, ":/");
    while (colon) {
        size_t len = (size_t)(colon - spec);
        if ((has_suffix(spec, len, ".h5") || has_suffix(spec, len, ".hdf5")) && len < path_len) {
            memcpy(path, spec, len);
            path[len] = '\0';
            *dataset = colon + 1;
            return 1;
        }
        colon = strstr(colon + 1, ":/");
    }
    return 0;
}

static int check_task_settings(const DataSource *ds, char *err, int errlen) {
    const TaskSettings *ts = &ds->tasks;
    if (ts->n_keys < 1 || ts->n_values < 1 || ts->n_subjects < 1 || ts->n_relations < 1 ||
        ts->n_objects < 1 || ts->n_pairs < 1) {
        snprintf(err, (size_t)errlen, "data %s: every task size must be >= 1", ds->spec);
        return -1;
    }
    if (ts->n_pairs > ts->n_keys) {
        snprintf(err, (size_t)errlen, "data %s: n_pairs %d exceeds the %d key tokens", ds->spec,
                 ts->n_pairs, ts->n_keys);
        return -1;
    }
    if (ds->kind != DATA_FACTS && 2 * ts->n_pairs > ds->T - 2) {
        snprintf(err, (size_t)errlen,
                 "data %s: seq_len %d is too short for %d key-value pairs and a query (needs "
                 "2 * n_pairs + 2 = %d)",
                 ds->spec, ds->T, ts->n_pairs, 2 * ts->n_pairs + 2);
        return -1;
    }
    if (ds->kind != DATA_MQAR && ds->T < 4) {
        snprintf(err, (size_t)errlen, "data %s: seq_len %d is too short for a fact query (4)",
                 ds->spec, ds->T);
        return -1;
    }
    int need = data_tasks_min_vocab(ts);
    if (ds->vocab_size < need) {
        snprintf(err, (size_t)errlen,
                 "data %s: the built-in tasks need vocab_size >= %d, the model has %d", ds->spec,
                 need, ds->vocab_size);
        return -1;
    }
    return 0;
}

static int open_stream(DataSource *ds, const char *spec, char *err, int errlen) {
    char path[1024];
    const char *dataset = NULL;
    int status;
    size_t len = strlen(spec);
    if (strncmp(spec, "text:", 5) == 0) {
        ds->kind = DATA_TEXT;
        status = data_stream_open_text(ds, spec + 5, err, errlen);
    } else if (strncmp(spec, "bin:", 4) == 0) {
        ds->kind = DATA_BIN;
        status = data_stream_open_bin(ds, spec + 4, err, errlen);
    } else if (strncmp(spec, "h5:", 3) == 0 ||
               split_hdf5_spec(spec, path, sizeof(path), &dataset)) {
        ds->kind = DATA_HDF5;
        if (!dataset && !split_hdf5_spec(spec + 3, path, sizeof(path), &dataset)) {
            snprintf(err, (size_t)errlen, "data %s: expected h5:PATH.h5:/DATASET", spec);
            return -1;
        }
        status = data_stream_open_hdf5(ds, path, dataset, err, errlen);
    } else if (has_suffix(spec, len, ".bin") || strpbrk(spec, "*?[")) {
        ds->kind = DATA_BIN;
        status = data_stream_open_bin(ds, spec, err, errlen);
    } else {
        ds->kind = DATA_TEXT;
        status = data_stream_open_text(ds, spec, err, errlen);
    }
    if (status)
        return status;
    if (ds->kind == DATA_TEXT && ds->vocab_size < 256) {
        snprintf(err, (size_t)errlen,
                 "data %s: text is read as bytes and needs vocab_size 256, the model has %d", spec,
                 ds->vocab_size);
        return -1;
    }
    return data_stream_finish(ds, err, errlen);
}

int data_open(DataSource *ds, const char *spec, int T, int vocab_size, uint64_t seed,
              const TaskSettings *tasks, char *err, int errlen) {
    memset(ds, 0, sizeof(*ds));
    snprintf(ds->spec, sizeof(ds->spec), "%s", spec);
    ds->T = T;
    ds->vocab_size = vocab_size;
    ds->seed = seed;
    ds->tasks = tasks ? *tasks : data_task_settings_default();
    if (T < 1) {
        snprintf(err, (size_t)errlen, "data %s: seq_len must be >= 1 (got %d)", spec, T);
        return -1;
    }
    int status;
    if (strcmp(spec, "tasks") == 0 || strcmp(spec, "mqar") == 0 || strcmp(spec, "facts") == 0) {
        ds->kind = spec[0] == 't' ? DATA_TASKS : spec[0] == 'm' ? DATA_MQAR : DATA_FACTS;
        status = check_task_settings(ds, err, errlen);
    } else {
        status = open_stream(ds, spec, err, errlen);
    }
    if (status)
        data_close(ds);
    return status;
}

void data_close(DataSource *ds) {
    data_stream_close(ds);
}

TaskKind data_task_of(const DataSource *ds, int64_t g) {
    switch (ds->kind) {
    case DATA_TASKS:
        return g % 2 == 0 ? TASK_MQAR : TASK_FACTS;
    case DATA_MQAR:
        return TASK_MQAR;
    case DATA_FACTS:
        return TASK_FACTS;
    default:
        return TASK_NONE;
    }
}

const char *data_task_name(TaskKind task) {
    return task == TASK_MQAR ? "mqar" : task == TASK_FACTS ? "facts" : "none";
}

int data_sequence(const DataSource *ds, int64_t g, int split, int32_t *tokens, int32_t *targets,
                  char *err, int errlen) {
    if (g < 0 || split < 0 || split > 1) {
        snprintf(err, (size_t)errlen, "data %s: bad sequence index %lld or split %d", ds->spec,
                 (long long)g, split);
        return -1;
    }
    TaskKind task = data_task_of(ds, g);
    if (task == TASK_MQAR) {
        data_tasks_mqar(ds, g, split, tokens, targets);
        return 0;
    }
    if (task == TASK_FACTS) {
        data_tasks_facts(ds, g, split, tokens, targets);
        return 0;
    }
    int T = ds->T;
    int64_t range = ds->split_len[split] - T - 1; // >= 1, checked at open
    int64_t start =
        ds->split_begin[split] + (int64_t)(((uint64_t)g * (uint64_t)T) % (uint64_t)range);
    // tokens = stream[start, start + T), targets = stream[start + 1, start + T + 1)
    int32_t last;
    if (data_stream_read(ds, start, T, tokens, err, errlen) ||
        data_stream_read(ds, start + T, 1, &last, err, errlen))
        return -1;
    for (int t = 0; t + 1 < T; t++)
        targets[t] = tokens[t + 1];
    targets[T - 1] = last;
    return 0;
}

int data_batch(const DataSource *ds, int64_t first_g, int B, int split, int32_t *tokens,
               int32_t *targets, char *err, int errlen) {
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * (size_t)ds->T;
        if (data_sequence(ds, first_g + b, split, tokens + row, targets + row, err, errlen))
            return -1;
    }
    return 0;
}

int64_t data_batch_first_index(int64_t cursor, int micro_step, int rank, int world,
                               int micro_batch) {
    return cursor + ((int64_t)micro_step * world + rank) * (int64_t)micro_batch;
}

void data_accuracy_add(TaskAccuracy *acc, const DataSource *ds, int64_t g,
                       const int32_t *predictions, const int32_t *targets, int T) {
    TaskKind task = data_task_of(ds, g);
    for (int t = 0; t < T; t++) {
        if (targets[t] < 0)
            continue;
        acc->total[task]++;
        acc->correct[task] += predictions[t] == targets[t];
    }
}

double data_accuracy(const TaskAccuracy *acc, TaskKind task) {
    if (acc->total[task] == 0)
        return NAN;
    return (double)acc->correct[task] / (double)acc->total[task];
}
