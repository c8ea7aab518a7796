// File-system side of checkpoints (see checkpoint_files.h).
#include "io/checkpoint_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "kernels/error.h"

void checkpoint_make_dir(const char *run_dir) {
    if (mkdir(run_dir, 0755) != 0 && errno != EEXIST)
        hs_fatal("cannot create run dir %s: %s", run_dir, strerror(errno));
    struct stat st;
    if (stat(run_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        hs_fatal("run dir %s exists but is not a directory", run_dir);
}

static void fsync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0)
        hs_fatal("cannot open %s to fsync it: %s", path, strerror(errno));
    if (fsync(fd) != 0)
        hs_fatal("fsync of %s failed: %s", path, strerror(errno));
    if (close(fd) != 0)
        hs_fatal("close of %s failed: %s", path, strerror(errno));
}

void checkpoint_fsync_file(const char *path) {
    fsync_path(path, O_RDONLY);
}

void checkpoint_publish(const char *tmp_path, const char *final_path, const char *run_dir) {
    if (rename(tmp_path, final_path) != 0)
        hs_fatal("cannot rename checkpoint %s to %s: %s", tmp_path, final_path, strerror(errno));
    fsync_path(run_dir, O_RDONLY);
}

int64_t checkpoint_step_of_name(const char *name) {
    const char *prefix = "ckpt_", *suffix = ".h5";
    size_t len = strlen(name), plen = strlen(prefix), slen = strlen(suffix);
    if (len <= plen + slen || strncmp(name, prefix, plen) != 0 ||
        strcmp(name + len - slen, suffix) != 0)
        return -1;
    // We write ckpt_<step>.h5 without leading zeros; a name with them would be rebuilt as
    // another path, so it is not taken for a checkpoint.
    if (name[plen] == '0' && len - slen - plen > 1)
        return -1;
    int64_t step = 0;
    for (size_t i = plen; i < len - slen; i++) {
        if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10)
            return -1;
        step = step * 10 + (name[i] - '0');
    }
    return step;
}

// Steps of the complete checkpoints in run_dir, newest first; *count of them. NULL if none.
static int64_t *list_steps(const char *run_dir, int *count) {
    *count = 0;
    DIR *dir = opendir(run_dir);
    if (!dir)
        return NULL;
    int64_t *steps = NULL;
    int capacity = 0;
    for (struct dirent *e = readdir(dir); e; e = readdir(dir)) {
        int64_t step = checkpoint_step_of_name(e->d_name);
        if (step < 0)
            continue;
        if (*count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            steps = realloc(steps, sizeof(int64_t) * (size_t)capacity);
            if (!steps)
                hs_fatal("out of host memory listing %s", run_dir);
        }
        steps[(*count)++] = step;
    }
    closedir(dir);
    // Insertion sort, newest first: a run dir holds a handful of checkpoints.
    for (int i = 1; i < *count; i++)
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            int64_t tmp = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = tmp;
        }
    return steps;
}

void checkpoint_prune(const char *run_dir, int keep_last, int64_t just_written) {
    if (keep_last <= 0)
        return;
    int count;
    int64_t *steps = list_steps(run_dir, &count);
    // Count from the checkpoint just written: the newest keep_last up to it stay.
    int first = 0;
    while (first < count && steps[first] > just_written)
        first++;
    for (int i = first + keep_last; i < count; i++) {
        char path[1200];
        snprintf(path, sizeof(path), "%s/ckpt_%lld.h5", run_dir, (long long)steps[i]);
        if (unlink(path) != 0)
            hs_fatal("cannot delete old checkpoint %s: %s", path, strerror(errno));
    }
    free(steps);
}

int64_t checkpoint_find_latest(const char *run_dir, char *path_out, int path_len) {
    int count;
    int64_t *steps = list_steps(run_dir, &count);
    int64_t latest = count > 0 ? steps[0] : -1;
    free(steps);
    if (latest >= 0 && path_out &&
        snprintf(path_out, (size_t)path_len, "%s/ckpt_%lld.h5", run_dir, (long long)latest) >=
            path_len)
        hs_fatal("checkpoint path %s/ckpt_%lld.h5 is longer than %d characters", run_dir,
                 (long long)latest, path_len - 1);
    return latest;
}
