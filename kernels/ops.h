// The op table: every computation the model needs, forward and backward, behind one
// struct of function pointers. kernels/cpu/ fills it with plain C (fp32, the oracle),
// kernels/cuda/ with CUDA kernels and cuBLAS calls. Model code calls ops->x(...) and never
// asks which backend it runs on.
//
// Conventions (both backends follow them; the parity tests check it):
// - All pointers are buffers of the backend (host memory for cpu, device memory for
//   cuda), fp32 unless said otherwise, row-major. Shapes are in the comments.
// - N is a count of tokens (B sequences x T positions, flattened as n = b*T + t).
// - Backward ops ACCUMULATE (+=) into every gradient they write, unless the comment says
//   "overwrites". A gradient pointer that may be NULL says so; NULL skips that gradient.
// - Loss ops add `scale * sum(...)` into a one-element buffer `loss` on the backend, so
//   the caller decides the normalisation (1 / global tokens) and no host sync is needed.
// - Indices are int32. Slot indices are global slot ids; a table shard holds the rows
//   [row_offset, row_offset + rows) of the global table.
// - Ops are asynchronous on the cuda backend (one stream per rank); ops->synchronize()
//   waits. The cpu backend is synchronous.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { BACKEND_CPU = 0, BACKEND_CUDA = 1 } BackendKind;

// Precision of the matrix products of linear_forward / linear_backward (the op table's
// GEMMs). The ops' buffers stay fp32 in every mode (a model may keep bf16 copies of its
// activations: to_bf16 below); only the inputs of the multiplications change:
//   MATMUL_FP32  fp32 inputs, fp32 accumulation (CUDA cores; the oracle's precision)
//   MATMUL_TF32  inputs rounded to TF32 (10-bit mantissa), fp32 accumulation (tensor cores)
//   MATMUL_BF16  inputs rounded to bf16 (7-bit mantissa), fp32 accumulation (tensor cores)
typedef enum { MATMUL_FP32 = 0, MATMUL_TF32 = 1, MATMUL_BF16 = 2 } MatmulPrecision;

typedef struct Ops {
    BackendKind kind;
    const char *name; // "cpu" or "cuda"

    // ---- backend lifetime and memory -------------------------------------------------
    // Bind this process to `device` (cuda: cudaSetDevice + stream + cuBLAS handle).
    void (*init)(int device);
    void (*shutdown)(void);
    void *(*alloc)(size_t bytes); // zero-filled; fatal error (naming the size) on failure
    void (*free)(void *ptr);
    void (*zero)(void *ptr, size_t bytes);
    void (*copy_to_host)(void *host_dst, const void *src, size_t bytes);
    void (*copy_from_host)(void *dst, const void *host_src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes); // backend to backend
    void (*synchronize)(void);

    // ---- row gather / scatter: embedding, token selection, slot rows ------------------
    // out[m, :] = table[idx[m] - row_offset, :]       out [M, D], table [rows, D], idx [M]
    // Every idx[m] - row_offset must lie in [0, rows).
    void (*gather_rows)(float *out, const float *table, const int32_t *idx, int M, int D,
                        int row_offset);
    // dtable[idx[m] - row_offset, :] += drows[m, :]    (the backward of gather_rows)
    void (*scatter_add_rows)(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                             int row_offset);

    // ---- elementwise ------------------------------------------------------------------
    void (*add)(float *out, const float *a, const float *b, size_t n); // out = a + b
    void (*axpy)(float *y, float alpha, const float *x, size_t n);     // y += alpha * x
    void (*scale)(float *x, float alpha, size_t n);                    // x *= alpha
    // out = GELU(x), tanh approximation                                 out, x [n]
    void (*gelu_forward)(float *out, const float *x, size_t n);
    void (*gelu_backward)(float *dx, const float *dout, const float *x, size_t n);

    // ---- bf16 storage: the activations a bf16 model keeps for its backward (model.h) -----
    // A bf16 value is held as its 16 bits (uint16_t): the upper half of an fp32.
    // dst[i] = src[i] rounded to bf16, to nearest, ties to even; a NaN stays a NaN.
    // dst [n] bf16 bits, src [n]
    void (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    // dst[i] = src[i] widened to fp32 (exact).                 dst [n], src [n] bf16 bits
    void (*from_bf16)(float *dst, const uint16_t *src, size_t n);

    // ---- RMSNorm: out = x / sqrt(mean(x^2) + 1e-6) * w ---------------------------------
    // out, x [N, H]; w [H]; rstd [N] saved for the backward (1 / sqrt(mean(x^2) + eps))
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int N, int H);
    // dx [N, H] (may be NULL), dw [H]
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x,
                             const float *w, const float *rstd, int N, int H);

    // ---- linear: out = x . w^T + b ----------------------------------------------------
    // out [N, O] (overwritten), x [N, I], w [O, I], b [O] or NULL
    void (*linear_forward)(float *out, const float *x, const float *w, const float *b, int N, int I,
                           int O);
    // linear_forward, and x16 [N, I] = to_bf16(x) as well: the bf16 copy a bf16 model keeps
    // of a GEMM input for the backward (model.h). A bf16 GEMM rounds x to bf16 anyway; it
    // writes that copy here instead of into its scratch, so keeping x costs no pass of its own.
    void (*linear_forward_keep_bf16)(float *out, uint16_t *x16, const float *x, const float *w,
                                     const float *b, int N, int I, int O);
    // dx [N, I] (may be NULL), dw [O, I], db [O] (may be NULL)
    void (*linear_backward)(float *dx, float *dw, float *db, const float *dout, const float *x,
                            const float *w, int N, int I, int O);
    // linear_backward with x held as bf16 bits (an activation a bf16 model keeps, model.h):
    // the same results as linear_backward on from_bf16(x16). A bf16 GEMM reads the copy as
    // its operand, with no widening pass and no rounding pass of its own.  x16 [N, I]
    void (*linear_backward_bf16_input)(float *dx, float *dw, float *db, const float *dout,
                                       const uint16_t *x16, const float *w, int N, int I, int O);

    // ---- causal depthwise conv over time, per sequence ---------------------------------
    // out[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-Kc+1+j, c]   (x = 0 before t = 0)
    // out, x [B, T, H]; w [H, Kc]; bias [H]
    void (*conv_forward)(float *out, const float *x, const float *w, const float *bias, int B,
                         int T, int H, int Kc);
    // dx [B, T, H] (may be NULL), dw [H, Kc], dbias [H]
    void (*conv_backward)(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                          const float *w, int B, int T, int H, int Kc);

    // ---- router -------------------------------------------------------------------------
    // Gumbel noise G = -log(-log u), u from Philox4x32-10 with key = seed (low word, high
    // word) and counter = (step, layer, seq_offset + b, t): first output word x,
    // u = ((x >> 8) + 0.5) * 2^-24.                                        out [B, T]
    void (*gumbel_noise)(float *out, uint64_t seed, uint32_t step, uint32_t layer,
                         uint32_t seq_offset, int B, int T);
    // Per sequence, the n_sel positions with the largest z (ties: lower position first),
    // written sorted ascending as flat token indices b*T + t.
    // sel [B, n_sel] int32, z [B, T]
    void (*select_topn)(int32_t *sel, const float *z, int B, int T, int n_sel);
    // Causal routing for generation: t is a query when sigmoid(r_t) > 0.5, i.e. r_t > 0.
    // Writes the flat indices of such tokens, ascending, into sel [N] and their count into
    // count [1] (int32, a backend buffer).
    void (*select_threshold)(int32_t *sel, int32_t *count, const float *r, int N);
    // pos[m] = idx[m] % T: the position in its sequence of each flat token index.
    // pos, idx [M] int32. Keeps the query positions on the backend (no host round trip).
    void (*token_positions)(int32_t *pos, const int32_t *idx, int M, int T);

    // ---- rotary embedding (GPT-NeoX layout: pairs (i, i + hd/2) of each head) ----------
    // In place. x [M, nheads, hd]; pos [M] int32 position of each row in its sequence.
    // Rotation angle pos * theta^(-2i/hd).
    void (*rope_forward)(float *x, const int32_t *pos, int M, int nheads, int hd, float theta);
    // In place: turns d(rotated) into d(unrotated) (rotation by the negative angle).
    void (*rope_backward)(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta);

    // ---- SQDK attention: gathered queries against all causal keys -----------------------
    // The queries of sequence b are rows [b*Mq, (b+1)*Mq) of q; qpos gives each query's
    // position t in its sequence. Query m of head h attends to keys s = 0..qpos[m] of its
    // sequence through kv head h / (nh / nkv), scale 1/sqrt(hd).
    // o [B*Mq, nh, hd] (overwritten); lse [B*Mq, nh] log-sum-exp saved for the backward;
    // q [B*Mq, nh, hd]; k, v [B, T, nkv, hd]; qpos [B*Mq] int32.
    // attn=dense is the same op with Mq = T and qpos = t.
    void (*attention_forward)(float *o, float *lse, const float *q, const float *k, const float *v,
                              const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
    // dq [B*Mq, nh, hd]; dk, dv [B, T, nkv, hd]
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);

    // ---- gate: h[idx[m], :] += g_m * y[m, :], g_m = sigmoid(r[idx[m]]) ------------------
    // h [N, H]; y [M, H]; r [N] router logits, or NULL for a gate fixed at 1; idx [M]
    void (*gated_scatter_add)(float *h, const float *y, const float *r, const int32_t *idx, int M,
                              int H);
    // dy [M, H] (overwrites); dr [N] (may be NULL; += g(1-g) <dh[idx], y>)
    void (*gated_scatter_add_backward)(float *dy, float *dr, const float *dh, const float *y,
                                       const float *r, const int32_t *idx, int M, int H);

    // ---- slot memory -------------------------------------------------------------------
    // Score every token against every key of this shard and keep the K best:
    // s_ti = p_t . keys_i / sqrt(R); top_s [N, K] (descending), top_i [N, K] global slot
    // ids (ties: lower slot first). p [N, R]; keys [rows, R] holding global slots
    // [row_offset, row_offset + rows). The [N, rows] score matrix need not exist.
    void (*slot_topk)(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                      int rows, int row_offset, int K);
    // Merge P candidate lists into the best K: cand_s, cand_i [P, N, K] -> top_s, top_i [N, K]
    // (descending score, ties: lower slot first).
    void (*slot_topk_merge)(float *top_s, int32_t *top_i, const float *cand_s,
                            const int32_t *cand_i, int P, int N, int K);
    // The slot read reads the K value rows of every token where they are, without copying
    // them into token order first: row k of token n is values[idx[n*K + k], :], values
    // [rows, H], idx [N, K] (with one rank the layer's table and the chosen slot ids; with
    // several the rows received from their owners and each entry's place among them).
    // w = softmax(top_s) per token; y = h + sum_k w_k * values[idx[n*K + k]]; entropy loss:
    // loss += scale * sum_t (-sum_k w log w).
    // y, h [N, H]; w [N, K] (written, saved); top_s [N, K]; loss [1]
    void (*slot_read_forward)(float *y, float *w, float *loss, const float *h, const float *top_s,
                              const float *values, const int32_t *idx, float scale, int N, int K,
                              int H);
    // Backward of slot_read_forward with the entropy loss weighted by `scale` (the same
    // scale times the loss weight). ds [N, K] overwrites; dh [N, H] +=; the value rows'
    // gradients are added where the rows were read: dvalues[idx[n*K + k], :] += w_nk dy_n
    // (dvalues [rows, H]; an index repeated by several tokens sums their parts).
    void (*slot_read_backward)(float *dh, float *ds, float *dvalues, const float *dy,
                               const float *w, const float *values, const int32_t *idx, float scale,
                               int N, int K, int H);
    // Backward of s_tk = p_t . krows[t,k] / sqrt(R): dp [N, R] +=; dkrows [N, K, R] overwrites.
    void (*slot_score_backward)(float *dp, float *dkrows, const float *ds, const float *p,
                                const float *krows, int N, int K, int R);

    // ---- losses --------------------------------------------------------------------------
    // Cross-entropy of logits against targets; targets[n] < 0 is ignored.
    // loss += scale * sum_n CE_n; logits [N, V]; targets [N] int32
    void (*cross_entropy_forward)(float *loss, const float *logits, const int32_t *targets,
                                  float scale, int N, int V);
    // dlogits [N, V] overwrites: scale * (softmax - onehot), 0 on ignored rows. May alias
    // logits (in place).
    void (*cross_entropy_backward)(float *dlogits, const float *logits, const int32_t *targets,
                                   float scale, int N, int V);
    // Both of the above in one pass over each row (the LM head runs it chunk by chunk, so
    // the [N, V] logits never exist at once), plus each row's prediction:
    //   loss    += scale * sum_n CE_n, as cross_entropy_forward (NULL: no loss)
    //   dlogits [N, V] overwrites: as cross_entropy_backward (NULL: no gradient; may alias
    //           logits, in place)
    //   argmax  [N] int32 overwrites: index of the row's largest logit, ties to the lower
    //           index, ignored rows included (NULL: not written)
    // logits [N, V]; targets [N] int32 (< 0: ignored)
    void (*cross_entropy_fused)(float *loss, float *dlogits, int32_t *argmax, const float *logits,
                                const int32_t *targets, float scale, int N, int V);
    // The LM head and its loss over N tokens, `chunk` tokens at a time, so that one chunk of
    // logits is all that ever exists (its contents afterwards are unspecified):
    //   logits_c = yn_c . w^T; loss += scale * sum CE and predictions = argmax, as
    //   cross_entropy_fused (loss, predictions: NULL for none); with dyn != NULL also
    //   dlogits_c = scale (softmax - onehot), dyn_c = dlogits_c . w (overwritten) and
    //   dw += dlogits_c^T . yn_c. A backend may round the product operands (yn, w, dlogits)
    //   to the matmul precision of set_matmul_precision, as linear_forward / _backward do.
    // logits: scratch of chunk * (V + 8) floats (room to pad rows to 8 elements)
    // yn [N, H]; w, dw [V, H]; targets [N] int32 (< 0: ignored); dyn [N, H];
    // predictions [N] int32
    void (*lm_head_loss)(float *loss, int32_t *predictions, float *dyn, float *dw, float *logits,
                         const float *yn, const float *w, const int32_t *targets, float scale,
                         int N, int H, int V, int chunk);
    // Route loss of one layer over B sequences of T tokens:
    //   loss += token_scale * sum_t BCEwithLogits(r_t, selected_t)
    //         + seq_scale * sum_b (mean_t sigmoid(r_bt) - rho)^2
    // r [B, T]; sel [B, n_sel] flat indices of the selected tokens.
    void (*route_loss_forward)(float *loss, const float *r, const int32_t *sel, float rho,
                               float token_scale, float seq_scale, int B, int T, int n_sel);
    // dr [B, T] +=
    void (*route_loss_backward)(float *dr, const float *r, const int32_t *sel, float rho,
                                float token_scale, float seq_scale, int B, int T, int n_sel);

    // ---- optimizer -----------------------------------------------------------------------
    // out[0] += sum(x^2) (accumulated in double on the cpu, fp32 pairs on cuda)
    void (*sum_squares)(float *out, const float *x, size_t n);
    // AdamW on fp32 master weights: g = grad * grad_scale;
    // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    // param -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * param)
    void (*adamw_update)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                         int t);

    // ---- timing and memory accounting (hspmn_dist bench, model/profile.h) -------------
    // A timer is a point in the backend's stream of work (cuda: an event recorded on the
    // backend stream; cpu: the wall clock). timer_elapsed_ms waits for `end` and returns
    // the milliseconds of backend work between the two recordings.
    void *(*timer_create)(void);
    void (*timer_record)(void *timer);
    float (*timer_elapsed_ms)(void *start, void *end);
    void (*timer_destroy)(void *timer);
    // Bytes currently held through alloc (not yet freed), and the most held at once since
    // the backend started or since the last memory_reset_peak.
    size_t (*memory_in_use)(void);
    size_t (*memory_peak)(void);
    void (*memory_reset_peak)(void); // peak := memory_in_use()
    // What the device itself reports, allocator and library workspaces included (cuda:
    // cudaMemGetInfo; cpu: MemAvailable and MemTotal of /proc/meminfo, 0 when unknown).
    void (*memory_device_info)(size_t *free_bytes, size_t *total_bytes);

    // ---- settings ------------------------------------------------------------------------
    // Precision of every later linear_forward / linear_backward GEMM (default MATMUL_FP32;
    // kept until changed or until shutdown). The cpu backend is always fp32: it accepts and
    // ignores the setting. An unknown value is a fatal error.
    void (*set_matmul_precision)(MatmulPrecision precision);

    // ---- shape limits ----------------------------------------------------------------------
    // The largest shapes this backend's kernels take (0 = no limit), so a configuration can
    // be refused at start-up, before anything is allocated, rather than at the first op.
    int max_seq_len;  // select_topn holds one sequence per block
    int max_head_dim; // attention
    int max_top_k;    // slot_topk, slot_read
    int max_ptr_dim;  // slot_topk
} Ops;

// The cpu backend is always built.
const Ops *ops_cpu(void);
// The cuda backend, or NULL when this build has no CUDA or no GPU is visible.
const Ops *ops_cuda(void);
// lm_head_loss written with an op table's linear_forward, cross_entropy_fused and
// linear_backward, chunk by chunk (kernels/lm_head_composed.c): the cpu backend's
// implementation, and the cuda backend's outside bf16 mode.
void lm_head_loss_composed(const Ops *ops, float *loss, int32_t *predictions, float *dyn, float *dw,
                           float *logits, const float *yn, const float *w, const int32_t *targets,
                           float scale, int N, int H, int V, int chunk);
// Number of visible CUDA devices (0 when built without CUDA).
int ops_cuda_device_count(void);
// PCI bus id of visible device `device` ("0000:1b:00.0"), so ranks can tell whether they
// were given the same physical GPU (NCCL refuses that). 0 on success, -1 without CUDA.
int ops_cuda_device_bus_id(int device, char *out, int len);
