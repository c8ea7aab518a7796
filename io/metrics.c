// metrics.h5: aligned rows of scalar and per-layer metrics, appended in SWMR mode so the
// file can be read while the run writes it (schema in metrics.h).
#include "io/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/h5util.h"
#include "kernels/error.h"

const char *const metrics_standard_scalars[] = {
    "step", "loss", "ce", "route_loss", "entropy", "lr", "grad_norm", "tok_per_s", NULL,
};
const char *const metrics_standard_per_layer[] = {
    "routed_fraction",
    "slot_hit_fraction",
    "slot_usage_entropy",
    NULL,
};

// Rows per chunk: small enough that a short run's file stays small, large enough that a
// long run does not drown in chunk index entries.
enum { METRICS_CHUNK_ROWS = 256 };

typedef struct Series {
    char name[64];
    int per_layer; // 0: float64 [n]; 1: float32 [n, L]
    hid_t dset;
    double scalar; // value of the current row
    float *layers; // [L] values of the current row
} Series;

struct Metrics {
    char path[1100];
    hid_t file;
    int n_layers;
    int flush_every;
    int since_flush;
    int64_t rows;
    int in_row;
    Series *series; // [n_series]; series[0] is "step"
    int n_series;
};

static void add_series(Metrics *m, const char *name, int per_layer) {
    for (int i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0)
            hs_fatal("metrics %s: metric '%s' declared twice", m->path, name);
    if (strlen(name) == 0 || strlen(name) >= sizeof(m->series[0].name) || strchr(name, '/'))
        hs_fatal("metrics %s: bad metric name '%s' (1-63 characters, no '/')", m->path, name);
    m->series = realloc(m->series, sizeof(Series) * (size_t)(m->n_series + 1));
    if (!m->series)
        hs_fatal("out of host memory declaring metric %s", name);
    Series *s = &m->series[m->n_series++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->per_layer = per_layer;
    s->dset = -1;
    s->layers = per_layer ? hs_calloc((size_t)m->n_layers, sizeof(float)) : NULL;
}

static void create_dataset(Metrics *m, Series *s) {
    hsize_t dims[2] = {0, (hsize_t)m->n_layers};
    hsize_t maxdims[2] = {H5S_UNLIMITED, (hsize_t)m->n_layers};
    hsize_t chunk[2] = {METRICS_CHUNK_ROWS, (hsize_t)m->n_layers};
    int ndims = s->per_layer ? 2 : 1;
    hid_t space = h5_check(H5Screate_simple(ndims, dims, maxdims), "H5Screate_simple", m->path);
    hid_t dcpl = h5_check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate(dataset)", m->path);
    h5_check(H5Pset_chunk(dcpl, ndims, chunk), "H5Pset_chunk", m->path);
    // Rows past a value's last write (a metric not logged at that step) read as NaN.
    double nan_d = NAN;
    float nan_f = NAN;
    if (s->per_layer)
        h5_check(H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan_f), "H5Pset_fill_value", m->path);
    else
        h5_check(H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &nan_d), "H5Pset_fill_value", m->path);
    s->dset = H5Dcreate2(m->file, s->name, s->per_layer ? H5T_IEEE_F32LE : H5T_IEEE_F64LE, space,
                         H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (s->dset < 0)
        hs_fatal("metrics %s: cannot create dataset /%s", m->path, s->name);
    h5_check(H5Pclose(dcpl), "H5Pclose", m->path);
    h5_check(H5Sclose(space), "H5Sclose", m->path);
}

// Open an existing series of a resumed file, checking it has the expected shape.
static void open_dataset(Metrics *m, Series *s) {
    s->dset = H5Dopen2(m->file, s->name, H5P_DEFAULT);
    if (s->dset < 0)
        hs_fatal("metrics %s: cannot open dataset /%s", m->path, s->name);
    hid_t space = h5_check(H5Dget_space(s->dset), "H5Dget_space", m->path);
    int ndims = H5Sget_simple_extent_ndims(space);
    hsize_t dims[2] = {0, 0};
    if (ndims >= 1 && ndims <= 2)
        H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    int want = s->per_layer ? 2 : 1;
    if (ndims != want || (s->per_layer && dims[1] != (hsize_t)m->n_layers))
        hs_fatal("metrics %s: dataset /%s has %d dims (second %llu), expected %d dims%s%d: "
                 "was the file written by a run with another number of layers?",
                 m->path, s->name, ndims, (unsigned long long)dims[1], want,
                 s->per_layer ? " with second = n_layers = " : ", n_layers ", m->n_layers);
}

static int64_t dataset_rows(const Metrics *m, const Series *s) {
    hid_t space = h5_check(H5Dget_space(s->dset), "H5Dget_space", m->path);
    hsize_t dims[2] = {0, 0};
    h5_check(H5Sget_simple_extent_dims(space, dims, NULL), "H5Sget_simple_extent_dims", m->path);
    H5Sclose(space);
    return (int64_t)dims[0];
}

static void set_rows(Metrics *m, Series *s, int64_t rows) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)m->n_layers};
    if (H5Dset_extent(s->dset, dims) < 0)
        hs_fatal("metrics %s: cannot resize /%s to %lld rows", m->path, s->name, (long long)rows);
}

// Rows of a resumed file to keep: those up to the first whose step is > resume_step.
static int64_t rows_to_keep(Metrics *m, int64_t resume_step) {
    Series *step = &m->series[0];
    int64_t n = dataset_rows(m, step);
    if (n == 0)
        return 0;
    double *steps = hs_malloc(sizeof(double) * (size_t)n);
    h5_check(H5Dread(step->dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps),
             "H5Dread(/step)", m->path);
    int64_t keep = 0;
    while (keep < n && !(steps[keep] > (double)resume_step))
        keep++;
    free(steps);
    return keep;
}

static hid_t latest_format_access(const char *path) {
    hid_t fapl = h5_check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(access)", path);
    // SWMR needs the latest file format.
    h5_check(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST),
             "H5Pset_libver_bounds", path);
    return fapl;
}

Metrics *metrics_open(const char *run_dir, const char *const *extra_scalars, int n_extra_scalars,
                      const char *const *extra_per_layer, int n_extra_per_layer, int n_layers,
                      int64_t resume_step, int flush_every) {
    h5_quiet();
    Metrics *m = hs_calloc(1, sizeof(Metrics));
    snprintf(m->path, sizeof(m->path), "%s/metrics.h5", run_dir);
    if (n_layers < 1)
        hs_fatal("metrics %s: n_layers must be >= 1 (got %d)", m->path, n_layers);
    m->n_layers = n_layers;
    m->flush_every = flush_every > 0 ? flush_every : 1;
    for (int i = 0; metrics_standard_scalars[i]; i++)
        add_series(m, metrics_standard_scalars[i], 0);
    for (int i = 0; i < n_extra_scalars; i++)
        add_series(m, extra_scalars[i], 0);
    for (int i = 0; metrics_standard_per_layer[i]; i++)
        add_series(m, metrics_standard_per_layer[i], 1);
    for (int i = 0; i < n_extra_per_layer; i++)
        add_series(m, extra_per_layer[i], 1);

    hid_t fapl = latest_format_access(m->path);
    int resume = resume_step >= 0 && access(m->path, F_OK) == 0;
    if (resume) {
        m->file = H5Fopen(m->path, H5F_ACC_RDWR, fapl);
        if (m->file < 0)
            hs_fatal("metrics %s: cannot reopen to append (corrupt, or still marked open by a "
                     "crashed writer: clear it with 'h5clear -s %s')",
                     m->path, m->path);
    } else {
        m->file = H5Fcreate(m->path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (m->file < 0)
            hs_fatal("metrics %s: cannot create the file (does the run dir exist?)", m->path);
    }
    h5_check(H5Pclose(fapl), "H5Pclose", m->path);

    for (int i = 0; i < m->n_series; i++) {
        Series *s = &m->series[i];
        if (resume && H5Lexists(m->file, s->name, H5P_DEFAULT) > 0)
            open_dataset(m, s);
        else
            create_dataset(m, s);
    }
    // Every series gets the same length: the kept rows of a resumed run (a metric new in
    // this run reads NaN there), or 0 for a new file.
    m->rows = resume ? rows_to_keep(m, resume_step) : 0;
    for (int i = 0; i < m->n_series; i++)
        set_rows(m, &m->series[i], m->rows);
    // All datasets exist now, as SWMR requires before writing starts.
    if (H5Fstart_swmr_write(m->file) < 0)
        hs_fatal("metrics %s: cannot start SWMR write mode", m->path);
    return m;
}

void metrics_begin(Metrics *m, int64_t step) {
    for (int i = 0; i < m->n_series; i++) {
        Series *s = &m->series[i];
        s->scalar = NAN;
        for (int l = 0; s->per_layer && l < m->n_layers; l++)
            s->layers[l] = NAN;
    }
    m->series[0].scalar = (double)step;
    m->in_row = 1;
}

static Series *find_series(Metrics *m, const char *name, int per_layer) {
    if (!m->in_row)
        hs_fatal("metrics %s: setting '%s' outside metrics_begin / metrics_commit", m->path, name);
    for (int i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0) {
            if (m->series[i].per_layer != per_layer)
                hs_fatal("metrics %s: '%s' is a %s metric", m->path, name,
                         per_layer ? "scalar" : "per-layer");
            return &m->series[i];
        }
    hs_fatal("metrics %s: metric '%s' was not declared at metrics_open", m->path, name);
}

void metrics_set(Metrics *m, const char *name, double value) {
    find_series(m, name, 0)->scalar = value;
}

void metrics_set_layers(Metrics *m, const char *name, const float *values) {
    Series *s = find_series(m, name, 1);
    memcpy(s->layers, values, sizeof(float) * (size_t)m->n_layers);
}

static void append_row(Metrics *m, Series *s) {
    set_rows(m, s, m->rows + 1);
    hid_t space = h5_check(H5Dget_space(s->dset), "H5Dget_space", m->path);
    hsize_t start[2] = {(hsize_t)m->rows, 0};
    hsize_t count[2] = {1, (hsize_t)m->n_layers};
    int ndims = s->per_layer ? 2 : 1;
    h5_check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL),
             "H5Sselect_hyperslab", m->path);
    hid_t mem = h5_check(H5Screate_simple(ndims, count, NULL), "H5Screate_simple", m->path);
    herr_t rc = s->per_layer
                    ? H5Dwrite(s->dset, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, s->layers)
                    : H5Dwrite(s->dset, H5T_NATIVE_DOUBLE, mem, space, H5P_DEFAULT, &s->scalar);
    if (rc < 0)
        hs_fatal("metrics %s: writing row %lld of /%s failed", m->path, (long long)m->rows,
                 s->name);
    H5Sclose(mem);
    H5Sclose(space);
}

void metrics_commit(Metrics *m) {
    if (!m->in_row)
        hs_fatal("metrics %s: metrics_commit without metrics_begin", m->path);
    for (int i = 0; i < m->n_series; i++)
        append_row(m, &m->series[i]);
    m->rows++;
    m->in_row = 0;
    if (++m->since_flush >= m->flush_every)
        metrics_flush(m);
}

int64_t metrics_rows(const Metrics *m) {
    return m->rows;
}

void metrics_flush(Metrics *m) {
    if (H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0)
        hs_fatal("metrics %s: flush failed", m->path);
    m->since_flush = 0;
}

void metrics_close(Metrics *m) {
    metrics_flush(m);
    for (int i = 0; i < m->n_series; i++) {
        h5_check(H5Dclose(m->series[i].dset), "H5Dclose", m->path);
        free(m->series[i].layers);
    }
    if (H5Fclose(m->file) < 0)
        hs_fatal("metrics %s: closing the file failed", m->path);
    free(m->series);
    free(m);
}

void metrics_slot_usage(const int64_t *hist, int64_t n_slots, double *hit_fraction,
                        double *entropy) {
    int64_t hit = 0;
    double total = 0.0;
    for (int64_t i = 0; i < n_slots; i++) {
        hit += hist[i] > 0;
        total += (double)hist[i];
    }
    double h = 0.0;
    for (int64_t i = 0; i < n_slots && total > 0.0; i++) {
        if (hist[i] <= 0)
            continue;
        double p = (double)hist[i] / total;
        h -= p * log(p);
    }
    *hit_fraction = n_slots > 0 ? (double)hit / (double)n_slots : 0.0;
    *entropy = h;
}
