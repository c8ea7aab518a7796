// metrics.h5: aligned rows, NaN for unset values, per-layer shapes, resume truncation
// without duplicate steps, and the slot usage statistics.
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/metrics.h"
#include "tests/testutil.h"

static char tmp_dir[256];

static void make_tmp_dir(void) {
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/hspmn_test_metrics_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void remove_tmp_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
    ck_assert_int_eq(system(cmd), 0);
}

// Read a whole dataset of metrics.h5 as doubles; *rows and *cols get its shape.
static double *read_series(const char *name, int64_t *rows, int64_t *cols) {
    char path[300];
    snprintf(path, sizeof(path), "%s/metrics.h5", tmp_dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(file, 0);
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    ck_assert_msg(dset >= 0, "no dataset %s", name);
    hid_t space = H5Dget_space(dset);
    hsize_t dims[2] = {0, 1};
    int ndims = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    *rows = (int64_t)dims[0];
    *cols = ndims == 2 ? (int64_t)dims[1] : 1;
    double *values = malloc(sizeof(double) * (size_t)(*rows * *cols + 1));
    if (*rows > 0)
        ck_assert_int_ge(H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values),
                         0);
    H5Sclose(space);
    H5Dclose(dset);
    H5Fclose(file);
    return values;
}

static void log_steps(Metrics *m, int64_t first, int64_t last, int L) {
    for (int64_t step = first; step <= last; step++) {
        metrics_begin(m, step);
        metrics_set(m, "loss", 10.0 - (double)step);
        if (step % 3 == 0)
            metrics_set(m, "eval_acc", (double)step / 100.0);
        float layers[4];
        for (int l = 0; l < L; l++)
            layers[l] = (float)(step * 10 + l);
        metrics_set_layers(m, "slot_hit_fraction", layers);
        metrics_commit(m);
    }
}

START_TEST(test_rows_and_nan) {
    make_tmp_dir();
    const char *extra[] = {"eval_acc"};
    Metrics *m = metrics_open(tmp_dir, extra, 1, NULL, 0, 4, -1, 3);
    log_steps(m, 1, 7, 4);
    ck_assert_int_eq(metrics_rows(m), 7);
    metrics_close(m);

    int64_t rows, cols;
    double *step = read_series("step", &rows, &cols);
    ck_assert_int_eq(rows, 7);
    ck_assert_int_eq(cols, 1);
    double *loss = read_series("loss", &rows, &cols);
    ck_assert_int_eq(rows, 7);
    double *acc = read_series("eval_acc", &rows, &cols);
    double *lr = read_series("lr", &rows, &cols); // declared, never set
    double *hit = read_series("slot_hit_fraction", &rows, &cols);
    ck_assert_int_eq(rows, 7);
    ck_assert_int_eq(cols, 4);
    double *routed = read_series("routed_fraction", &rows, &cols);
    ck_assert_int_eq(cols, 4);
    for (int i = 0; i < 7; i++) {
        ck_assert_double_eq(step[i], i + 1);
        ck_assert_double_eq(loss[i], 10.0 - (i + 1));
        if ((i + 1) % 3 == 0)
            ck_assert_double_eq_tol(acc[i], (i + 1) / 100.0, 1e-15);
        else
            ck_assert(isnan(acc[i]));
        ck_assert(isnan(lr[i]));
        for (int l = 0; l < 4; l++) {
            ck_assert_double_eq(hit[i * 4 + l], (i + 1) * 10 + l);
            ck_assert(isnan(routed[i * 4 + l]));
        }
    }
    free(step), free(loss), free(acc), free(lr), free(hit), free(routed);
    remove_tmp_dir();
}
END_TEST

// Resume from step 5 after logging 1..9: rows 6..9 are dropped, the new rows follow 5, and a
// metric new in the resumed run reads NaN in the old rows.
START_TEST(test_resume_truncates) {
    make_tmp_dir();
    const char *extra[] = {"eval_acc"};
    Metrics *m = metrics_open(tmp_dir, extra, 1, NULL, 0, 2, -1, 100);
    log_steps(m, 1, 9, 2);
    metrics_close(m);

    const char *extra2[] = {"eval_acc", "new_metric"};
    m = metrics_open(tmp_dir, extra2, 2, NULL, 0, 2, 5, 100);
    ck_assert_int_eq(metrics_rows(m), 5);
    log_steps(m, 6, 8, 2);
    metrics_close(m);

    int64_t rows, cols;
    double *step = read_series("step", &rows, &cols);
    ck_assert_int_eq(rows, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_double_eq(step[i], i + 1);
    double *fresh = read_series("new_metric", &rows, &cols);
    ck_assert_int_eq(rows, 8);
    for (int i = 0; i < 8; i++)
        ck_assert(isnan(fresh[i]));
    double *hit = read_series("slot_hit_fraction", &rows, &cols);
    ck_assert_int_eq(rows, 8);
    ck_assert_double_eq(hit[7 * 2 + 1], 81);

    // resume before the first logged step: everything goes
    m = metrics_open(tmp_dir, extra, 1, NULL, 0, 2, 0, 100);
    ck_assert_int_eq(metrics_rows(m), 0);
    metrics_close(m);
    // a fresh open (resume_step < 0) replaces the file
    m = metrics_open(tmp_dir, NULL, 0, NULL, 0, 2, -1, 1);
    ck_assert_int_eq(metrics_rows(m), 0);
    metrics_close(m);
    free(step), free(fresh), free(hit);
    remove_tmp_dir();
}
END_TEST

START_TEST(test_slot_usage) {
    int64_t hist[8] = {4, 0, 4, 0, 4, 0, 4, 0};
    double frac, ent;
    metrics_slot_usage(hist, 8, &frac, &ent);
    ck_assert_double_eq_tol(frac, 0.5, 1e-12);
    ck_assert_double_eq_tol(ent, log(4.0), 1e-12);
    int64_t one[4] = {0, 0, 9, 0};
    metrics_slot_usage(one, 4, &frac, &ent);
    ck_assert_double_eq_tol(frac, 0.25, 1e-12);
    ck_assert_double_eq_tol(ent, 0.0, 1e-12);
    int64_t skew[2] = {3, 1};
    metrics_slot_usage(skew, 2, &frac, &ent);
    ck_assert_double_eq_tol(frac, 1.0, 1e-12);
    ck_assert_double_eq_tol(ent, -(0.75 * log(0.75) + 0.25 * log(0.25)), 1e-12);
    int64_t none[3] = {0, 0, 0};
    metrics_slot_usage(none, 3, &frac, &ent);
    ck_assert_double_eq(frac, 0.0);
    ck_assert_double_eq(ent, 0.0);
}
END_TEST

static Suite *metrics_suite(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_rows_and_nan);
    tcase_add_test(tc, test_resume_truncates);
    tcase_add_test(tc, test_slot_usage);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(metrics_suite());
}
