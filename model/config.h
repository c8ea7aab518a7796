// HSPMN-SM configuration: every entry of ../shared/MODEL.md, plus the baseline variants.
// Defaults are the reference "seed" configuration.
#pragma once
#include <stdint.h>

typedef enum { ATTN_SPARSE = 0, ATTN_DENSE = 1 } AttnKind;      // attn=sparse|dense
typedef enum { FFN_MEMORY = 0, FFN_DENSE = 1 } FfnKind;         // ffn=memory|dense
typedef enum { ROUTE_TOPN = 0, ROUTE_THRESHOLD = 1 } RouteKind; // route=topn|threshold

typedef struct ModelConfig {
    int vocab_size;      // V
    int d_model;         // H
    int n_layers;        // L
    int n_heads;         // nh; head_dim = H / nh
    int n_kv_heads;      // nkv
    int seq_len;         // T
    int conv_kernel;     // Kc
    int mlp_mult;        // m
    double capacity;     // rho
    int n_slots;         // S
    int ptr_dim;         // R
    int top_k;           // K
    double rope_theta;   // theta
    double route_loss;   // lambda_r
    double entropy_loss; // lambda_e
    AttnKind attn;
    FfnKind ffn;
    RouteKind route; // topn in training; threshold for causal generation
    int gate_fixed;  // 1: the attention gate is fixed at 1 (tests; implied by attn=dense)
} ModelConfig;

// The seed configuration of MODEL.md.
ModelConfig model_config_default(void);
// A tiny configuration for tests: L2 H32 4q/2kv heads T16 S64 K4 R8 V50.
ModelConfig model_config_tiny(void);

// Check every constraint (H % nh == 0, nh % nkv == 0, hd even, K <= S, 0 < rho <= 1, ...).
// Returns 0 when valid; otherwise writes a message naming the entry and its value into
// err (size errlen) and returns -1.
int model_config_validate(const ModelConfig *c, char *err, int errlen);

int model_head_dim(const ModelConfig *c);
// n_sel = ceil(rho * T - 1e-6) in double precision, clamped to [1, T]; T for attn=dense.
int model_n_selected(const ModelConfig *c, int T);

// Set one entry by its MODEL.md name ("d_model", "capacity", "attn", ...) from a string.
// Returns 0 on success, -1 (message in err) for an unknown name or a malformed value.
int model_config_set(ModelConfig *c, const char *name, const char *value, char *err, int errlen);
// Entry names in table order, NULL-terminated, and the value of one as text: for --help,
// the printed config table and the checkpoint's /config attributes.
extern const char *const model_config_names[];
void model_config_get(const ModelConfig *c, const char *name, char *out, int outlen);
