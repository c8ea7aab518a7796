// HSPMN-SM configuration: defaults, validation, and setting entries by name from text
// (command-line flags, checkpoint attributes).
#include "model/config.h"

#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ModelConfig model_config_default(void) {
    ModelConfig c = {
        .vocab_size = 50257,
        .d_model = 512,
        .n_layers = 8,
        .n_heads = 8,
        .n_kv_heads = 2,
        .seq_len = 4096,
        .conv_kernel = 4,
        .mlp_mult = 2,
        .capacity = 0.2,
        .n_slots = 65536,
        .ptr_dim = 32,
        .top_k = 8,
        .rope_theta = 10000.0,
        .route_loss = 0.01,
        .entropy_loss = 0.001,
        .attn = ATTN_SPARSE,
        .ffn = FFN_MEMORY,
        .route = ROUTE_TOPN,
        .gate_fixed = 0,
    };
    return c;
}

ModelConfig model_config_tiny(void) {
    ModelConfig c = model_config_default();
    c.vocab_size = 50;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.seq_len = 16;
    c.conv_kernel = 4;
    c.mlp_mult = 2;
    c.capacity = 0.2;
    c.n_slots = 64;
    c.ptr_dim = 8;
    c.top_k = 4;
    return c;
}

int model_head_dim(const ModelConfig *c) {
    return c->d_model / c->n_heads;
}

int model_n_selected(const ModelConfig *c, int T) {
    if (c->attn == ATTN_DENSE)
        return T;
    // The 1e-6 keeps products that are integers in exact arithmetic (0.25 * 16) from
    // rounding up when the double lands a hair above the integer.
    double n = ceil(c->capacity * (double)T - 1e-6);
    if (n < 1.0)
        return 1;
    if (n > (double)T)
        return T;
    return (int)n;
}

// ---- validation ----------------------------------------------------------------------

typedef struct PositiveEntry {
    const char *name;
    int value;
} PositiveEntry;

int model_config_validate(const ModelConfig *c, char *err, int errlen) {
    const PositiveEntry sizes[] = {
        {"vocab_size", c->vocab_size},   {"d_model", c->d_model},       {"n_layers", c->n_layers},
        {"n_heads", c->n_heads},         {"n_kv_heads", c->n_kv_heads}, {"seq_len", c->seq_len},
        {"conv_kernel", c->conv_kernel}, {"mlp_mult", c->mlp_mult},     {"n_slots", c->n_slots},
        {"ptr_dim", c->ptr_dim},         {"top_k", c->top_k},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i].value <= 0) {
            snprintf(err, errlen, "%s=%d must be a positive integer", sizes[i].name,
                     sizes[i].value);
            return -1;
        }
    }
    if (c->d_model % c->n_heads != 0) {
        snprintf(err, errlen, "d_model=%d is not divisible by n_heads=%d", c->d_model, c->n_heads);
        return -1;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        snprintf(err, errlen, "n_heads=%d is not divisible by n_kv_heads=%d", c->n_heads,
                 c->n_kv_heads);
        return -1;
    }
    if (model_head_dim(c) % 2 != 0) {
        snprintf(err, errlen, "head_dim=%d (d_model=%d / n_heads=%d) must be even for RoPE",
                 model_head_dim(c), c->d_model, c->n_heads);
        return -1;
    }
    if (c->top_k > c->n_slots) {
        snprintf(err, errlen, "top_k=%d exceeds n_slots=%d", c->top_k, c->n_slots);
        return -1;
    }
    if (!(c->capacity > 0.0 && c->capacity <= 1.0)) {
        snprintf(err, errlen, "capacity=%g must lie in (0, 1]", c->capacity);
        return -1;
    }
    if (!(c->rope_theta > 0.0 && isfinite(c->rope_theta))) {
        snprintf(err, errlen, "rope_theta=%g must be a positive number", c->rope_theta);
        return -1;
    }
    if (!(c->route_loss >= 0.0 && isfinite(c->route_loss))) {
        snprintf(err, errlen, "route_loss=%g must be a non-negative number", c->route_loss);
        return -1;
    }
    if (!(c->entropy_loss >= 0.0 && isfinite(c->entropy_loss))) {
        snprintf(err, errlen, "entropy_loss=%g must be a non-negative number", c->entropy_loss);
        return -1;
    }
    if (c->attn != ATTN_SPARSE && c->attn != ATTN_DENSE) {
        snprintf(err, errlen, "attn=%d must be sparse or dense", (int)c->attn);
        return -1;
    }
    if (c->ffn != FFN_MEMORY && c->ffn != FFN_DENSE) {
        snprintf(err, errlen, "ffn=%d must be memory or dense", (int)c->ffn);
        return -1;
    }
    if (c->route != ROUTE_TOPN && c->route != ROUTE_THRESHOLD) {
        snprintf(err, errlen, "route=%d must be topn or threshold", (int)c->route);
        return -1;
    }
    if (c->gate_fixed != 0 && c->gate_fixed != 1) {
        snprintf(err, errlen, "gate_fixed=%d must be 0 or 1", c->gate_fixed);
        return -1;
    }
    return 0;
}

// ---- entries by name -------------------------------------------------------------------

typedef enum { ENTRY_INT, ENTRY_DOUBLE, ENTRY_CHOICE } EntryType;

// One row of the name table: where the entry lives in ModelConfig and how it is parsed.
typedef struct ConfigEntry {
    const char *name;
    EntryType type;
    size_t offset;          // offsetof the field in ModelConfig
    const char *choices[3]; // ENTRY_CHOICE: the text of enum values 0, 1 (NULL-terminated)
} ConfigEntry;

#define INT_ENTRY(field)                                                                           \
    {                                                                                              \
#field, ENTRY_INT, offsetof(ModelConfig, field), {                                         \
            NULL                                                                                   \
        }                                                                                          \
    }
#define DOUBLE_ENTRY(field)                                                                        \
    {                                                                                              \
#field, ENTRY_DOUBLE, offsetof(ModelConfig, field), {                                      \
            NULL                                                                                   \
        }                                                                                          \
    }

static const ConfigEntry entries[] = {
    INT_ENTRY(vocab_size),
    INT_ENTRY(d_model),
    INT_ENTRY(n_layers),
    INT_ENTRY(n_heads),
    INT_ENTRY(n_kv_heads),
    INT_ENTRY(seq_len),
    INT_ENTRY(conv_kernel),
    INT_ENTRY(mlp_mult),
    DOUBLE_ENTRY(capacity),
    INT_ENTRY(n_slots),
    INT_ENTRY(ptr_dim),
    INT_ENTRY(top_k),
    DOUBLE_ENTRY(rope_theta),
    DOUBLE_ENTRY(route_loss),
    DOUBLE_ENTRY(entropy_loss),
    {"attn", ENTRY_CHOICE, offsetof(ModelConfig, attn), {"sparse", "dense", NULL}},
    {"ffn", ENTRY_CHOICE, offsetof(ModelConfig, ffn), {"memory", "dense", NULL}},
    {"route", ENTRY_CHOICE, offsetof(ModelConfig, route), {"topn", "threshold", NULL}},
    {"gate_fixed", ENTRY_CHOICE, offsetof(ModelConfig, gate_fixed), {"0", "1", NULL}},
};
#define N_ENTRIES ((int)(sizeof(entries) / sizeof(entries[0])))

const char *const model_config_names[] = {
    "vocab_size",   "d_model",  "n_layers", "n_heads", "n_kv_heads", "seq_len",    "conv_kernel",
    "mlp_mult",     "capacity", "n_slots",  "ptr_dim", "top_k",      "rope_theta", "route_loss",
    "entropy_loss", "attn",     "ffn",      "route",   "gate_fixed", NULL,
};

static const ConfigEntry *find_entry(const char *name) {
    for (int i = 0; i < N_ENTRIES; i++)
        if (strcmp(entries[i].name, name) == 0)
            return &entries[i];
    return NULL;
}

// Whole-string integer > 0 that fits an int; anything else ("12x", "", "-3", "0") fails.
static int parse_positive_int(const char *text, int *out) {
    if (text[0] == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0 || v > 2147483647L)
        return -1;
    *out = (int)v;
    return 0;
}

// Whole-string finite number; the range is checked by the caller.
static int parse_finite_double(const char *text, double *out) {
    if (text[0] == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int set_double(ModelConfig *c, const ConfigEntry *e, const char *value, char *err,
                      int errlen) {
    double v;
    if (parse_finite_double(value, &v) != 0) {
        snprintf(err, errlen, "%s=%s is not a number", e->name, value);
        return -1;
    }
    int ok;
    const char *range;
    if (strcmp(e->name, "capacity") == 0)
        ok = v > 0.0 && v <= 1.0, range = "must lie in (0, 1]";
    else if (strcmp(e->name, "rope_theta") == 0)
        ok = v > 0.0, range = "must be positive";
    else
        ok = v >= 0.0, range = "must not be negative";
    if (!ok) {
        snprintf(err, errlen, "%s=%s %s", e->name, value, range);
        return -1;
    }
    *(double *)((char *)c + e->offset) = v;
    return 0;
}

static int set_choice(ModelConfig *c, const ConfigEntry *e, const char *value, char *err,
                      int errlen) {
    for (int k = 0; e->choices[k] != NULL; k++) {
        if (strcmp(e->choices[k], value) == 0) {
            // Every choice field is an int-sized enum or an int.
            *(int *)((char *)c + e->offset) = k;
            return 0;
        }
    }
    snprintf(err, errlen, "%s=%s is not one of %s|%s", e->name, value, e->choices[0],
             e->choices[1]);
    return -1;
}

int model_config_set(ModelConfig *c, const char *name, const char *value, char *err, int errlen) {
    const ConfigEntry *e = find_entry(name);
    if (e == NULL) {
        snprintf(err, errlen, "unknown model entry '%s'", name);
        return -1;
    }
    switch (e->type) {
    case ENTRY_INT: {
        int v;
        if (parse_positive_int(value, &v) != 0) {
            snprintf(err, errlen, "%s=%s is not a positive integer", name, value);
            return -1;
        }
        *(int *)((char *)c + e->offset) = v;
        return 0;
    }
    case ENTRY_DOUBLE:
        return set_double(c, e, value, err, errlen);
    case ENTRY_CHOICE:
        return set_choice(c, e, value, err, errlen);
    }
    return -1;
}

// The shortest %g text that reads back as the same double (0.2 prints as "0.2").
static void format_double(double v, char *out, int outlen) {
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(out, outlen, "%.*g", precision, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

void model_config_get(const ModelConfig *c, const char *name, char *out, int outlen) {
    const ConfigEntry *e = find_entry(name);
    if (e == NULL) {
        snprintf(out, outlen, "?");
        return;
    }
    const char *field = (const char *)c + e->offset;
    switch (e->type) {
    case ENTRY_INT:
        snprintf(out, outlen, "%d", *(const int *)field);
        break;
    case ENTRY_DOUBLE:
        format_double(*(const double *)field, out, outlen);
        break;
    case ENTRY_CHOICE: {
        int k = *(const int *)field;
        snprintf(out, outlen, "%s", (k == 0 || k == 1) ? e->choices[k] : "?");
        break;
    }
    }
}
