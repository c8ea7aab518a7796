// HSPMN-SM forward and backward, written once over the op table (kernels/ops.h).
#pragma once
#include <stdint.h>

#include "dist/comm.h"
#include "dist/slot_exchange.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/params.h"
#include "model/profile.h"

// Saved activations of one layer, for the backward. Shapes with N = B*T, M = B*n_sel.
typedef struct LayerActs {
    float *x; // [N, H] block input (residual stream)
    // u, c, act, u_sel, hn: shared by every layer with recompute_elementwise
    float *u;      // [N, H] RMSNorm(x; norm_a)
    float *rstd_a; // [N]
    float *c;      // [N, H] conv output
    float *pre;    // [N, mH] w1 c + b1
    float *act;    // [N, mH] GELU(pre)
    float *r;      // [N] router logits
    float *z;      // [N] r + Gumbel noise (training)
    int32_t *sel;  // [M] flat indices of the query tokens, ascending per sequence
    int32_t *qpos; // [M] their positions in the sequence
    float *u_sel;  // [M, H]
    float *q;      // [M, nh*hd] after RoPE
    float *k, *v;  // [N, nkv*hd] (k after RoPE)
    float *o;      // [M, nh*hd] attention output
    float *lse;    // [M, nh]
    float *ao;     // [M, H] wo . o
    float *h;      // [N, H] x + f + a
    float *hn;     // [N, H] RMSNorm(h; norm_m)
    float *rstd_m; // [N]
    // ffn=memory
    float *p;       // [N, R] pointers
    float *top_s;   // [N, K]
    int32_t *top_i; // [N, K] global slot ids (read by the slot-usage metrics)
    float *w;       // [N, K] softmax weights
    float *krows;   // [N, K, R] the key rows read (shared by the layers with refetch_slot_rows)
    // The value rows are read where they are (the slot exchange says where, value_rows):
    // with one rank in the table itself; with several in vrows_received, the rows their
    // owners sent (NULL with one rank; shared by the layers with refetch_slot_rows).
    float *vrows_received; // [N*K, H]
    SlotValueRows value_rows;
    // ffn=dense
    float *ffn_pre, *ffn_act; // [N, 4H]
    // bf16_activations: the layer's bf16 copies of the activations its GEMMs read
    // (KEPT_GEMM_INPUT, and u and o: KEPT_GEMM_INPUT_WIDENED). A forward GEMM that reads each
    // writes its copy (linear_forward_keep_bf16) and the backward GEMMs read it as it is
    // (linear_backward_bf16_input). NULL otherwise. Shapes as above.
    uint16_t *u16, *c16, *act16, *u_sel16, *o16, *hn16, *ffn_act16;
} LayerActs;

// What one forward is asked to do.
typedef struct ForwardArgs {
    const int32_t *tokens;  // [B, T] backend buffer
    const int32_t *targets; // [B, T] backend buffer, -1 = no loss at that position; NULL: no loss
    int training;           // 1: Gumbel noise on the router logits
    uint64_t seed;          // run seed (Gumbel key)
    uint32_t step;          // optimizer step (Gumbel counter)
    uint32_t seq_offset;    // global index of this rank's first sequence in the step
    float ce_scale;         // 1 / (scored targets in the global batch): the CE is a mean over them
    float token_scale;      // 1 / (tokens in the global batch): route BCE and entropy means
    float seq_scale;        // 1 / (sequences in the global batch)
    // 1: model_backward follows this forward (training). The LM head's backward then runs
    // inside the forward, chunk by chunk, while each chunk's logits are at hand; 0 (eval,
    // sampling, finite differences): no gradient is touched, and a model_backward that
    // follows anyway recomputes the head's logits chunk by chunk (correct, slower).
    int want_grad;
} ForwardArgs;

// Loss parts, each summed over layers where it applies (already weighted by lambda).
typedef struct LossParts {
    double ce, route, entropy, total;
} LossParts;

// How a built model trades memory for work (model_build_with; model_build: all 0).
typedef struct ModelOptions {
    // 1: the backward fetches again the slot rows each token read (slot_exchange_refetch)
    // instead of keeping them from the forward: the key rows, and with several ranks the
    // value rows received from their owners (one rank reads its table's value rows where
    // they are, and keeps none). Saves (L - 1) N K R floats with one rank (112 MB at the seed
    // shape, micro-batch 4) and (L - 1) N K (R + H) with several (2.0 GB), for one more key
    // row gather a layer in the backward and, with several ranks, one more exchange of the
    // rows. The gradients are bitwise the same.
    int refetch_slot_rows;
    // 1: u, c, GELU(pre), u_sel and hn (the outputs of the two RMSNorms, the conv, GELU and
    // the query gather) are one buffer each, shared by the layers: the forward overwrites
    // them layer by layer and the backward recomputes each layer's before using them, from
    // what it keeps (x, pre, sel, h and the norms' rstd). Saves (L - 1) N (3 H + mH + rho H)
    // floats (1.2 GB at the seed shape, micro-batch 4) for one RMSNorm pair, conv, GELU and
    // gather a layer in the backward. The gradients are bitwise the same.
    int recompute_elementwise;
    // 1: the activations the backward reads (x, the norm, conv and MLP outputs, q, k, v, o,
    // h, the pointers, ...) are kept in bf16 between the forward and the backward, halving
    // them. A layer computes in one fp32 working set shared by the layers; the forward
    // rounds each layer's results into the layer's bf16 copies (ops->to_bf16) and the
    // backward widens them back into the working set (ops->from_bf16) before using them.
    // The last layer keeps no copies: its backward runs first, on the working set as its
    // forward left it.
    // The small per-token values (the norms' rstd, router logits, log-sum-exps, top-K
    // scores and weights) stay fp32, as do the slot rows (parameters, not activations). The
    // forward and its losses are bitwise the same; the gradients are those of the rounded
    // activations (relative differences around 1e-3).
    int bf16_activations;
} ModelOptions;

// How a kept activation's bf16 copy is made and read back.
typedef enum KeptKind {
    // keep_group rounds it after the layer's forward; restore_layer widens it back.
    KEPT_ROUNDED = 0,
    // A GEMM input: the forward GEMM writes the copy (linear_forward_keep_bf16) and only
    // backward GEMMs read it (linear_backward_bf16_input): never widened.
    KEPT_GEMM_INPUT,
    // A GEMM input that other backward ops read too (u: the conv and the router; o: the
    // attention backward): its GEMM
    // writes the copy, backward GEMMs read it, and restore_layer widens it for the others.
    KEPT_GEMM_INPUT_WIDENED,
} KeptKind;

// One activation a bf16 model keeps in bf16 (ModelOptions.bf16_activations).
typedef struct KeptTensor {
    float *work;    // [count] fp32 working buffer, shared by the layers
    uint16_t *kept; // [count] bf16 bits: this layer's copy
    size_t count;
    KeptKind kind;
} KeptTensor;

// The kept tensors of one layer, in two groups: those made by the token mixing (kept once
// it is done, before the memory stage writes the next layer's input over the shared x) and
// those made by the memory stage.
enum { MODEL_MAX_KEPT = 16 };
typedef struct KeptGroup {
    KeptTensor t[MODEL_MAX_KEPT];
    int n;
} KeptGroup;
typedef struct LayerKept {
    KeptGroup mix, memory;
} LayerKept;

typedef struct Model {
    ModelConfig cfg;
    const Ops *ops;
    Comm *comm; // NULL: a single rank
    ParamLayout layout;
    float *params; // [layout.n_local] backend buffer
    float *grads;  // [layout.n_local] backend buffer
    ModelView p, g;
    int B, T, n_sel;        // micro-batch the activations are sized for
    LayerActs *acts;        // [L]
    LayerKept *kept;        // [L] each layer's bf16 copies (empty without bf16_activations)
    void *activation_arena; // one backend allocation holding every activation buffer
    float *embed_out;       // [N, H]
    float *y_final;         // [N, H] output of the last block
    float *yn;              // [N, H] RMSNorm(y; norm_f)
    float *rstd_f;          // [N]
    // The LM head runs over chunks of head_chunk tokens, so the [N, V] logits never exist:
    int head_chunk; // tokens per chunk (model_build: MODEL_HEAD_CHUNK_BYTES of logits)
    float *logits;  // [head_chunk, V + 8] scratch of one chunk's logits (lm_head_loss); own alloc
    int32_t *predictions; // [N] argmax of each token's logits, after a forward with targets
    float *dyn;           // [N, H] d loss / d yn: written by a forward with want_grad (or by
                          // model_backward), read by model_backward. Part of Model.scratch.
    float *losses;        // [3] backend buffer: ce, route, entropy
    SlotExchange *slots;
    ModelOptions opt;
    ForwardArgs last; // arguments of the last forward, for the backward
    float *scratch;   // backend scratch for the backward, sized by model_build
    size_t scratch_floats;
    Profiler *profiler; // NULL: no phase timing (the markers cost one NULL check); owned by
                        // whoever profiles (the bench), attached after model_build
} Model;

// Allocate parameters, gradients and activations for micro-batches of B sequences of T
// tokens on `ops`'s backend. comm may be NULL. Parameters are zero until model_init.
void model_build(Model *m, const ModelConfig *cfg, const Ops *ops, Comm *comm, int B, int T);
// The same with memory options (NULL: all 0, as model_build).
void model_build_with(Model *m, const ModelConfig *cfg, const Ops *ops, Comm *comm, int B, int T,
                      const ModelOptions *opt);
void model_free(Model *m);
// The bytes model_build_with allocates in one arena for the activations and in another for
// the backward's scratch, on one of `world` ranks, with memory options `opt` (NULL: none),
// measured without allocating: what a benchmark checks against the free memory before
// building a variant.
size_t model_memory_bytes(const ModelConfig *cfg, int B, int T, int world, const ModelOptions *opt);
// MODEL.md init from `seed` (identical global tensors for every rank count).
void model_init(Model *m, uint64_t seed);
// Forward pass; with targets, the loss parts are computed into m->losses.
void model_forward(Model *m, const ForwardArgs *args);
// Backward of the last forward; gradients are ADDED into m->grads (zero them with
// model_zero_grad before the first micro-batch of a step).
void model_backward(Model *m);
void model_zero_grad(Model *m);
// Copy the loss parts of the last forward to the host (a sync point).
LossParts model_losses(const Model *m);

// Logits of tokens [first, first + count) of the last forward (count <= m->head_chunk),
// computed from its yn into m->logits, which is returned: [count, V] backend buffer, valid
// until the next forward or model_logits. (Sampling reads the last position's row; a
// forward itself only keeps the loss and the predictions.)
const float *model_logits(Model *m, int first, int count);
// Run the LM head over chunks of `rows` tokens from now on (reallocates m->logits). Tests use
// it to force several chunks on a tiny batch; any rows >= 1 gives the same results up to
// fp32 summation order.
void model_set_head_chunk(Model *m, int rows);
// The head_chunk model_build chooses for vocabulary V and N tokens per micro-batch.
int model_default_head_chunk(int V, int N);
