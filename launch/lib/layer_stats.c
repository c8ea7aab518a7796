// Routing statistics for the metrics file: read back r and top_i of every layer, count on
// the host, sum the counts over ranks.
#include "launch/lib/layer_stats.h"

#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dist/mpi_check.h"
#include "io/metrics.h"
#include "kernels/error.h"

void layer_stats_init(LayerStats *st, const ModelConfig *cfg, int N) {
    st->n_layers = cfg->n_layers;
    st->n_slots = cfg->n_slots;
    st->top_k = cfg->top_k;
    st->N = N;
    st->routed_fraction = hs_calloc((size_t)cfg->n_layers, sizeof(float));
    st->slot_hit_fraction = hs_calloc((size_t)cfg->n_layers, sizeof(float));
    st->slot_entropy = hs_calloc((size_t)cfg->n_layers, sizeof(float));
    st->r_host = hs_malloc((size_t)N * sizeof(float));
    st->top_i_host = hs_malloc((size_t)N * cfg->top_k * sizeof(int32_t));
    st->hist = hs_calloc((size_t)cfg->n_slots, sizeof(int64_t));
}

void layer_stats_free(LayerStats *st) {
    free(st->routed_fraction);
    free(st->slot_hit_fraction);
    free(st->slot_entropy);
    free(st->r_host);
    free(st->top_i_host);
    free(st->hist);
}

static double routed_fraction(LayerStats *st, const Model *m, const LayerActs *a, int world) {
    if (!a->r)
        return NAN;
    m->ops->copy_to_host(st->r_host, a->r, (size_t)st->N * sizeof(float));
    double counts[2] = {0.0, (double)st->N}; // routed, tokens
    for (int n = 0; n < st->N; n++)
        counts[0] += st->r_host[n] > 0.0f;
    if (world > 1)
        comm_host_sum_f64(m->comm, counts, 2);
    return counts[0] / counts[1];
}

static void slot_usage(LayerStats *st, const Model *m, const LayerActs *a, double *hit,
                       double *entropy) {
    if (!a->top_i) {
        *hit = NAN;
        *entropy = NAN;
        return;
    }
    size_t reads = (size_t)st->N * st->top_k;
    m->ops->copy_to_host(st->top_i_host, a->top_i, reads * sizeof(int32_t));
    memset(st->hist, 0, (size_t)st->n_slots * sizeof(int64_t));
    for (size_t i = 0; i < reads; i++) {
        int32_t slot = st->top_i_host[i];
        if (slot < 0 || slot >= st->n_slots)
            hs_fatal("slot id %d out of range [0, %d) in the saved activations", slot, st->n_slots);
        st->hist[slot]++;
    }
    mpi_check(
        MPI_Allreduce(MPI_IN_PLACE, st->hist, st->n_slots, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce(slot usage)");
    metrics_slot_usage(st->hist, st->n_slots, hit, entropy);
}

void layer_stats_measure(LayerStats *st, const Model *m, int world) {
    m->ops->synchronize();
    for (int l = 0; l < st->n_layers; l++) {
        const LayerActs *a = &m->acts[l];
        double hit, entropy;
        st->routed_fraction[l] = (float)routed_fraction(st, m, a, world);
        slot_usage(st, m, a, &hit, &entropy);
        st->slot_hit_fraction[l] = (float)hit;
        st->slot_entropy[l] = (float)entropy;
    }
}
