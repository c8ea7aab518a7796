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
// With P = 1 nothing travels: slot_topk and the key rows' gather_rows and scatter_add_rows on
// the one shard. The value rows are never put in token order: the slot read reads them, and
// adds their gradients, where they are (SlotValueRows, slot_exchange_value_grads).
#pragma once
#include <stdint.h>

#include "dist/comm.h"
#include "kernels/ops.h"

typedef struct SlotExchange SlotExchange;

// Where the value rows a layer's tokens read are, for ops->slot_read_forward and
// slot_read_backward: row k of token n is table[idx[n*K + k]]. With P = 1 the table is the
// layer's shard and idx the chosen slot ids; with P > 1 the table is the caller's buffer of
// the rows received from their owners, and idx each entry's place among them. The rows'
// gradients are added in the same places of the buffer slot_exchange_value_grads gives.
typedef struct SlotValueRows {
    const float *table; // [rows, H]
    const int32_t *idx; // [N*K]
} SlotValueRows;

// comm may be NULL (a single rank). N tokens per rank (equal on every rank), S global
// slots (S % P == 0, checked by the caller's layout), n_layers layers of routing state.
SlotExchange *slot_exchange_create(Comm *comm, const Ops *ops, int N, int R, int H, int K, int S,
                                   int n_layers);
void slot_exchange_destroy(SlotExchange *x);

// Forward of layer `layer`. p [N, R]; keys [S/P, R], values [S/P, H] this rank's shard.
// Out: top_s [N, K] scores (descending), top_i [N, K] global slot ids, krows [N, K, R] the
// chosen key rows, and where the chosen value rows are. With P > 1 they are received into
// `received` [N*K, H] (unused with P = 1: NULL is fine), which must then stay untouched until
// the backward reads them, or be refilled by slot_exchange_refetch. Remembers the routing
// for the backward of this layer.
SlotValueRows slot_exchange_forward(SlotExchange *x, int layer, const float *p, const float *keys,
                                    const float *values, float *top_s, int32_t *top_i, float *krows,
                                    float *received);
// The rows the last forward of layer `layer` fetched, fetched again along its route:
// krows [N, K, R] and, with P > 1, the value rows into `received` [N*K, H], bitwise what that
// forward fetched as long as keys and values have not changed since. For a backward that did
// not keep them (the model's refetch_slot_rows option): with P > 1 the rows travel again,
// K * (R + H) * 4 bytes a token. Every rank calls it for the same layers in the same order
// (a collective).
SlotValueRows slot_exchange_refetch(SlotExchange *x, int layer, const float *keys,
                                    const float *values, float *krows, float *received);
// Backward of layer `layer`, in two calls around ops->slot_read_backward:
//   slot_exchange_value_grads: where the read-out's backward is to add the value rows'
//     gradients, indexed as the layer's SlotValueRows (P = 1: dvalues [S, H] itself; P > 1:
//     a buffer of the exchange in request order, zeroed here);
//   slot_exchange_backward: dkrows [N, K, R] are added (+=) into the owners' dkeys [S/P, R],
//     and with P > 1 the value rows' gradients travel to their owners' dvalues [S/P, H].
float *slot_exchange_value_grads(SlotExchange *x, int layer, float *dvalues);
void slot_exchange_backward(SlotExchange *x, int layer, const float *dkrows, float *dkeys,
                            float *dvalues);

// Bytes this rank sent and received in the last forward + backward of all layers.
void slot_exchange_bytes(const SlotExchange *x, double *sent, double *received);
