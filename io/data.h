// Data sources: for a GLOBAL sequence index g, one sequence of T input tokens and T targets.
//
// Every source is addressed by the global sequence index, never by a per-rank file cursor,
// so the whole data position of a run is one int64 (global sequences consumed, the
// "cursor") and a run resumes on any number of ranks. Within one optimizer step with
// global batch G = accum * P * Bm sequences (P ranks, Bm sequences per micro-batch, accum
// micro-steps), rank r at micro-step a reads the Bm sequences
//
//     cursor + (a * P + r) * Bm  ...  cursor + (a * P + r) * Bm + Bm - 1
//
// and after the step cursor += G (data_batch_first_index below). With a fixed G, this is
// cursor = step * G, whatever P and accum are.
//
// Sources (chosen by the spec string of data_open):
//   "tasks"            built-in synthetic tasks, alternating mqar (even g) and facts (odd g)
//   "mqar"             multi-query associative recall only (Zoology style)
//   "facts"            a fixed knowledge base of (subject, relation) -> object facts
//   "text:PATH"        a file read as bytes (V = 256)
//   "bin:PATTERN[,PATTERN...]"  llm.c .bin shards (glob patterns, concatenated in sorted
//                      order): 256 int32 header, magic 20240520 (version 1) -> uint16
//                      tokens, 20240801 (version 7) -> uint32; header[2] = token count
//   "h5:PATH:/DATASET" a 1-D integer HDF5 dataset of tokens
// Without a prefix: "PATH.h5:/DATASET" (or .hdf5) is HDF5, a PATH ending in .bin or with a
// glob character is bin, any other PATH is text.
//
// Splits: split 0 = train, 1 = held-out eval. Tasks: eval draws other keys/values/orders
// from the same seed (the fact base is shared: facts are what must be memorised, eval
// asks them in unseen contexts). Token streams (text, bin, h5): train reads the first 90% of
// the stream, eval the last 10%; sequence g of a split of n tokens starts at
// (g * T) mod (n - T - 1) and reads T + 1 tokens: tokens = [0, T), targets = [1, T + 1).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DATA_TASKS = 0, // mqar and facts, alternating by g
    DATA_MQAR,
    DATA_FACTS,
    DATA_TEXT,
    DATA_BIN,
    DATA_HDF5,
} DataKind;

// The task a sequence belongs to (for per-task accuracy). TASK_NONE for token streams.
typedef enum { TASK_MQAR = 0, TASK_FACTS = 1, TASK_NONE = 2 } TaskKind;
#define DATA_N_TASKS 2

// Sizes of the built-in tasks. The defaults (data_task_settings_default) fit V = 256 and
// T = 64: a tiny model on 2 CPU cores learns them visibly in a few minutes.
//
// Vocabulary of the tasks (token ids):
//   0                      pad / separator
//   1                      query marker ("?") for facts
//   [2, 2 + n_keys)        mqar keys
//   [.., + n_values)       mqar values
//   [.., + n_subjects)     facts subjects
//   [.., + n_relations)    facts relations
//   [.., + n_objects)      facts objects
// data_tasks_min_vocab gives the total; data_open fails when vocab_size is smaller.
typedef struct TaskSettings {
    int n_keys;      // mqar key tokens (64)
    int n_values;    // mqar value tokens (64)
    int n_pairs;     // key-value pairs per mqar sequence (16); 2 * n_pairs <= T - 2
    int n_subjects;  // facts subjects (24)
    int n_relations; // facts relations (4)
    int n_objects;   // facts object tokens (48)
} TaskSettings;

TaskSettings data_task_settings_default(void);
// Smallest vocabulary the tasks need with these settings.
int data_tasks_min_vocab(const TaskSettings *ts);

// One token file of a stream (text, a .bin shard, or an HDF5 dataset).
typedef struct TokenFile {
    char path[1024];
    char dataset[256];          // HDF5 only: dataset path inside the file
    int fd;                     // text / bin: open descriptor (-1 otherwise)
    int64_t hid_file, hid_dset; // HDF5 only: open ids (hid_t), -1 otherwise
    int64_t header_bytes;       // bytes before the first token (1024 for .bin, 0 otherwise)
    int token_bytes;            // 1 (text), 2 or 4 (bin), 0 for HDF5 (read as int64)
    int64_t n_tokens;           // tokens in this file
    int64_t first;              // index of its first token in the concatenated stream
} TokenFile;

typedef struct DataSource {
    DataKind kind;
    char spec[1100]; // the spec string, for messages
    int T;           // tokens per sequence
    int vocab_size;  // every token produced lies in [0, vocab_size)
    uint64_t seed;   // task generation (and the fact base)
    TaskSettings tasks;
    // token streams (text, bin, h5)
    TokenFile *files; // [n_files]
    int n_files;
    int64_t n_tokens;                     // total tokens in the stream
    int64_t split_begin[2], split_len[2]; // token range of train (0) and eval (1)
} DataSource;

// Open a source. T = tokens per sequence; vocab_size = the model's V (tasks need
// data_tasks_min_vocab, text needs 256, bin / h5 tokens must be < V); seed drives the tasks;
// tasks may be NULL (defaults). Returns 0, or -1 with a message naming the file and what is
// wrong in err (missing file, bad magic or version, truncated file, header count larger
// than the file, empty file, too short for one sequence of a split, V too small).
int data_open(DataSource *ds, const char *spec, int T, int vocab_size, uint64_t seed,
              const TaskSettings *tasks, char *err, int errlen);
void data_close(DataSource *ds);

// Sequence g of `split` (0 train, 1 eval): tokens [T], targets [T] (host buffers);
// targets[t] = the token to predict after tokens[0..t], -1 where there is no loss.
// Returns 0, or -1 with a message (read error, or a token >= vocab_size naming the file
// and the token's offset in it).
int data_sequence(const DataSource *ds, int64_t g, int split, int32_t *tokens, int32_t *targets,
                  char *err, int errlen);

// B consecutive sequences first_g .. first_g + B - 1: tokens [B, T], targets [B, T].
int data_batch(const DataSource *ds, int64_t first_g, int B, int split, int32_t *tokens,
               int32_t *targets, char *err, int errlen);

// Global index of the first sequence rank `rank` of `world` reads at micro-step
// `micro_step` of the step that starts at `cursor`, micro-batch Bm sequences:
// cursor + (micro_step * world + rank) * Bm.
int64_t data_batch_first_index(int64_t cursor, int micro_step, int rank, int world,
                               int micro_batch);

// Which task sequence g is (TASK_NONE for token streams).
TaskKind data_task_of(const DataSource *ds, int64_t g);
const char *data_task_name(TaskKind task); // "mqar", "facts", "none"

// Accuracy counts per task over positions with target >= 0.
typedef struct TaskAccuracy {
    int64_t correct[DATA_N_TASKS + 1]; // indexed by TaskKind
    int64_t total[DATA_N_TASKS + 1];
} TaskAccuracy;

// Add one sequence g: predictions [T] (argmax of the logits), targets [T].
void data_accuracy_add(TaskAccuracy *acc, const DataSource *ds, int64_t g,
                       const int32_t *predictions, const int32_t *targets, int T);
// correct / total for one task; NaN when the task had no scored positions.
double data_accuracy(const TaskAccuracy *acc, TaskKind task);
