// Fatal errors: one place that prints "file:line: reason" and ends the job.
// kernels/ knows nothing of MPI, so dist/ installs an abort hook that takes the
// other ranks down too (MPI_Abort); without a hook we exit(1).
#pragma once
#include <stddef.h>

typedef void (*hs_abort_hook)(int exit_code);

// Called by dist/ once MPI is up, so a fatal error on one rank ends every rank.
void hs_set_abort_hook(hs_abort_hook hook);

// Print "file:line: <message>" to stderr (prefixed with the rank once known) and end the job.
_Noreturn void hs_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Tag every message of this process with its rank ("[rank 3] ..."); -1 = no tag.
void hs_set_log_rank(int rank);

#define hs_fatal(...) hs_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

// malloc/calloc that never return NULL: on failure they name the size and the caller.
void *hs_malloc_at(const char *file, int line, size_t bytes);
void *hs_calloc_at(const char *file, int line, size_t count, size_t size);
#define hs_malloc(bytes)     hs_malloc_at(__FILE__, __LINE__, (bytes))
#define hs_calloc(count, sz) hs_calloc_at(__FILE__, __LINE__, (count), (sz))
