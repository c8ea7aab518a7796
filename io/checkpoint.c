// Checkpoints: collective parallel-HDF5 save and reshardable load (schema in checkpoint.h).
#include "io/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "dist/mpi_check.h"
#include "io/checkpoint_files.h"
#include "io/h5util.h"
#include "kernels/error.h"

// Path of one tensor under a prefix: "" -> "/model/x", "/optim/m" -> "/optim/m/model/x".
static void tensor_path(char *out, size_t outlen, const char *prefix, const ParamTensor *t) {
    snprintf(out, outlen, "%s%s", prefix, t->name);
}

// The file dataspace of a tensor's global shape (scalar for ndim 0).
static hid_t global_space(const ParamTensor *t, const char *path) {
    if (t->ndim == 0)
        return h5_check(H5Screate(H5S_SCALAR), "H5Screate", path);
    hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
    return h5_check(H5Screate_simple(t->ndim, dims, NULL), "H5Screate_simple", path);
}

// Select in file_space what this rank reads or writes, and make the matching memory space:
// a sharded tensor's own rows; a dense tensor whole on ranks with `all_dense` (reads) or
// only on rank 0 (writes: the others select nothing but still join the collective call).
static hid_t select_rows(const ParamTensor *t, hid_t file_space, int rank, int all_dense,
                         const char *path) {
    if (t->sharded) {
        hsize_t start[2] = {(hsize_t)t->row_begin, 0};
        hsize_t count[2] = {(hsize_t)t->rows, (hsize_t)t->shape[1]};
        if (t->rows == 0) {
            h5_check(H5Sselect_none(file_space), "H5Sselect_none", path);
            hid_t mem = h5_check(H5Screate(H5S_SCALAR), "H5Screate", path);
            h5_check(H5Sselect_none(mem), "H5Sselect_none", path);
            return mem;
        }
        h5_check(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL),
                 "H5Sselect_hyperslab", path);
        return h5_check(H5Screate_simple(t->ndim, count, NULL), "H5Screate_simple", path);
    }
    hid_t mem = global_space(t, path);
    if (!all_dense && rank != 0) {
        h5_check(H5Sselect_none(file_space), "H5Sselect_none", path);
        h5_check(H5Sselect_none(mem), "H5Sselect_none", path);
    }
    return mem;
}

static hid_t collective_transfer(const char *path) {
    hid_t dxpl = h5_check(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate(xfer)", path);
    h5_check(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio", path);
    return dxpl;
}

static hid_t mpio_access(MPI_Comm comm, const char *path) {
    hid_t fapl = h5_check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(access)", path);
    h5_check(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "H5Pset_fapl_mpio", path);
    return fapl;
}

// Write every tensor of the layout from buf [n_local] under prefix. Collective.
static void write_tensors(hid_t file, const char *prefix, const ParamLayout *layout,
                          const float *buf, const char *file_path) {
    hid_t lcpl = h5_check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(link)", file_path);
    h5_check(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group",
             file_path);
    hid_t dcpl = h5_check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate(dataset)", file_path);
    // Every element is written, so skip HDF5's fill pass.
    h5_check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "H5Pset_fill_time", file_path);
    hid_t dxpl = collective_transfer(file_path);
    for (int i = 0; i < layout->n_tensors; i++) {
        const ParamTensor *t = &layout->tensors[i];
        char path[256];
        tensor_path(path, sizeof(path), prefix, t);
        hid_t file_space = global_space(t, path);
        hid_t dset = H5Dcreate2(file, path, H5T_IEEE_F32LE, file_space, lcpl, dcpl, H5P_DEFAULT);
        if (dset < 0)
            hs_fatal("HDF5: cannot create dataset %s in %s", path, file_path);
        hid_t mem = select_rows(t, file_space, layout->rank, 0, path);
        if (H5Dwrite(dset, H5T_NATIVE_FLOAT, mem, file_space, dxpl, buf + t->offset) < 0)
            hs_fatal("HDF5: writing %s to %s failed", path, file_path);
        h5_check(H5Sclose(mem), "H5Sclose", path);
        h5_check(H5Sclose(file_space), "H5Sclose", path);
        h5_check(H5Dclose(dset), "H5Dclose", path);
    }
    h5_check(H5Pclose(dxpl), "H5Pclose", file_path);
    h5_check(H5Pclose(dcpl), "H5Pclose", file_path);
    h5_check(H5Pclose(lcpl), "H5Pclose", file_path);
}

// A scalar dataset written by rank 0 (the others join with an empty selection).
static void write_scalar(hid_t file, const char *path, hid_t file_type, hid_t mem_type,
                         const void *value, int rank, const char *file_path) {
    hid_t lcpl = h5_check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(link)", file_path);
    h5_check(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group",
             file_path);
    hid_t space = h5_check(H5Screate(H5S_SCALAR), "H5Screate", path);
    hid_t dset = H5Dcreate2(file, path, file_type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (dset < 0)
        hs_fatal("HDF5: cannot create dataset %s in %s", path, file_path);
    if (rank != 0)
        h5_check(H5Sselect_none(space), "H5Sselect_none", path);
    hid_t dxpl = collective_transfer(file_path);
    if (H5Dwrite(dset, mem_type, space, space, dxpl, value) < 0)
        hs_fatal("HDF5: writing %s to %s failed", path, file_path);
    h5_check(H5Pclose(dxpl), "H5Pclose", path);
    h5_check(H5Dclose(dset), "H5Dclose", path);
    h5_check(H5Sclose(space), "H5Sclose", path);
    h5_check(H5Pclose(lcpl), "H5Pclose", path);
}

// /config: model entries and training settings as string attributes (all ranks write the
// same values: attribute writes are collective in parallel HDF5).
static void write_config(hid_t file, const CheckpointData *data, const char *file_path) {
    hid_t group = H5Gcreate2(file, "/config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0)
        hs_fatal("HDF5: cannot create /config in %s", file_path);
    for (int i = 0; model_config_names[i]; i++) {
        char value[128];
        model_config_get(data->cfg, model_config_names[i], value, sizeof(value));
        h5_write_string_attr(group, model_config_names[i], value, file_path);
    }
    for (int i = 0; i < data->n_settings; i++) {
        const CheckpointSetting *s = &data->settings[i];
        if (H5Aexists(group, s->key) > 0)
            hs_fatal("checkpoint %s: training setting '%s' repeats a /config entry", file_path,
                     s->key);
        h5_write_string_attr(group, s->key, s->value, file_path);
    }
    h5_check(H5Gclose(group), "H5Gclose(/config)", file_path);
}

static void write_format_version(hid_t file, const char *file_path) {
    int version = CHECKPOINT_FORMAT_VERSION;
    hid_t space = h5_check(H5Screate(H5S_SCALAR), "H5Screate", file_path);
    hid_t attr =
        h5_check(H5Acreate2(file, "format_version", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT),
                 "H5Acreate(format_version)", file_path);
    h5_check(H5Awrite(attr, H5T_NATIVE_INT, &version), "H5Awrite(format_version)", file_path);
    h5_check(H5Aclose(attr), "H5Aclose", file_path);
    h5_check(H5Sclose(space), "H5Sclose", file_path);
}

// A full disk is found before writing, with the sizes named, rather than as a failed HDF5
// write halfway through: every tensor is stored whole (params, m, v, and master when given),
// plus a margin for HDF5's metadata. Rank 0 measures; every rank gets the verdict.
static void check_free_space(MPI_Comm comm, int rank, const char *run_dir,
                             const CheckpointData *data, const char *final_path) {
    double copies = data->master ? 4.0 : 3.0;
    double needed = copies * 4.0 * (double)param_layout_global_count(data->layout) + (1 << 18);
    double available = -1.0; // unknown: statvfs failed, write and let HDF5 report
    struct statvfs fs;
    if (rank == 0 && statvfs(run_dir, &fs) == 0)
        available = (double)fs.f_bavail * (double)fs.f_frsize;
    mpi_check(MPI_Bcast(&available, 1, MPI_DOUBLE, 0, comm), "MPI_Bcast (free space)");
    if (available >= 0.0 && available < needed)
        hs_fatal("checkpoint %s needs about %.1f MiB but %s has %.1f MiB free: free some space "
                 "or choose another --run_dir (the last complete checkpoint there is intact)",
                 final_path, needed / 1048576.0, run_dir, available / 1048576.0);
}

void checkpoint_save(MPI_Comm comm, const char *run_dir, const CheckpointData *data, int keep_last,
                     char *path_out, int path_len) {
    h5_quiet();
    int rank;
    mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
    if (rank == 0)
        checkpoint_make_dir(run_dir);
    mpi_check(MPI_Barrier(comm), "MPI_Barrier (run dir created)");

    char final_path[1200], tmp_path[1210];
    snprintf(final_path, sizeof(final_path), "%s/ckpt_%lld.h5", run_dir,
             (long long)data->state.step);
    snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", final_path);
    check_free_space(comm, rank, run_dir, data, final_path);

    hid_t fapl = mpio_access(comm, tmp_path);
    hid_t file = H5Fcreate(tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0)
        hs_fatal("checkpoint %s: cannot create the file (is the run dir writable?)", tmp_path);
    h5_check(H5Pclose(fapl), "H5Pclose", tmp_path);

    write_format_version(file, tmp_path);
    write_config(file, data, tmp_path);
    write_tensors(file, "", data->layout, data->params, tmp_path);
    write_tensors(file, "/optim/m", data->layout, data->m, tmp_path);
    write_tensors(file, "/optim/v", data->layout, data->v, tmp_path);
    if (data->master)
        write_tensors(file, "/optim/master", data->layout, data->master, tmp_path);
    int layout_rank = data->layout->rank;
    write_scalar(file, "/optim/step", H5T_STD_I64LE, H5T_NATIVE_INT64, &data->optim_step,
                 layout_rank, tmp_path);
    write_scalar(file, "/state/step", H5T_STD_I64LE, H5T_NATIVE_INT64, &data->state.step,
                 layout_rank, tmp_path);
    write_scalar(file, "/state/data_cursor", H5T_STD_I64LE, H5T_NATIVE_INT64,
                 &data->state.data_cursor, layout_rank, tmp_path);
    write_scalar(file, "/state/seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &data->state.seed,
                 layout_rank, tmp_path);
    write_scalar(file, "/state/rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, &data->state.rng,
                 layout_rank, tmp_path);
    if (H5Fclose(file) < 0)
        hs_fatal("checkpoint %s: closing the file failed (disk full?)", tmp_path);

    // Only when every rank has closed its part does rank 0 make the file durable and
    // visible under its final name; the previous checkpoint stays intact until then.
    mpi_check(MPI_Barrier(comm), "MPI_Barrier (checkpoint written)");
    if (rank == 0) {
        checkpoint_fsync_file(tmp_path);
        checkpoint_publish(tmp_path, final_path, run_dir);
        checkpoint_prune(run_dir, keep_last, data->state.step);
    }
    mpi_check(MPI_Barrier(comm), "MPI_Barrier (checkpoint published)");
    if (path_out)
        snprintf(path_out, (size_t)path_len, "%s", final_path);
}

// ---- load -----------------------------------------------------------------------------

static int check_format_version(hid_t file, const char *path, char *err, int errlen) {
    int version = -1;
    if (H5Aexists(file, "format_version") <= 0) {
        snprintf(err, (size_t)errlen,
                 "checkpoint %s: no format_version attribute (not a checkpoint?)", path);
        return -1;
    }
    hid_t attr = H5Aopen(file, "format_version", H5P_DEFAULT);
    int ok = attr >= 0 && H5Aread(attr, H5T_NATIVE_INT, &version) >= 0;
    if (attr >= 0)
        H5Aclose(attr);
    if (!ok || version != CHECKPOINT_FORMAT_VERSION) {
        snprintf(err, (size_t)errlen, "checkpoint %s: format_version %d, this build reads %d", path,
                 version, CHECKPOINT_FORMAT_VERSION);
        return -1;
    }
    return 0;
}

// Every model entry of /config must equal the running configuration.
static int check_config(hid_t file, const ModelConfig *cfg, const char *path, char *err,
                        int errlen) {
    if (H5Lexists(file, "/config", H5P_DEFAULT) <= 0) {
        snprintf(err, (size_t)errlen, "checkpoint %s: no /config group", path);
        return -1;
    }
    hid_t group = H5Gopen2(file, "/config", H5P_DEFAULT);
    if (group < 0) {
        snprintf(err, (size_t)errlen, "checkpoint %s: cannot open /config", path);
        return -1;
    }
    int status = 0;
    for (int i = 0; model_config_names[i] && status == 0; i++) {
        const char *name = model_config_names[i];
        char stored[128], running[128];
        model_config_get(cfg, name, running, sizeof(running));
        if (h5_read_string_attr(group, name, stored, sizeof(stored)) != 0) {
            snprintf(err, (size_t)errlen, "checkpoint %s: /config has no entry %s", path, name);
            status = -1;
        } else if (strcmp(stored, running) != 0) {
            snprintf(err, (size_t)errlen,
                     "checkpoint %s: config mismatch in %s: the checkpoint has %s, the run has %s",
                     path, name, stored, running);
            status = -1;
        }
    }
    H5Gclose(group);
    return status;
}

// Read this rank's part of every tensor under prefix into buf [n_local]. Collective: every
// rank opens the same datasets in the same order (errors come from the file, so they are
// the same on every rank).
static int read_tensors(hid_t file, const char *prefix, const ParamLayout *layout, float *buf,
                        const char *file_path, char *err, int errlen) {
    hid_t dxpl = collective_transfer(file_path);
    int status = 0;
    for (int i = 0; i < layout->n_tensors && status == 0; i++) {
        const ParamTensor *t = &layout->tensors[i];
        char path[256];
        tensor_path(path, sizeof(path), prefix, t);
        if (!h5_path_exists(file, path)) {
            snprintf(err, (size_t)errlen, "checkpoint %s: missing dataset %s", file_path, path);
            status = -1;
            break;
        }
        hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
        if (dset < 0) {
            snprintf(err, (size_t)errlen, "checkpoint %s: cannot open dataset %s", file_path, path);
            status = -1;
            break;
        }
        hid_t file_space = H5Dget_space(dset);
        hsize_t dims[2] = {0, 0};
        int ndims = file_space >= 0 ? H5Sget_simple_extent_ndims(file_space) : -1;
        if (ndims >= 0 && ndims <= 2)
            H5Sget_simple_extent_dims(file_space, dims, NULL);
        int shape_ok = ndims == t->ndim;
        for (int d = 0; d < t->ndim && shape_ok; d++)
            shape_ok = dims[d] == (hsize_t)t->shape[d];
        if (!shape_ok) {
            snprintf(err, (size_t)errlen,
                     "checkpoint %s: dataset %s has shape [%lld, %lld] (%d dims), expected "
                     "[%lld, %lld] (%d dims)",
                     file_path, path, (long long)dims[0], (long long)dims[1], ndims,
                     (long long)t->shape[0], (long long)(t->ndim == 2 ? t->shape[1] : 0), t->ndim);
            status = -1;
        } else {
            hid_t mem = select_rows(t, file_space, layout->rank, 1, path);
            if (H5Dread(dset, H5T_NATIVE_FLOAT, mem, file_space, dxpl, buf + t->offset) < 0) {
                snprintf(err, (size_t)errlen, "checkpoint %s: reading %s failed (corrupt file?)",
                         file_path, path);
                status = -1;
            }
            H5Sclose(mem);
        }
        if (file_space >= 0)
            H5Sclose(file_space);
        H5Dclose(dset);
    }
    H5Pclose(dxpl);
    return status;
}

static int read_scalar(hid_t file, const char *path, hid_t mem_type, void *value,
                       const char *file_path, char *err, int errlen) {
    if (!h5_path_exists(file, path)) {
        snprintf(err, (size_t)errlen, "checkpoint %s: missing dataset %s", file_path, path);
        return -1;
    }
    hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
    int ok = dset >= 0 && H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, value) >= 0;
    if (dset >= 0)
        H5Dclose(dset);
    if (!ok) {
        snprintf(err, (size_t)errlen, "checkpoint %s: reading %s failed", file_path, path);
        return -1;
    }
    return 0;
}

static int read_state(hid_t file, CheckpointState *state, int64_t *optim_step, const char *path,
                      char *err, int errlen) {
    CheckpointState s;
    int64_t ostep;
    if (read_scalar(file, "/state/step", H5T_NATIVE_INT64, &s.step, path, err, errlen) ||
        read_scalar(file, "/state/data_cursor", H5T_NATIVE_INT64, &s.data_cursor, path, err,
                    errlen) ||
        read_scalar(file, "/state/seed", H5T_NATIVE_UINT64, &s.seed, path, err, errlen) ||
        read_scalar(file, "/state/rng", H5T_NATIVE_UINT64, &s.rng, path, err, errlen) ||
        read_scalar(file, "/optim/step", H5T_NATIVE_INT64, &ostep, path, err, errlen))
        return -1;
    if (state)
        *state = s;
    if (optim_step)
        *optim_step = ostep;
    return 0;
}

int checkpoint_load(MPI_Comm comm, const char *path, const ModelConfig *cfg,
                    const ParamLayout *layout, float *params, float *m, float *v, float *master,
                    CheckpointState *state, int64_t *optim_step, char *err, int errlen) {
    h5_quiet();
    FILE *probe = fopen(path, "rb");
    int exists = probe != NULL;
    if (probe)
        fclose(probe);
    // Every rank sees the same file system, but agree anyway before a collective open.
    int all_exist = exists;
    mpi_check(MPI_Allreduce(&exists, &all_exist, 1, MPI_INT, MPI_MIN, comm),
              "MPI_Allreduce (checkpoint exists)");
    if (!all_exist) {
        snprintf(err, (size_t)errlen, "checkpoint %s: no such file (or not readable)", path);
        return -1;
    }
    hid_t fapl = mpio_access(comm, path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(err, (size_t)errlen,
                 "checkpoint %s: cannot open as HDF5 (truncated or corrupt file?)", path);
        return -1;
    }
    int status = check_format_version(file, path, err, errlen);
    if (status == 0)
        status = check_config(file, cfg, path, err, errlen);
    if (status == 0)
        status = read_tensors(file, "", layout, params, path, err, errlen);
    if (status == 0)
        status = read_tensors(file, "/optim/m", layout, m, path, err, errlen);
    if (status == 0)
        status = read_tensors(file, "/optim/v", layout, v, path, err, errlen);
    if (status == 0 && master)
        status = read_tensors(file, "/optim/master", layout, master, path, err, errlen);
    if (status == 0)
        status = read_state(file, state, optim_step, path, err, errlen);
    if (H5Fclose(file) < 0 && status == 0) {
        snprintf(err, (size_t)errlen, "checkpoint %s: closing the file failed", path);
        status = -1;
    }
    // One answer for all ranks, so no rank goes on training while another gives up.
    int worst = status;
    mpi_check(MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MIN, comm),
              "MPI_Allreduce (checkpoint loaded)");
    if (worst != 0 && status == 0)
        snprintf(err, (size_t)errlen, "checkpoint %s: loading failed on another rank", path);
    return worst;
}

// Not collective: open `path` read-only, check its format version and open /config. 0 with
// *file and *group open (the caller closes both), or -1 with a message and nothing open.
static int open_config_group(const char *path, hid_t *file, hid_t *group, char *err, int errlen) {
    h5_quiet();
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0) {
        snprintf(err, (size_t)errlen,
                 "checkpoint %s: cannot open as HDF5 (missing, truncated or corrupt file?)", path);
        return -1;
    }
    if (check_format_version(*file, path, err, errlen) != 0) {
        H5Fclose(*file);
        return -1;
    }
    *group =
        H5Lexists(*file, "/config", H5P_DEFAULT) > 0 ? H5Gopen2(*file, "/config", H5P_DEFAULT) : -1;
    if (*group < 0) {
        snprintf(err, (size_t)errlen, "checkpoint %s: no /config group", path);
        H5Fclose(*file);
        return -1;
    }
    return 0;
}

int checkpoint_read_config(const char *path, ModelConfig *cfg, char *err, int errlen) {
    *cfg = model_config_default();
    hid_t file, group;
    if (open_config_group(path, &file, &group, err, errlen) != 0)
        return -1;
    int status = 0;
    for (int i = 0; status == 0 && model_config_names[i]; i++) {
        char value[128], why[256];
        if (h5_read_string_attr(group, model_config_names[i], value, sizeof(value)) != 0)
            continue; // an entry added after this file was written keeps its default
        if (model_config_set(cfg, model_config_names[i], value, why, sizeof(why)) != 0) {
            snprintf(err, (size_t)errlen, "checkpoint %s: /config %s: %s", path,
                     model_config_names[i], why);
            status = -1;
        }
    }
    H5Gclose(group);
    H5Fclose(file);
    return status;
}

int checkpoint_read_setting(const char *path, const char *key, char *out, int outlen) {
    char err[256];
    hid_t file, group;
    if (open_config_group(path, &file, &group, err, sizeof(err)) != 0)
        return -1;
    int status = h5_read_string_attr(group, key, out, outlen);
    H5Gclose(group);
    H5Fclose(file);
    return status;
}
