// Small HDF5 helpers shared by checkpoints, metrics and the HDF5 data source: checked
// calls that name the file, string attributes, and path tests.
#pragma once
#include <hdf5.h>
#include <stdint.h>

// Fatal error (file:line of the caller, `what` and `path`) when status < 0; returns status.
int64_t h5_check_at(const char *file, int line, int64_t status, const char *what, const char *path);
#define h5_check(status, what, path)                                                               \
    h5_check_at(__FILE__, __LINE__, (int64_t)(status), (what), (path))

// Turn off HDF5's own error-stack printing: our messages name the file and what failed.
void h5_quiet(void);

// Write a scalar fixed-length string attribute on loc (fatal on failure; path for messages).
void h5_write_string_attr(hid_t loc, const char *name, const char *value, const char *path);
// Read a string attribute (fixed or variable length) into out [outlen]. Returns 0, or -1
// when it is missing or not a string.
int h5_read_string_attr(hid_t loc, const char *name, char *out, int outlen);

// 1 when every component of an absolute object path exists in file (groups and the final
// link), 0 otherwise. Unlike a bare H5Lexists, a missing intermediate group is not an error.
int h5_path_exists(hid_t file, const char *path);
