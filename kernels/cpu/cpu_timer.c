// Timers and memory accounting of the cpu backend (kernels/ops.h, "timing and memory
// accounting"). Every cpu op has finished when it returns, so a timer is simply the
// monotonic wall clock read at the moment it is recorded.
//
// Memory: cpu_alloc / cpu_free report every buffer here. The sizes are kept in a small
// open-addressing table keyed by pointer (the buffers are plain calloc'd memory that other
// code treats as ordinary heap blocks, so no size header is put in front of them).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/error.h"

// ---- timers ---------------------------------------------------------------------------

typedef struct CpuTimer {
    struct timespec at; // when timer_record last ran
} CpuTimer;

void *cpu_timer_create(void) {
    return hs_calloc(1, sizeof(CpuTimer));
}

void cpu_timer_record(void *timer) {
    CpuTimer *t = timer;
    if (clock_gettime(CLOCK_MONOTONIC, &t->at) != 0)
        hs_fatal("cpu backend: clock_gettime(CLOCK_MONOTONIC) failed");
}

float cpu_timer_elapsed_ms(void *start, void *end) {
    const CpuTimer *a = start, *b = end;
    double ms = 1e3 * (double)(b->at.tv_sec - a->at.tv_sec) +
                1e-6 * (double)(b->at.tv_nsec - a->at.tv_nsec);
    return (float)ms;
}

void cpu_timer_destroy(void *timer) {
    free(timer);
}

// ---- allocation tracking ----------------------------------------------------------------

// One live allocation. ptr == NULL marks an empty entry, TOMBSTONE a freed one (so probe
// chains that ran through it still reach the entries behind it).
typedef struct LiveBuffer {
    void *ptr;
    size_t bytes;
} LiveBuffer;

static char tombstone_byte;
#define TOMBSTONE ((void *)&tombstone_byte)

typedef struct AllocTable {
    LiveBuffer *entries; // [capacity], capacity a power of two
    size_t capacity;
    size_t used; // live entries plus tombstones
    size_t in_use_bytes, peak_bytes;
} AllocTable;

static AllocTable table;

static size_t slot_of(const void *ptr, size_t capacity) {
    uint64_t h = (uint64_t)(uintptr_t)ptr;
    h ^= h >> 33; // mix the bits: pointers share their low (alignment) and high bits
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h & (capacity - 1);
}

static void table_insert(LiveBuffer *entries, size_t capacity, void *ptr, size_t bytes) {
    size_t i = slot_of(ptr, capacity);
    while (entries[i].ptr != NULL && entries[i].ptr != TOMBSTONE)
        i = (i + 1) & (capacity - 1);
    entries[i].ptr = ptr;
    entries[i].bytes = bytes;
}

// Rebuild at a capacity that keeps the table at most half full (tombstones dropped).
static void table_grow(void) {
    size_t live = 0;
    for (size_t i = 0; i < table.capacity; i++)
        live += table.entries[i].ptr != NULL && table.entries[i].ptr != TOMBSTONE;
    size_t capacity = 64;
    while (capacity < 4 * (live + 1))
        capacity *= 2;
    LiveBuffer *entries = hs_calloc(capacity, sizeof(LiveBuffer));
    for (size_t i = 0; i < table.capacity; i++)
        if (table.entries[i].ptr != NULL && table.entries[i].ptr != TOMBSTONE)
            table_insert(entries, capacity, table.entries[i].ptr, table.entries[i].bytes);
    free(table.entries);
    table.entries = entries;
    table.capacity = capacity;
    table.used = live;
}

void cpu_track_alloc(void *ptr, size_t bytes) {
    if (2 * (table.used + 1) > table.capacity)
        table_grow();
    table_insert(table.entries, table.capacity, ptr, bytes);
    table.used++;
    table.in_use_bytes += bytes;
    if (table.in_use_bytes > table.peak_bytes)
        table.peak_bytes = table.in_use_bytes;
}

void cpu_track_free(void *ptr) {
    if (ptr == NULL || table.capacity == 0)
        return;
    size_t i = slot_of(ptr, table.capacity);
    while (table.entries[i].ptr != NULL) {
        if (table.entries[i].ptr == ptr) {
            table.in_use_bytes -= table.entries[i].bytes;
            table.entries[i].ptr = TOMBSTONE;
            table.entries[i].bytes = 0;
            return;
        }
        i = (i + 1) & (table.capacity - 1);
    }
    // Not ours: memory that ops->alloc did not hand out. free() gets it all the same; the
    // accounting has nothing to subtract.
}

size_t cpu_memory_in_use(void) {
    return table.in_use_bytes;
}

size_t cpu_memory_peak(void) {
    return table.peak_bytes;
}

void cpu_memory_reset_peak(void) {
    table.peak_bytes = table.in_use_bytes;
}

// MemAvailable / MemTotal of /proc/meminfo (kB there), or 0 when it cannot be read.
void cpu_memory_device_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = 0;
    *total_bytes = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kb = 0;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            *total_bytes = (size_t)kb * 1024;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            *free_bytes = (size_t)kb * 1024;
    }
    fclose(f);
}
