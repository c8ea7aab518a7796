// The slot exchange: expert-parallel slot memory across ranks.
//
// Rank r of P owns global slots [r*S/P, (r+1)*S/P) of every layer (keys, values, their
// gradients and AdamW state). No rank ever holds a whole table. For this rank's N tokens
// the forward turns pointers p into the global top-K slots and fetches the K key and value
// rows of each token; the backward sends the row gradients back to the owners, which add
// them into their shard. What travels, per token and layer (fp32 = 4 bytes, id = 4 bytes):
//   1. all-gather of pointers:              R * 4 bytes to each of the P-1 other ranks
//   2. every rank scores all P*N pointers against its shard, keeps its local top-K, and
//      all-to-all returns the candidates:   K * 8 bytes from each of the P-1 other ranks
//   3. the token's owner merges P*K candidates into the global top-K and asks the owners
//      of those slots for their rows:       <= K * 4 bytes of ids out, K * (R + H) * 4 back
//   backward: the row gradients go back:    <= K * (R + H) * 4 bytes
// With P = 1 nothing travels: slot_topk, gather_rows and scatter_add_rows on the one shard.
#pragma once
#include <stdint.h>

#include "dist/comm.h"
#include "kernels/ops.h"

typedef struct SlotExchange SlotExchange;

// comm may be NULL (a single rank). N tokens per rank (equal on every rank), S global
// slots (S % P == 0, checked by the caller's layout), n_layers layers of routing state.
SlotExchange *slot_exchange_create(Comm *comm, const Ops *ops, int N, int R, int H, int K, int S,
                                   int n_layers);
void slot_exchange_destroy(SlotExchange *x);

// Forward of layer `layer`. p [N, R]; keys [S/P, R], values [S/P, H] this rank's shard.
// Out: top_s [N, K] scores (descending), top_i [N, K] global slot ids, krows [N, K, R],
// vrows [N, K, H] the chosen rows. Remembers the routing for the backward of this layer.
void slot_exchange_forward(SlotExchange *x, int layer, const float *p, const float *keys,
                           const float *values, float *top_s, int32_t *top_i, float *krows,
                           float *vrows);
// The rows the last forward of layer `layer` fetched, fetched again along its route:
// krows [N, K, R], vrows [N, K, H], bitwise what that forward wrote as long as keys and
// values have not changed since. For a backward that did not keep them (the model's
// refetch_slot_rows option): with P > 1 the rows travel again, K * (R + H) * 4 bytes a token.
// Every rank calls it for the same layers in the same order (a collective).
void slot_exchange_refetch(SlotExchange *x, int layer, const float *keys, const float *values,
                           float *krows, float *vrows);
// Backward of layer `layer`: dkrows [N, K, R], dvrows [N, K, H] are added (+=) into the
// owners' dkeys [S/P, R], dvalues [S/P, H].
void slot_exchange_backward(SlotExchange *x, int layer, const float *dkrows, const float *dvrows,
                            float *dkeys, float *dvalues);

// Bytes this rank sent and received in the last forward + backward of all layers.
void slot_exchange_bytes(const SlotExchange *x, double *sent, double *received);
