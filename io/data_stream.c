// Token streams: a text file read as bytes, llm.c .bin shards, or a 1-D HDF5 dataset.
// The files of a source form one concatenated stream of tokens; sequences are read from
// it by global index (io/data.h), so nothing here keeps a read position.
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/data_internal.h"
#include "io/h5util.h"
#include "kernels/error.h"

// llm.c .bin header: 256 int32 words; [0] magic, [1] version, [2] token count.
enum { BIN_HEADER_WORDS = 256, BIN_HEADER_BYTES = 256 * 4 };
enum { BIN_MAGIC_U16 = 20240520, BIN_VERSION_U16 = 1 };
enum { BIN_MAGIC_U32 = 20240801, BIN_VERSION_U32 = 7 };

// Train reads the first 90% of a stream, eval the last 10%.
static const double TRAIN_FRACTION = 0.9;

static TokenFile *add_file(DataSource *ds, const char *path) {
    ds->files = realloc(ds->files, sizeof(TokenFile) * (size_t)(ds->n_files + 1));
    if (!ds->files)
        hs_fatal("out of host memory listing data files");
    TokenFile *f = &ds->files[ds->n_files++];
    memset(f, 0, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "%s", path);
    f->fd = -1;
    f->hid_file = -1;
    f->hid_dset = -1;
    f->first = ds->n_tokens;
    return f;
}

// Open a regular file for reading; its size in *bytes.
static int open_sized(const char *path, int *fd_out, int64_t *bytes, char *err, int errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, (size_t)errlen, "data file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, (size_t)errlen, "data file %s: not a regular file", path);
        close(fd);
        return -1;
    }
    *fd_out = fd;
    *bytes = (int64_t)st.st_size;
    return 0;
}

// Read exactly `bytes` at `offset`; a short read is an error naming the file.
static int read_exact(const TokenFile *f, void *buf, size_t bytes, int64_t offset, char *err,
                      int errlen) {
    size_t done = 0;
    while (done < bytes) {
        ssize_t got = pread(f->fd, (char *)buf + done, bytes - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(err, (size_t)errlen,
                     "data file %s: read of %zu bytes at offset %lld failed: %s", f->path, bytes,
                     (long long)offset, got < 0 ? strerror(errno) : "end of file");
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

int data_stream_open_text(DataSource *ds, const char *path, char *err, int errlen) {
    int fd;
    int64_t bytes;
    if (open_sized(path, &fd, &bytes, err, errlen))
        return -1;
    TokenFile *f = add_file(ds, path);
    f->fd = fd;
    f->token_bytes = 1;
    f->header_bytes = 0;
    f->n_tokens = bytes;
    if (bytes == 0) {
        snprintf(err, (size_t)errlen, "data file %s: empty file", path);
        return -1;
    }
    ds->n_tokens += bytes;
    return 0;
}

// Validate one .bin shard's header against its length and add it to the stream.
static int open_bin_file(DataSource *ds, const char *path, char *err, int errlen) {
    int fd;
    int64_t bytes;
    if (open_sized(path, &fd, &bytes, err, errlen))
        return -1;
    TokenFile *f = add_file(ds, path);
    f->fd = fd;
    f->header_bytes = BIN_HEADER_BYTES;
    if (bytes == 0) {
        snprintf(err, (size_t)errlen, "data file %s: empty file (expected an llm.c .bin shard)",
                 path);
        return -1;
    }
    if (bytes < BIN_HEADER_BYTES) {
        snprintf(err, (size_t)errlen,
                 "data file %s: truncated: %lld bytes, shorter than the %d-byte .bin header", path,
                 (long long)bytes, BIN_HEADER_BYTES);
        return -1;
    }
    int32_t header[BIN_HEADER_WORDS];
    if (read_exact(f, header, sizeof(header), 0, err, errlen))
        return -1;
    if (header[0] == BIN_MAGIC_U16 && header[1] == BIN_VERSION_U16) {
        f->token_bytes = 2;
    } else if (header[0] == BIN_MAGIC_U32 && header[1] == BIN_VERSION_U32) {
        f->token_bytes = 4;
    } else if (header[0] == BIN_MAGIC_U16 || header[0] == BIN_MAGIC_U32) {
        snprintf(err, (size_t)errlen, "data file %s: unsupported version %d for magic %d", path,
                 header[1], header[0]);
        return -1;
    } else {
        snprintf(err, (size_t)errlen,
                 "data file %s: bad magic %d (expected %d for uint16 or %d for uint32 tokens)",
                 path, header[0], BIN_MAGIC_U16, BIN_MAGIC_U32);
        return -1;
    }
    int64_t count = header[2];
    int64_t payload = bytes - BIN_HEADER_BYTES;
    if (count <= 0) {
        snprintf(err, (size_t)errlen, "data file %s: header token count is %lld (empty shard)",
                 path, (long long)count);
        return -1;
    }
    if (count * f->token_bytes > payload) {
        snprintf(err, (size_t)errlen,
                 "data file %s: truncated: header says %lld tokens (%lld bytes) but the file "
                 "holds %lld bytes after the header",
                 path, (long long)count, (long long)(count * f->token_bytes), (long long)payload);
        return -1;
    }
    if (count * f->token_bytes < payload) {
        snprintf(err, (size_t)errlen,
                 "data file %s: header says %lld tokens (%lld bytes) but the file holds %lld "
                 "bytes after the header (trailing data)",
                 path, (long long)count, (long long)(count * f->token_bytes), (long long)payload);
        return -1;
    }
    f->n_tokens = count;
    ds->n_tokens += count;
    return 0;
}

int data_stream_open_bin(DataSource *ds, const char *patterns, char *err, int errlen) {
    char *list = hs_malloc(strlen(patterns) + 1);
    strcpy(list, patterns);
    int status = 0;
    char *save = NULL;
    for (char *pattern = strtok_r(list, ",", &save); pattern && status == 0;
         pattern = strtok_r(NULL, ",", &save)) {
        glob_t matches;
        int rc = glob(pattern, 0, NULL, &matches);
        if (rc == GLOB_NOMATCH) {
            snprintf(err, (size_t)errlen, "data file %s: no such file (no match for the pattern)",
                     pattern);
            status = -1;
        } else if (rc != 0) {
            snprintf(err, (size_t)errlen, "data file %s: cannot expand the pattern (glob error %d)",
                     pattern, rc);
            status = -1;
        } else {
            for (size_t i = 0; i < matches.gl_pathc && status == 0; i++)
                status = open_bin_file(ds, matches.gl_pathv[i], err, errlen);
        }
        if (rc == 0)
            globfree(&matches);
    }
    free(list);
    if (status == 0 && ds->n_files == 0) {
        snprintf(err, (size_t)errlen, "data %s: no .bin files given", patterns);
        status = -1;
    }
    return status;
}

int data_stream_open_hdf5(DataSource *ds, const char *path, const char *dataset, char *err,
                          int errlen) {
    TokenFile *f = add_file(ds, path);
    snprintf(f->dataset, sizeof(f->dataset), "%s", dataset);
    // Our own messages name the file; HDF5's stack dump would only add noise.
    h5_quiet();
    if (access(path, R_OK) != 0) {
        snprintf(err, (size_t)errlen, "data file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        snprintf(err, (size_t)errlen,
                 "data file %s: not a readable HDF5 file (corrupt or truncated)", path);
        return -1;
    }
    f->hid_file = file;
    if (H5Lexists(file, dataset, H5P_DEFAULT) <= 0) {
        snprintf(err, (size_t)errlen, "data file %s: no dataset %s", path, dataset);
        return -1;
    }
    hid_t dset = H5Dopen2(file, dataset, H5P_DEFAULT);
    if (dset < 0) {
        snprintf(err, (size_t)errlen, "data file %s: cannot open dataset %s", path, dataset);
        return -1;
    }
    f->hid_dset = dset;
    hid_t type = H5Dget_type(dset);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (type >= 0)
        H5Tclose(type);
    if (cls != H5T_INTEGER) {
        snprintf(err, (size_t)errlen, "data file %s: dataset %s is not an integer dataset", path,
                 dataset);
        return -1;
    }
    hid_t space = H5Dget_space(dset);
    int ndims = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[1] = {0};
    if (ndims == 1 && H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        ndims = -1;
    if (space >= 0)
        H5Sclose(space);
    if (ndims != 1) {
        snprintf(err, (size_t)errlen, "data file %s: dataset %s must be 1-D (it has %d dims)", path,
                 dataset, ndims);
        return -1;
    }
    if (dims[0] == 0) {
        snprintf(err, (size_t)errlen, "data file %s: dataset %s is empty", path, dataset);
        return -1;
    }
    f->n_tokens = (int64_t)dims[0];
    ds->n_tokens += f->n_tokens;
    return 0;
}

int data_stream_finish(DataSource *ds, char *err, int errlen) {
    int64_t train = (int64_t)((double)ds->n_tokens * TRAIN_FRACTION);
    ds->split_begin[0] = 0;
    ds->split_len[0] = train;
    ds->split_begin[1] = train;
    ds->split_len[1] = ds->n_tokens - train;
    // Each split must hold one sequence plus its last target, and one more token so the
    // start offset (g * T) mod (n - T - 1) has a range to move in.
    for (int split = 0; split < 2; split++) {
        if (ds->split_len[split] < (int64_t)ds->T + 2) {
            snprintf(err, (size_t)errlen,
                     "data %s: too short for one sequence: %lld tokens in all, the %s split "
                     "(%s) has %lld, needs at least T + 2 = %d",
                     ds->spec, (long long)ds->n_tokens, split ? "eval" : "train",
                     split ? "last 10%" : "first 90%", (long long)ds->split_len[split], ds->T + 2);
            return -1;
        }
    }
    return 0;
}

void data_stream_close(DataSource *ds) {
    for (int i = 0; i < ds->n_files; i++) {
        TokenFile *f = &ds->files[i];
        if (f->fd >= 0)
            close(f->fd);
        if (f->hid_dset >= 0)
            H5Dclose((hid_t)f->hid_dset);
        if (f->hid_file >= 0)
            H5Fclose((hid_t)f->hid_file);
    }
    free(ds->files);
    ds->files = NULL;
    ds->n_files = 0;
}

// Read n tokens of one file from its token index `first` into out (as int64).
static int read_file_tokens(const TokenFile *f, int64_t first, int64_t n, int64_t *out, char *err,
                            int errlen) {
    if (f->hid_dset >= 0) {
        hid_t space = H5Dget_space((hid_t)f->hid_dset);
        hsize_t start[1] = {(hsize_t)first}, count[1] = {(hsize_t)n};
        hid_t mem = H5Screate_simple(1, count, NULL);
        int ok = space >= 0 && mem >= 0 &&
                 H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
                 H5Dread((hid_t)f->hid_dset, H5T_NATIVE_INT64, mem, space, H5P_DEFAULT, out) >= 0;
        if (mem >= 0)
            H5Sclose(mem);
        if (space >= 0)
            H5Sclose(space);
        if (!ok) {
            snprintf(err, (size_t)errlen, "data file %s: reading %lld tokens of %s at %lld failed",
                     f->path, (long long)n, f->dataset, (long long)first);
            return -1;
        }
        return 0;
    }
    size_t bytes = (size_t)n * (size_t)f->token_bytes;
    unsigned char *raw = hs_malloc(bytes);
    int status = read_exact(f, raw, bytes, f->header_bytes + first * f->token_bytes, err, errlen);
    for (int64_t i = 0; status == 0 && i < n; i++) {
        if (f->token_bytes == 1) {
            out[i] = raw[i];
        } else if (f->token_bytes == 2) {
            uint16_t v;
            memcpy(&v, raw + 2 * i, 2);
            out[i] = v;
        } else {
            uint32_t v;
            memcpy(&v, raw + 4 * i, 4);
            out[i] = v;
        }
    }
    free(raw);
    return status;
}

int data_stream_read(const DataSource *ds, int64_t first, int64_t n, int32_t *out, char *err,
                     int errlen) {
    int64_t *wide = hs_malloc(sizeof(int64_t) * (size_t)n);
    int64_t done = 0;
    int status = 0;
    for (int i = 0; i < ds->n_files && done < n && status == 0; i++) {
        const TokenFile *f = &ds->files[i];
        int64_t want = first + done; // stream index of the next token to read
        if (want < f->first || want >= f->first + f->n_tokens)
            continue;
        int64_t local = want - f->first;
        int64_t take = f->n_tokens - local < n - done ? f->n_tokens - local : n - done;
        status = read_file_tokens(f, local, take, wide + done, err, errlen);
        for (int64_t j = 0; status == 0 && j < take; j++) {
            int64_t token = wide[done + j];
            if (token < 0 || token >= ds->vocab_size) {
                if (f->hid_dset >= 0)
                    snprintf(err, (size_t)errlen,
                             "data file %s: token %lld at index %lld of %s is outside the "
                             "vocabulary [0, %d)",
                             f->path, (long long)token, (long long)(local + j), f->dataset,
                             ds->vocab_size);
                else
                    snprintf(err, (size_t)errlen,
                             "data file %s: token %lld at byte offset %lld is outside the "
                             "vocabulary [0, %d)",
                             f->path, (long long)token,
                             (long long)(f->header_bytes + (local + j) * f->token_bytes),
                             ds->vocab_size);
                status = -1;
            }
            out[done + j] = (int32_t)token;
        }
        done += take;
    }
    if (status == 0 && done < n) {
        snprintf(err, (size_t)errlen,
                 "data %s: read past the end of the stream (%lld + %lld > %lld)", ds->spec,
                 (long long)first, (long long)n, (long long)ds->n_tokens);
        status = -1;
    }
    free(wide);
    return status;
}
