// MODEL.md "FLOPs per token", term by term (see model/flops.h).
#include "model/flops.h"

// The forward FLOPs per token of one layer, without the slot key scores (which are counted
// once in training and so are kept apart).
static double layer_forward_flops(const ModelConfig *c, int T) {
    const double H = c->d_model, hd = model_head_dim(c), nkv = c->n_kv_heads;
    const double rho = (double)model_n_selected(c, T) / (double)T;
    const double tbar = ((double)T + 1.0) / 2.0; // mean causal keys per query
    double flops = 2.0 * c->conv_kernel * H;     // conv
    flops += 4.0 * c->mlp_mult * H * H;          // reflexive MLP, H -> mH -> H
    if (c->attn == ATTN_SPARSE)
        flops += 2.0 * H;              // router logit
    flops += 4.0 * H * nkv * hd;       // k and v, every token
    flops += rho * (4.0 * H * H        // q and o, query tokens only
                    + 4.0 * tbar * H); // q.k and p.v over tbar keys
    if (c->ffn == FFN_MEMORY)
        flops += 2.0 * H * c->ptr_dim  // compressor
                 + 2.0 * c->top_k * H; // slot read
    else
        flops += 2.0 * 2.0 * H * 4.0 * H; // dense FFN, H -> 4H -> H
    return flops;
}

static double layer_score_flops(const ModelConfig *c) {
    return c->ffn == FFN_MEMORY ? 2.0 * c->ptr_dim * (double)c->n_slots : 0.0;
}

double model_flops_per_token(const ModelConfig *c, int T, int training) {
    const double backward_factor = training ? 3.0 : 1.0; // forward + 2x forward backward
    double per_layer = backward_factor * layer_forward_flops(c, T) + layer_score_flops(c);
    double head = backward_factor * 2.0 * c->d_model * (double)c->vocab_size;
    return c->n_layers * per_layer + head;
}
