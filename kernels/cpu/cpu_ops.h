// The cpu backend's functions, one group per file of kernels/cpu/, assembled into the Ops
// table by cpu_backend.c. Shapes and semantics are those of kernels/ops.h; they are not
// repeated here. Internal to kernels/cpu/: everyone else goes through ops_cpu().
#pragma once
#include <stddef.h>
#include <stdint.h>

// Whether a loop of about `work` multiply-adds is worth waking the OpenMP threads for:
// below this, thread start-up and barrier spinning cost more than they save (and the many
// tiny calls of the unit tests slow to a crawl on a loaded machine). Used in the `if`
// clause of every parallel region; the results do not depend on it.
static inline int cpu_worth_threads(double work) {
    return work >= 65536.0;
}

// cpu_rows.c
void cpu_gather_rows(float *out, const float *table, const int32_t *idx, int M, int D,
                     int row_offset);
void cpu_scatter_add_rows(float *dtable, const float *drows, const int32_t *idx, int M, int D,
                          int row_offset);

// cpu_elementwise.c
void cpu_add(float *out, const float *a, const float *b, size_t n);
void cpu_axpy(float *y, float alpha, const float *x, size_t n);
void cpu_scale(float *x, float alpha, size_t n);
void cpu_gelu_forward(float *out, const float *x, size_t n);
void cpu_gelu_backward(float *dx, const float *dout, const float *x, size_t n);
void cpu_to_bf16(uint16_t *dst, const float *src, size_t n);
void cpu_from_bf16(float *dst, const uint16_t *src, size_t n);

// cpu_rmsnorm.c
void cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int H);
void cpu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int H);

// cpu_linear.c
void cpu_linear_forward(float *out, const float *x, const float *w, const float *b, int N, int I,
                        int O);
void cpu_linear_forward_keep_bf16(float *out, uint16_t *x16, const float *x, const float *w,
                                  const float *b, int N, int I, int O);
void cpu_linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                         const float *w, int N, int I, int O);
void cpu_linear_backward_bf16_input(float *dx, float *dw, float *db, const float *dout,
                                    const uint16_t *x16, const float *w, int N, int I, int O);

// cpu_conv.c
void cpu_conv_forward(float *out, const float *x, const float *w, const float *bias, int B, int T,
                      int H, int Kc);
void cpu_conv_backward(float *dx, float *dw, float *dbias, const float *dout, const float *x,
                       const float *w, int B, int T, int H, int Kc);

// cpu_router.c
void cpu_gumbel_noise(float *out, uint64_t seed, uint32_t step, uint32_t layer, uint32_t seq_offset,
                      int B, int T);
void cpu_select_topn(int32_t *sel, const float *z, int B, int T, int n_sel);
void cpu_select_threshold(int32_t *sel, int32_t *count, const float *r, int N);
void cpu_token_positions(int32_t *pos, const int32_t *idx, int M, int T);

// cpu_rope.c
void cpu_rope_forward(float *x, const int32_t *pos, int M, int nheads, int hd, float theta);
void cpu_rope_backward(float *dx, const int32_t *pos, int M, int nheads, int hd, float theta);

// cpu_attention.c
void cpu_attention_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *o, const float *lse,
                            const int32_t *qpos, int B, int T, int Mq, int nh, int nkv, int hd);

// cpu_gate.c
void cpu_gated_scatter_add(float *h, const float *y, const float *r, const int32_t *idx, int M,
                           int H);
void cpu_gated_scatter_add_backward(float *dy, float *dr, const float *dh, const float *y,
                                    const float *r, const int32_t *idx, int M, int H);

// cpu_slot_topk.c
void cpu_slot_topk(float *top_s, int32_t *top_i, const float *p, const float *keys, int N, int R,
                   int rows, int row_offset, int K);
void cpu_slot_topk_merge(float *top_s, int32_t *top_i, const float *cand_s, const int32_t *cand_i,
                         int P, int N, int K);

// cpu_slot_memory.c
void cpu_slot_read_forward(float *y, float *w, float *loss, const float *h, const float *top_s,
                           const float *values, const int32_t *idx, float scale, int N, int K,
                           int H);
void cpu_slot_read_backward(float *dh, float *ds, float *dvalues, const float *dy, const float *w,
                            const float *values, const int32_t *idx, float scale, int N, int K,
                            int H);
void cpu_slot_score_backward(float *dp, float *dkrows, const float *ds, const float *p,
                             const float *krows, int N, int K, int R);

// cpu_loss.c
void cpu_cross_entropy_forward(float *loss, const float *logits, const int32_t *targets,
                               float scale, int N, int V);
void cpu_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                float scale, int N, int V);
void cpu_cross_entropy_fused(float *loss, float *dlogits, int32_t *argmax, const float *logits,
                             const int32_t *targets, float scale, int N, int V);
void cpu_route_loss_forward(float *loss, const float *r, const int32_t *sel, float rho,
                            float token_scale, float seq_scale, int B, int T, int n_sel);
void cpu_route_loss_backward(float *dr, const float *r, const int32_t *sel, float rho,
                             float token_scale, float seq_scale, int B, int T, int n_sel);

// cpu_optim.c
void cpu_sum_squares(float *out, const float *x, size_t n);
void cpu_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                      int t);

// cpu_timer.c: timers (the monotonic clock) and the accounting of cpu_alloc / cpu_free
void *cpu_timer_create(void);
void cpu_timer_record(void *timer);
float cpu_timer_elapsed_ms(void *start, void *end);
void cpu_timer_destroy(void *timer);
void cpu_track_alloc(void *ptr, size_t bytes); // called by cpu_alloc
void cpu_track_free(void *ptr);                // called by cpu_free (NULL is ignored)
size_t cpu_memory_in_use(void);
size_t cpu_memory_peak(void);
void cpu_memory_reset_peak(void);
void cpu_memory_device_info(size_t *free_bytes, size_t *total_bytes);
