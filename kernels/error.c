#include "kernels/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static hs_abort_hook abort_hook = NULL;
static int log_rank = -1;

void hs_set_abort_hook(hs_abort_hook hook) {
    abort_hook = hook;
}

void hs_set_log_rank(int rank) {
    log_rank = rank;
}

_Noreturn void hs_fatal_at(const char *file, int line, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    if (log_rank >= 0)
        fprintf(stderr, "[rank %d] ", log_rank);
    fprintf(stderr, "error: %s:%d: ", file, line);
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    fflush(stderr);
    va_end(args);
    if (abort_hook)
        abort_hook(1);
    exit(1);
}

void *hs_malloc_at(const char *file, int line, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        hs_fatal_at(file, line, "out of host memory allocating %zu bytes", bytes);
    return p;
}

void *hs_calloc_at(const char *file, int line, size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        hs_fatal_at(file, line, "out of host memory allocating %zu x %zu bytes", count, size);
    return p;
}
