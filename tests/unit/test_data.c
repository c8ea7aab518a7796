// Data sources: built-in tasks (determinism, targets only on answers), token streams from
// text, llm.c .bin shards and HDF5, the cursor arithmetic, and the error messages for bad
// input files.
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/data.h"
#include "tests/testutil.h"

static char tmp_dir[256];
static char err[2048];

static void make_tmp_dir(void) {
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/hspmn_test_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void remove_tmp_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void tmp_path(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", tmp_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

// An llm.c shard: header (magic, version, count) then tokens of token_bytes each.
// declared_count lets a test lie in the header.
static void write_bin(const char *path, int32_t magic, int32_t version, int64_t declared_count,
                      const uint32_t *tokens, int64_t n, int token_bytes) {
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = version;
    header[2] = (int32_t)declared_count;
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(header, sizeof(header), 1, f), 1);
    for (int64_t i = 0; i < n; i++) {
        if (token_bytes == 2) {
            uint16_t v = (uint16_t)tokens[i];
            fwrite(&v, 2, 1, f);
        } else {
            fwrite(&tokens[i], 4, 1, f);
        }
    }
    fclose(f);
}

// ---- built-in tasks ---------------------------------------------------------------------

START_TEST(test_tasks_deterministic_and_split) {
    DataSource ds;
    ck_assert_msg(data_open(&ds, "tasks", 64, 256, 1234, NULL, err, sizeof(err)) == 0, "%s", err);
    int32_t a_tok[64], a_tgt[64], b_tok[64], b_tgt[64];
    for (int64_t g = 0; g < 20; g++) {
        ck_assert_int_eq(data_sequence(&ds, g, 0, a_tok, a_tgt, err, sizeof(err)), 0);
        ck_assert_int_eq(data_sequence(&ds, g, 0, b_tok, b_tgt, err, sizeof(err)), 0);
        ck_assert_mem_eq(a_tok, b_tok, sizeof(a_tok));
        ck_assert_mem_eq(a_tgt, b_tgt, sizeof(a_tgt));
        ck_assert_int_eq(data_sequence(&ds, g, 1, b_tok, b_tgt, err, sizeof(err)), 0);
        ck_assert_msg(memcmp(a_tok, b_tok, sizeof(a_tok)) != 0, "split 1 equals split 0 at g=%lld",
                      (long long)g);
        ck_assert_int_eq(data_sequence(&ds, g + 2, 0, b_tok, b_tgt, err, sizeof(err)), 0);
        ck_assert_msg(memcmp(a_tok, b_tok, sizeof(a_tok)) != 0, "g and g+2 are equal");
        for (int t = 0; t < 64; t++) {
            ck_assert_int_ge(a_tok[t], 0);
            ck_assert_int_lt(a_tok[t], 256);
            ck_assert_int_lt(a_tgt[t], 256);
        }
        ck_assert_int_eq(data_task_of(&ds, g), g % 2 == 0 ? TASK_MQAR : TASK_FACTS);
    }
    // another seed gives other sequences
    DataSource other;
    ck_assert_int_eq(data_open(&other, "tasks", 64, 256, 99, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(data_sequence(&ds, 0, 0, a_tok, a_tgt, err, sizeof(err)), 0);
    ck_assert_int_eq(data_sequence(&other, 0, 0, b_tok, b_tgt, err, sizeof(err)), 0);
    ck_assert(memcmp(a_tok, b_tok, sizeof(a_tok)) != 0);
    data_close(&other);
    data_close(&ds);
}
END_TEST

// Every MQAR target is at a query key, equals the value that key was paired with earlier in
// the sequence, and the answer is the next input token; every pair is asked once.
START_TEST(test_mqar_targets_only_on_answers) {
    TaskSettings ts = data_task_settings_default();
    DataSource ds;
    ck_assert_int_eq(data_open(&ds, "mqar", 64, 256, 7, &ts, err, sizeof(err)), 0);
    int key_lo = 2, key_hi = 2 + ts.n_keys, val_hi = key_hi + ts.n_values;
    int32_t tok[64], tgt[64];
    for (int split = 0; split < 2; split++)
        for (int64_t g = 0; g < 50; g++) {
            ck_assert_int_eq(data_sequence(&ds, g, split, tok, tgt, err, sizeof(err)), 0);
            int answers = 0;
            for (int t = 0; t < 64; t++) {
                if (t < 2 * ts.n_pairs) {
                    ck_assert_int_eq(tgt[t], -1);
                    continue;
                }
                if (tgt[t] < 0)
                    continue;
                answers++;
                ck_assert_int_ge(tok[t], key_lo);
                ck_assert_int_lt(tok[t], key_hi);
                ck_assert_int_ge(tgt[t], key_hi);
                ck_assert_int_lt(tgt[t], val_hi);
                ck_assert_int_eq(tok[t + 1], tgt[t]);
                int found = 0;
                for (int p = 0; p < ts.n_pairs; p++)
                    if (tok[2 * p] == tok[t]) {
                        found = 1;
                        ck_assert_int_eq(tok[2 * p + 1], tgt[t]);
                    }
                ck_assert_msg(found, "query key %d not among the pairs", tok[t]);
            }
            ck_assert_int_eq(answers, ts.n_pairs);
        }
    ck_assert_int_eq(data_task_of(&ds, 3), TASK_MQAR);
    data_close(&ds);
}
END_TEST

// Facts: targets only right after "? subject relation", one object per (subject, relation)
// across sequences and splits (the base is memorised, so it must be fixed).
START_TEST(test_facts_targets_consistent) {
    TaskSettings ts = data_task_settings_default();
    DataSource ds;
    ck_assert_int_eq(data_open(&ds, "facts", 64, 256, 5, &ts, err, sizeof(err)), 0);
    int min_vocab = data_tasks_min_vocab(&ts);
    int *object_of = calloc((size_t)min_vocab * (size_t)min_vocab, sizeof(int));
    int32_t tok[64], tgt[64];
    int64_t answers = 0;
    for (int split = 0; split < 2; split++)
        for (int64_t g = 0; g < 200; g++) {
            ck_assert_int_eq(data_sequence(&ds, g, split, tok, tgt, err, sizeof(err)), 0);
            for (int t = 0; t < 64; t++) {
                if (tgt[t] < 0)
                    continue;
                answers++;
                ck_assert_int_ge(t, 2);
                ck_assert_int_eq(tok[t - 2], 1); // the query marker
                ck_assert_int_lt(t + 1, 64);
                ck_assert_int_eq(tok[t + 1], tgt[t]);
                int *slot = &object_of[tok[t - 1] * min_vocab + tok[t]];
                if (*slot == 0)
                    *slot = tgt[t];
                ck_assert_int_eq(*slot, tgt[t]);
            }
        }
    ck_assert_int_gt(answers, 400 * 5);
    free(object_of);
    data_close(&ds);
}
END_TEST

START_TEST(test_tasks_vocab_and_length_checks) {
    DataSource ds;
    ck_assert_int_eq(data_open(&ds, "tasks", 64, 100, 1, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "vocab_size"));
    // 8 pairs and one query need 2 * 8 + 2 = 18 tokens.
    ck_assert_int_eq(data_open(&ds, "mqar", 16, 256, 1, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "seq_len"));
    TaskSettings ts = data_task_settings_default();
    ck_assert_int_le(data_tasks_min_vocab(&ts), 256);
}
END_TEST

START_TEST(test_accuracy_per_task) {
    DataSource ds;
    ck_assert_int_eq(data_open(&ds, "tasks", 64, 256, 3, NULL, err, sizeof(err)), 0);
    TaskAccuracy acc;
    memset(&acc, 0, sizeof(acc));
    int32_t tok[64], tgt[64], pred[64];
    for (int64_t g = 0; g < 4; g++) {
        ck_assert_int_eq(data_sequence(&ds, g, 1, tok, tgt, err, sizeof(err)), 0);
        for (int t = 0; t < 64; t++)
            pred[t] = tgt[t];
        if (g % 2 == 1) // facts: get every other answer wrong
            for (int t = 0, k = 0; t < 64; t++)
                if (tgt[t] >= 0 && (k++ % 2 == 0))
                    pred[t] = tgt[t] + 1;
        data_accuracy_add(&acc, &ds, g, pred, tgt, 64);
    }
    ck_assert_double_eq_tol(data_accuracy(&acc, TASK_MQAR), 1.0, 1e-12);
    double facts = data_accuracy(&acc, TASK_FACTS);
    ck_assert(facts > 0.3 && facts < 0.7);
    ck_assert(isnan(data_accuracy(&acc, TASK_NONE)));
    ck_assert_int_eq(acc.total[TASK_MQAR], 2 * data_task_settings_default().n_pairs);
    data_close(&ds);
}
END_TEST

// ---- cursor arithmetic ------------------------------------------------------------------

// For any rank count, the sequences of one step cover [cursor, cursor + G) exactly once.
START_TEST(test_batch_indices_cover_step) {
    const int G = 16;
    for (int world = 1; world <= 8; world *= 2)
        for (int bm = 1; bm <= G / world; bm *= 2) {
            int accum = G / (world * bm);
            int seen[16] = {0};
            int64_t cursor = 5 * G;
            for (int a = 0; a < accum; a++)
                for (int r = 0; r < world; r++) {
                    int64_t first = data_batch_first_index(cursor, a, r, world, bm);
                    for (int b = 0; b < bm; b++) {
                        int64_t g = first + b - cursor;
                        ck_assert(g >= 0 && g < G);
                        seen[g]++;
                    }
                }
            for (int i = 0; i < G; i++)
                ck_assert_int_eq(seen[i], 1);
        }
}
END_TEST

// ---- text bytes -------------------------------------------------------------------------

START_TEST(test_text_bytes) {
    make_tmp_dir();
    char path[300], spec[320];
    tmp_path(path, sizeof(path), "corpus.txt");
    unsigned char text[1000];
    for (int i = 0; i < 1000; i++)
        text[i] = (unsigned char)((i * 7 + 3) % 251);
    write_bytes(path, text, sizeof(text));
    snprintf(spec, sizeof(spec), "text:%s", path);
    DataSource ds;
    const int T = 16;
    ck_assert_msg(data_open(&ds, spec, T, 256, 0, NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ds.n_tokens, 1000);
    int32_t tok[16], tgt[16];
    int64_t train = 900, eval_begin = 900, eval_len = 100;
    for (int64_t g = 0; g < 200; g += 13) {
        ck_assert_int_eq(data_sequence(&ds, g, 0, tok, tgt, err, sizeof(err)), 0);
        int64_t start = (g * T) % (train - T - 1);
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(tok[t], text[start + t]);
            ck_assert_int_eq(tgt[t], text[start + t + 1]);
        }
        ck_assert_int_eq(data_sequence(&ds, g, 1, tok, tgt, err, sizeof(err)), 0);
        start = eval_begin + (g * T) % (eval_len - T - 1);
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(tok[t], text[start + t]);
            ck_assert_int_eq(tgt[t], text[start + t + 1]);
        }
    }
    ck_assert_int_eq(data_task_of(&ds, 0), TASK_NONE);
    data_close(&ds);
    // a plain path (no prefix) is text too
    ck_assert_int_eq(data_open(&ds, path, T, 256, 0, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(ds.kind, DATA_TEXT);
    data_close(&ds);
    // text needs V = 256
    ck_assert_int_eq(data_open(&ds, spec, T, 100, 0, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "256"));
    remove_tmp_dir();
}
END_TEST

// ---- llm.c .bin shards ------------------------------------------------------------------

START_TEST(test_bin_both_magics_concatenated) {
    make_tmp_dir();
    char a[300], b[300], spec[400];
    enum { NA = 700, NB = 500 };
    uint32_t ta[NA], tb[NB], all[NA + NB];
    for (int i = 0; i < NA; i++)
        all[i] = ta[i] = (uint32_t)((i * 31) % 60000);
    for (int i = 0; i < NB; i++)
        all[NA + i] = tb[i] = (uint32_t)(70000 + i); // needs uint32
    tmp_path(a, sizeof(a), "shard_000.bin");
    tmp_path(b, sizeof(b), "shard_001.bin");
    write_bin(a, 20240520, 1, NA, ta, NA, 2);
    write_bin(b, 20240801, 7, NB, tb, NB, 4);
    snprintf(spec, sizeof(spec), "bin:%s/shard_*.bin", tmp_dir);
    DataSource ds;
    const int T = 32;
    ck_assert_msg(data_open(&ds, spec, T, 80000, 0, NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ds.n_files, 2);
    ck_assert_int_eq(ds.n_tokens, NA + NB);
    int64_t train = (int64_t)((NA + NB) * 0.9);
    int32_t tok[32], tgt[32];
    int crossed = 0;
    for (int64_t g = 0; g < 60; g++) {
        ck_assert_msg(data_sequence(&ds, g, 0, tok, tgt, err, sizeof(err)) == 0, "%s", err);
        int64_t start = (g * T) % (train - T - 1);
        crossed |= start < NA && start + T >= NA;
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(tok[t], (int32_t)all[start + t]);
            ck_assert_int_eq(tgt[t], (int32_t)all[start + t + 1]);
        }
    }
    ck_assert_msg(crossed, "no sequence crossed the shard boundary");
    data_close(&ds);

    // a token >= V is an error naming the file and the byte offset
    ck_assert_int_eq(data_open(&ds, spec, T, 65536, 0, NULL, err, sizeof(err)), 0);
    int status = 0;
    for (int64_t g = 0; g < 60 && status == 0; g++)
        status = data_sequence(&ds, g, 0, tok, tgt, err, sizeof(err));
    ck_assert_int_eq(status, -1);
    ck_assert_msg(strstr(err, "shard_001.bin") && strstr(err, "byte offset") &&
                      strstr(err, "outside the vocabulary"),
                  "%s", err);
    data_close(&ds);
    remove_tmp_dir();
}
END_TEST

// Open `spec` expecting failure; the message must contain every one of the words.
static void expect_open_error(const char *spec, int T, const char *word1, const char *word2) {
    DataSource ds;
    err[0] = '\0';
    ck_assert_msg(data_open(&ds, spec, T, 65536, 0, NULL, err, sizeof(err)) == -1,
                  "%s opened but should not", spec);
    ck_assert_msg(strstr(err, word1) != NULL, "'%s' not in: %s", word1, err);
    if (word2)
        ck_assert_msg(strstr(err, word2) != NULL, "'%s' not in: %s", word2, err);
}

START_TEST(test_bin_rejects_bad_files) {
    make_tmp_dir();
    char path[300], spec[400];
    uint32_t tokens[100];
    for (int i = 0; i < 100; i++)
        tokens[i] = (uint32_t)i;

    tmp_path(path, sizeof(path), "missing.bin");
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "missing.bin", "no such file");

    tmp_path(path, sizeof(path), "empty.bin");
    write_bytes(path, "", 0);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "empty.bin", "empty");

    tmp_path(path, sizeof(path), "short_header.bin");
    write_bytes(path, tokens, 100);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "short_header.bin", "truncated");

    tmp_path(path, sizeof(path), "magic.bin");
    write_bin(path, 12345, 1, 100, tokens, 100, 2);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "magic.bin", "bad magic 12345");

    tmp_path(path, sizeof(path), "version.bin");
    write_bin(path, 20240520, 3, 100, tokens, 100, 2);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "version.bin", "version 3");

    tmp_path(path, sizeof(path), "count.bin"); // header claims more tokens than the file has
    write_bin(path, 20240520, 1, 500, tokens, 100, 2);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "count.bin", "header says 500 tokens");

    tmp_path(path, sizeof(path), "zero.bin");
    write_bin(path, 20240520, 1, 0, tokens, 0, 2);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 8, "zero.bin", "empty shard");

    tmp_path(path, sizeof(path), "tiny.bin"); // valid, but 100 tokens cannot hold T = 64
    write_bin(path, 20240520, 1, 100, tokens, 100, 2);
    snprintf(spec, sizeof(spec), "bin:%s", path);
    expect_open_error(spec, 64, "too short for one sequence", "tiny.bin");

    // a truncated copy of a valid shard (as after an interrupted download)
    tmp_path(path, sizeof(path), "cut.bin");
    write_bin(path, 20240801, 7, 100, tokens, 100, 4);
    ck_assert_int_eq(truncate(path, 1024 + 4 * 60), 0);
    snprintf(spec, sizeof(spec), "%s", path); // no prefix: .bin picks the format
    expect_open_error(spec, 8, "cut.bin", "truncated");

    tmp_path(path, sizeof(path), "empty.txt");
    write_bytes(path, "", 0);
    snprintf(spec, sizeof(spec), "text:%s", path);
    expect_open_error(spec, 8, "empty.txt", "empty");
    snprintf(spec, sizeof(spec), "text:%s/nope.txt", tmp_dir);
    expect_open_error(spec, 8, "nope.txt", "cannot open");
    remove_tmp_dir();
}
END_TEST

// ---- HDF5 token dataset -----------------------------------------------------------------

static void write_h5_tokens(const char *path, const char *name, hid_t type, const int64_t *tokens,
                            hsize_t n) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(file, 0);
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(dset, 0);
    ck_assert_int_ge(H5Dwrite(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens), 0);
    H5Dclose(dset);
    H5Sclose(space);
    H5Fclose(file);
}

START_TEST(test_hdf5_tokens) {
    make_tmp_dir();
    char path[300], spec[400];
    enum { N = 600 };
    int64_t tokens[N];
    for (int i = 0; i < N; i++)
        tokens[i] = (i * 13) % 1000;
    tmp_path(path, sizeof(path), "tokens.h5");
    write_h5_tokens(path, "tokens", H5T_STD_U16LE, tokens, N);
    snprintf(spec, sizeof(spec), "%s:/tokens", path);
    DataSource ds;
    const int T = 24;
    ck_assert_msg(data_open(&ds, spec, T, 1000, 0, NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ds.kind, DATA_HDF5);
    int32_t tok[24], tgt[24];
    int64_t train = (int64_t)(N * 0.9), eval_len = N - train;
    for (int64_t g = 0; g < 40; g += 3) {
        ck_assert_msg(data_sequence(&ds, g, 0, tok, tgt, err, sizeof(err)) == 0, "%s", err);
        int64_t start = (g * T) % (train - T - 1);
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(tok[t], tokens[start + t]);
            ck_assert_int_eq(tgt[t], tokens[start + t + 1]);
        }
        ck_assert_int_eq(data_sequence(&ds, g, 1, tok, tgt, err, sizeof(err)), 0);
        start = train + (g * T) % (eval_len - T - 1);
        ck_assert_int_eq(tok[0], tokens[start]);
    }
    data_close(&ds);
    snprintf(spec, sizeof(spec), "h5:%s:/tokens", path);
    ck_assert_int_eq(data_open(&ds, spec, T, 1000, 0, NULL, err, sizeof(err)), 0);
    data_close(&ds);
    // tokens beyond V are refused, naming the file and index
    ck_assert_int_eq(data_open(&ds, spec, T, 500, 0, NULL, err, sizeof(err)), 0);
    int status = 0;
    for (int64_t g = 0; g < 20 && status == 0; g++)
        status = data_sequence(&ds, g, 0, tok, tgt, err, sizeof(err));
    ck_assert_int_eq(status, -1);
    ck_assert_msg(strstr(err, "tokens.h5") && strstr(err, "outside the vocabulary"), "%s", err);
    data_close(&ds);

    snprintf(spec, sizeof(spec), "%s:/nothing", path);
    expect_open_error(spec, T, "tokens.h5", "no dataset /nothing");
    // a truncated HDF5 file
    char cut[300];
    tmp_path(cut, sizeof(cut), "cut.h5");
    write_h5_tokens(cut, "tokens", H5T_STD_I64LE, tokens, N);
    ck_assert_int_eq(truncate(cut, 1000), 0);
    snprintf(spec, sizeof(spec), "%s:/tokens", cut);
    expect_open_error(spec, T, "cut.h5", "HDF5");
    snprintf(spec, sizeof(spec), "%s/none.h5:/tokens", tmp_dir);
    expect_open_error(spec, T, "none.h5", "cannot open");
    remove_tmp_dir();
}
END_TEST

static Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_add_test(tc, test_tasks_deterministic_and_split);
    tcase_add_test(tc, test_mqar_targets_only_on_answers);
    tcase_add_test(tc, test_facts_targets_consistent);
    tcase_add_test(tc, test_tasks_vocab_and_length_checks);
    tcase_add_test(tc, test_accuracy_per_task);
    tcase_add_test(tc, test_batch_indices_cover_step);
    tcase_add_test(tc, test_text_bytes);
    tcase_add_test(tc, test_bin_both_magics_concatenated);
    tcase_add_test(tc, test_bin_rejects_bad_files);
    tcase_add_test(tc, test_hdf5_tokens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(data_suite());
}
