// Recovering the curves of a crashed run (see metrics_recover.h). The crashed file is read
// in SWMR-read mode, the one mode HDF5 allows while the writer flag is still set.
#include "launch/lib/metrics_recover.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/error.h"

static hid_t latest_format(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0)
        hs_fatal("HDF5: cannot make a file-access property list");
    return fapl;
}

int metrics_set_aside_if_crashed(const char *run_dir) {
    char path[1100], aside[1120];
    snprintf(path, sizeof(path), "%s/metrics.h5", run_dir);
    if (access(path, F_OK) != 0)
        return 0;
    hid_t fapl = latest_format();
    hid_t file = -1;
    H5E_BEGIN_TRY {
        file = H5Fopen(path, H5F_ACC_RDWR, fapl);
    }
    H5E_END_TRY;
    H5Pclose(fapl);
    if (file >= 0) {
        H5Fclose(file);
        return 0;
    }
    snprintf(aside, sizeof(aside), "%s.crashed", path);
    if (rename(path, aside) != 0)
        hs_fatal("cannot move %s aside to %s: %s", path, aside, strerror(errno));
    printf("note: %s was left open by a crashed run; its rows are carried over from %s\n", path,
           aside);
    return 1;
}

// Read a whole dataset as doubles (scalar series [n]) or floats (per-layer [n, L]); NULL if
// the file lacks it. *rows gets the first dimension.
static void *read_series(hid_t file, const char *name, int per_layer, int n_layers, int64_t *rows) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return NULL;
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t space = H5Dget_space(dset);
    hsize_t dims[2] = {0, 0};
    int ndims = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (ndims != (per_layer ? 2 : 1) || (per_layer && (int)dims[1] != n_layers)) {
        H5Dclose(dset);
        return NULL;
    }
    size_t width = per_layer ? sizeof(float) * (size_t)n_layers : sizeof(double);
    void *data = hs_malloc(width * (dims[0] ? dims[0] : 1));
    if (dims[0] > 0 && H5Dread(dset, per_layer ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE, H5S_ALL,
                               H5S_ALL, H5P_DEFAULT, data) < 0)
        hs_fatal("HDF5: cannot read %s of a crashed metrics file", name);
    H5Dclose(dset);
    *rows = (int64_t)dims[0];
    return data;
}

static int count_names(const char *const *names) {
    int n = 0;
    while (names[n])
        n++;
    return n;
}

int64_t metrics_replay_crashed(Metrics *m, const char *run_dir, int64_t resume_step,
                               const char *const *scalars, const char *const *per_layer,
                               int n_layers) {
    char path[1120];
    snprintf(path, sizeof(path), "%s/metrics.h5.crashed", run_dir);
    hid_t fapl = latest_format();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        printf("note: %s is unreadable; the curves restart at step %lld\n", path,
               (long long)resume_step + 1);
        return 0;
    }
    const int n_scalars = count_names(scalars), n_layer_series = count_names(per_layer);
    double **scalar_data = hs_calloc((size_t)n_scalars, sizeof(double *));
    float **layer_data = hs_calloc((size_t)n_layer_series, sizeof(float *));
    int64_t *scalar_rows = hs_calloc((size_t)n_scalars, sizeof(int64_t));
    int64_t *layer_rows = hs_calloc((size_t)n_layer_series, sizeof(int64_t));
    for (int i = 0; i < n_scalars; i++)
        scalar_data[i] = read_series(file, scalars[i], 0, n_layers, &scalar_rows[i]);
    for (int i = 0; i < n_layer_series; i++)
        layer_data[i] = read_series(file, per_layer[i], 1, n_layers, &layer_rows[i]);
    H5Fclose(file);

    // scalars[0] is "step": rows are replayed while their step is <= resume_step.
    int64_t copied = 0;
    const double *steps = scalar_data[0];
    for (int64_t r = 0; steps && r < scalar_rows[0] && steps[r] <= (double)resume_step; r++) {
        metrics_begin(m, (int64_t)steps[r]);
        for (int i = 1; i < n_scalars; i++)
            if (scalar_data[i] && r < scalar_rows[i])
                metrics_set(m, scalars[i], scalar_data[i][r]);
        for (int i = 0; i < n_layer_series; i++)
            if (layer_data[i] && r < layer_rows[i])
                metrics_set_layers(m, per_layer[i], layer_data[i] + (size_t)r * n_layers);
        metrics_commit(m);
        copied++;
    }
    for (int i = 0; i < n_scalars; i++)
        free(scalar_data[i]);
    for (int i = 0; i < n_layer_series; i++)
        free(layer_data[i]);
    free(scalar_data);
    free(layer_data);
    free(scalar_rows);
    free(layer_rows);
    return copied;
}
