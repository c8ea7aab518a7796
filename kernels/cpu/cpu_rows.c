// Row gather and its backward, the scatter-add: embedding lookup, token selection, slot rows.
#include "kernels/cpu/cpu_ops.h"

#include <string.h>

void cpu_gather_rows(float *out, const float *table, const int32_t *idx, int M, int D,
                     int row_offset) {
    for (int m = 0; m < M; m++) {
        const float *row = table + (size_t)(idx[m] - row_offset) * D; // [D]
        memcpy(out + (size_t)m * D, row, (size_t)D * sizeof(float));
    }
}

// Serial over m: two rows may name the same table row, and += must not race.
void cpu_scatter_add_rows(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                          int row_offset) {
    for (int m = 0; m < M; m++) {
        float *drow = dtable + (size_t)(idx[m] - row_offset) * D; // [D]
        const float *src = drows + (size_t)m * D;                 // [D]
        for (int d = 0; d < D; d++)
            drow[d] += src[d];
    }
}
