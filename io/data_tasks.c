// Built-in synthetic tasks, generated from (seed, g, split) alone so any rank can produce
// any sequence: multi-query associative recall and a memorised fact base.
#include <stdint.h>
#include <stdlib.h>

#include "io/data_internal.h"
#include "kernels/error.h"

// Token id layout (io/data.h): 0 pad, 1 query marker, then keys, values, subjects,
// relations, objects.
enum { TOKEN_PAD = 0, TOKEN_QUERY = 1, TOKEN_FIRST_FREE = 2 };

static int key_token(const TaskSettings *ts, int i) {
    (void)ts;
    return TOKEN_FIRST_FREE + i;
}
static int value_token(const TaskSettings *ts, int i) {
    return TOKEN_FIRST_FREE + ts->n_keys + i;
}
static int subject_token(const TaskSettings *ts, int i) {
    return TOKEN_FIRST_FREE + ts->n_keys + ts->n_values + i;
}
static int relation_token(const TaskSettings *ts, int i) {
    return subject_token(ts, ts->n_subjects) + i;
}
static int object_token(const TaskSettings *ts, int i) {
    return relation_token(ts, ts->n_relations) + i;
}

TaskSettings data_task_settings_default(void) {
    TaskSettings ts;
    // 8 pairs over 16 keys and 16 values: each key and value token is seen often enough
    // that a 2-layer small model starts recalling within the default run's few thousand
    // steps on a CPU (16 pairs over 64 keys stayed below 0.1 accuracy there).
    ts.n_keys = 16;
    ts.n_values = 16;
    ts.n_pairs = 8;
    ts.n_subjects = 24;
    ts.n_relations = 4;
    ts.n_objects = 48;
    return ts;
}

int data_tasks_min_vocab(const TaskSettings *ts) {
    return object_token(ts, ts->n_objects);
}

// A small splitmix64 stream: each sequence gets its own, keyed by everything that
// identifies it, so sequences do not depend on which rank or in which order they are made.
typedef struct TaskRng {
    uint64_t state;
} TaskRng;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(TaskRng *rng) {
    rng->state += 0x9E3779B97F4A7C15ull;
    return mix64(rng->state);
}

// Uniform integer in [0, n).
static int rng_below(TaskRng *rng, int n) {
    return (int)(rng_next(rng) % (uint64_t)n);
}

static double rng_uniform(TaskRng *rng) {
    return (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

static TaskRng task_rng(uint64_t seed, uint64_t task_tag, int split, int64_t g) {
    uint64_t h = mix64(seed ^ 0xD1B54A32D192ED03ull);
    h = mix64(h ^ task_tag);
    h = mix64(h ^ (uint64_t)split);
    h = mix64(h ^ (uint64_t)g);
    TaskRng rng = {h};
    return rng;
}

static void fill_empty(int32_t *tokens, int32_t *targets, int T) {
    for (int t = 0; t < T; t++) {
        tokens[t] = TOKEN_PAD;
        targets[t] = -1;
    }
}

// MQAR (Zoology): n_pairs distinct keys with random values, "k v k v ...", then queries
// "k v" of those keys; the target at a query key is its value. Which pair a query asks is
// drawn without replacement with probability proportional to 1 / distance (distance =
// query position - pair position), so near pairs are asked more often than far ones: a
// power law over distances, as in Zoology.
void data_tasks_mqar(const DataSource *ds, int64_t g, int split, int32_t *tokens,
                     int32_t *targets) {
    const TaskSettings *ts = &ds->tasks;
    int T = ds->T;
    TaskRng rng = task_rng(ds->seed, 1, split, g);
    fill_empty(tokens, targets, T);

    int *keys = hs_malloc(sizeof(int) * (size_t)ts->n_keys); // permutation prefix
    int *values = hs_malloc(sizeof(int) * (size_t)ts->n_pairs);
    int *asked = hs_calloc((size_t)ts->n_pairs, sizeof(int));
    double *weight = hs_malloc(sizeof(double) * (size_t)ts->n_pairs);
    for (int i = 0; i < ts->n_keys; i++)
        keys[i] = i;
    for (int i = 0; i < ts->n_pairs; i++) {
        int j = i + rng_below(&rng, ts->n_keys - i);
        int tmp = keys[i];
        keys[i] = keys[j];
        keys[j] = tmp;
        values[i] = rng_below(&rng, ts->n_values);
        tokens[2 * i] = key_token(ts, keys[i]);
        tokens[2 * i + 1] = value_token(ts, values[i]);
    }

    int remaining = ts->n_pairs;
    for (int pos = 2 * ts->n_pairs; pos + 1 < T && remaining > 0; pos += 2) {
        double total = 0.0;
        for (int i = 0; i < ts->n_pairs; i++) {
            weight[i] = asked[i] ? 0.0 : 1.0 / (double)(pos - 2 * i);
            total += weight[i];
        }
        double draw = rng_uniform(&rng) * total;
        int pick = -1;
        for (int i = 0; i < ts->n_pairs; i++) {
            if (asked[i])
                continue;
            pick = i; // the last unasked pair absorbs rounding at the top end
            if (draw < weight[i])
                break;
            draw -= weight[i];
        }
        asked[pick] = 1;
        remaining--;
        tokens[pos] = key_token(ts, keys[pick]);
        targets[pos] = value_token(ts, values[pick]);
        tokens[pos + 1] = value_token(ts, values[pick]);
    }
    free(keys);
    free(values);
    free(asked);
    free(weight);
}

int32_t data_facts_object(const DataSource *ds, int subject, int relation) {
    const TaskSettings *ts = &ds->tasks;
    uint64_t h = mix64(ds->seed ^ 0x5A17F4C7u);
    h = mix64(h ^ ((uint64_t)subject << 32 | (uint64_t)relation));
    return object_token(ts, (int)(h % (uint64_t)ts->n_objects));
}

// Facts: a fixed knowledge base (subject, relation) -> object drawn from the seed. A
// sequence mixes statements "s r o" (no target) and queries "? s r o" (target at r: the
// object). A query never asks a fact stated earlier in the same sequence, so answering
// needs the memorised base, not copying. The base is the same for both splits; the eval
// split draws other orders and contexts.
void data_tasks_facts(const DataSource *ds, int64_t g, int split, int32_t *tokens,
                      int32_t *targets) {
    const TaskSettings *ts = &ds->tasks;
    int T = ds->T;
    int n_facts = ts->n_subjects * ts->n_relations;
    TaskRng rng = task_rng(ds->seed, 2, split, g);
    fill_empty(tokens, targets, T);
    char *stated = hs_calloc((size_t)n_facts, 1);

    int pos = 0;
    while (pos + 4 <= T) {
        int fact = rng_below(&rng, n_facts);
        int subject = fact / ts->n_relations, relation = fact % ts->n_relations;
        int32_t object = data_facts_object(ds, subject, relation);
        if (rng_below(&rng, 3) == 0) { // one item in three is a statement
            stated[fact] = 1;
            tokens[pos++] = subject_token(ts, subject);
            tokens[pos++] = relation_token(ts, relation);
            tokens[pos++] = object;
        } else if (!stated[fact]) {
            tokens[pos++] = TOKEN_QUERY;
            tokens[pos++] = subject_token(ts, subject);
            targets[pos] = object;
            tokens[pos++] = relation_token(ts, relation);
            tokens[pos++] = object;
        }
    }
    free(stated);
}
