// Per-layer routing statistics from the model's saved activations (host side, at log steps):
// how many tokens the router would send to attention causally (sigmoid(r) > 0.5, the rule
// generation uses), and how the slot memory's reads spread over the slots.
#pragma once
#include <stdint.h>

#include "model/config.h"
#include "model/model.h"

typedef struct LayerStats {
    int n_layers, n_slots, top_k;
    int N;                    // tokens per rank in the micro-batch
    float *routed_fraction;   // [L] fraction of tokens with sigmoid(r) > 0.5 (NaN: no router)
    float *slot_hit_fraction; // [L] fraction of slots read at least once (NaN: ffn=dense)
    float *slot_entropy;      // [L] entropy (nats) of the slot-read distribution
    float *r_host;            // [N]
    int32_t *top_i_host;      // [N, K]
    int64_t *hist;            // [S] reads per slot, summed over ranks
} LayerStats;

void layer_stats_init(LayerStats *st, const ModelConfig *cfg, int N);
void layer_stats_free(LayerStats *st);
// From the last forward's activations (the last micro-batch), summed over all ranks.
// Collective.
void layer_stats_measure(LayerStats *st, const Model *m, int world);
