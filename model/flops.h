// The model FLOP count of MODEL.md "FLOPs per token": matmul-like work, 2 per multiply-add,
// the number MFU is measured against.
#pragma once
#include "model/config.h"

// FLOPs per token of a sequence of T tokens (T may differ from c->seq_len).
// training = 0: the forward alone; 1: a training step (3x every forward term, except the
// slot key scores, counted once: their backward touches K keys, not S).
//
// Forward, per layer:
//   conv 2 Kc H;  MLP 4 m H^2;  router 2H (attn=sparse only: attn=dense has no router);
//   k, v 4 H nkv hd;  rho (q, o 4 H^2 + attention 4 tbar H), tbar = (T + 1) / 2,
//   rho = n_sel / T (1 for attn=dense: every token is a query);
//   ffn=memory: compressor 2 H R, key scores 2 R S, slot read 2 K H;
//   ffn=dense:  2 * 2 * H * 4H (H -> 4H -> H), replacing the three memory terms.
// Once: LM head 2 H V. The embedding is a gather and counts nothing.
double model_flops_per_token(const ModelConfig *c, int T, int training);
