// Small HDF5 helpers shared by io/.
#include "io/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"

int64_t h5_check_at(const char *file, int line, int64_t status, const char *what,
                    const char *path) {
    if (status < 0)
        hs_fatal_at(file, line, "HDF5: %s failed for %s", what, path);
    return status;
}

void h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5_write_string_attr(hid_t loc, const char *name, const char *value, const char *path) {
    hid_t type = h5_check(H5Tcopy(H5T_C_S1), "H5Tcopy", path);
    h5_check(H5Tset_size(type, strlen(value) + 1), "H5Tset_size", path);
    h5_check(H5Tset_strpad(type, H5T_STR_NULLTERM), "H5Tset_strpad", path);
    hid_t space = h5_check(H5Screate(H5S_SCALAR), "H5Screate", path);
    hid_t attr = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0)
        hs_fatal("HDF5: cannot create attribute %s in %s", name, path);
    h5_check(H5Awrite(attr, type, value), "H5Awrite (string attribute)", path);
    h5_check(H5Aclose(attr), "H5Aclose", path);
    h5_check(H5Sclose(space), "H5Sclose", path);
    h5_check(H5Tclose(type), "H5Tclose", path);
}

int h5_read_string_attr(hid_t loc, const char *name, char *out, int outlen) {
    if (H5Aexists(loc, name) <= 0)
        return -1;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0)
        return -1;
    int status = -1;
    hid_t type = H5Aget_type(attr);
    if (type >= 0 && H5Tget_class(type) == H5T_STRING) {
        if (H5Tis_variable_str(type) > 0) {
            char *value = NULL;
            hid_t mem = H5Tcopy(H5T_C_S1);
            H5Tset_size(mem, H5T_VARIABLE);
            if (H5Aread(attr, mem, &value) >= 0 && value) {
                snprintf(out, (size_t)outlen, "%s", value);
                H5free_memory(value);
                status = 0;
            }
            H5Tclose(mem);
        } else {
            size_t size = H5Tget_size(type);
            char *value = hs_calloc(size + 1, 1);
            if (H5Aread(attr, type, value) >= 0) {
                snprintf(out, (size_t)outlen, "%s", value);
                status = 0;
            }
            free(value);
        }
    }
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return status;
}

int h5_path_exists(hid_t file, const char *path) {
    char prefix[512];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(prefix) || path[0] != '/')
        return 0;
    // Test "/a", "/a/b", ... in turn: H5Lexists needs every parent to exist.
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        if (H5Lexists(file, prefix, H5P_DEFAULT) <= 0)
            return 0;
    }
    return 1;
}
