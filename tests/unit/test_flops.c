// model_flops_per_token against MODEL.md "FLOPs per token", term by term by hand.
//
// Seed configuration (H 512, L 8, nh 8, nkv 2, hd 64, T 4096, Kc 4, m 2, rho 0.2 -> n_sel
// 820, S 65536, R 32, K 8, V 50257), forward FLOPs per token of one layer:
//   conv 2*4*512                        =     4,096
//   MLP 4*2*512^2                       = 2,097,152
//   router 2*512                        =     1,024
//   k, v 4*512*2*64                     =   262,144
//   (820/4096) * (4*512^2 + 4*2048.5*512) = 0.2001953125 * 5,243,904 = 1,049,805
//   compressor 2*512*32                 =    32,768
//   slot read 2*8*512                   =     8,192
//   sum without the scores              = 3,455,181
//   key scores 2*32*65536               = 4,194,304
// LM head 2*512*50257 = 51,463,168.
// Training: 8 * (3 * 3,455,181 + 4,194,304) + 3 * 51,463,168 = 270,868,280 FLOPs per token
// (MODEL.md: "about 271 MFLOP per trained token").
#include <math.h>

#include "model/config.h"
#include "model/flops.h"
#include "tests/testutil.h"

static const double H = 512, L = 8, T = 4096, V = 50257, S = 65536, R = 32, K = 8;

// The forward terms of one seed layer with attention share rho and a given FFN part.
static double seed_layer(double rho, int with_router, double ffn_part) {
    const double tbar = (T + 1) / 2;
    return 2 * 4 * H + 4 * 2 * H * H + (with_router ? 2 * H : 0) + 4 * H * 2 * 64 +
           rho * (4 * H * H + 4 * tbar * H) + ffn_part;
}

static void assert_close(double got, double want) {
    ck_assert_msg(fabs(got - want) <= 1e-9 * want, "got %.3f FLOPs, want %.3f", got, want);
}

START_TEST(test_seed_training_is_271_mflop) {
    ModelConfig c = model_config_default();
    double flops = model_flops_per_token(&c, 4096, 1);
    ck_assert_msg(fabs(flops - 271e6) <= 0.01 * 271e6, "%.0f is not within 1%% of 271e6", flops);
    assert_close(flops, 270868280.0); // the hand sum in the comment above
    double memory = 2 * H * R + 2 * K * H;
    assert_close(flops, L * (3 * seed_layer(820.0 / 4096, 1, memory) + 2 * R * S) + 3 * 2 * H * V);
}
END_TEST

START_TEST(test_seed_forward_counts_every_term_once) {
    ModelConfig c = model_config_default();
    double memory = 2 * H * R + 2 * K * H;
    double want = L * (seed_layer(820.0 / 4096, 1, memory) + 2 * R * S) + 2 * H * V;
    assert_close(model_flops_per_token(&c, 4096, 0), want);
    assert_close(want, 112659048.0);
    // Training is not simply 3x: the key scores are counted once.
    ck_assert(model_flops_per_token(&c, 4096, 1) < 3 * want);
}
END_TEST

START_TEST(test_attn_dense_every_token_queries_no_router) {
    ModelConfig c = model_config_default();
    c.attn = ATTN_DENSE;
    double memory = 2 * H * R + 2 * K * H;
    double want = L * (3 * seed_layer(1.0, 0, memory) + 2 * R * S) + 3 * 2 * H * V;
    assert_close(model_flops_per_token(&c, 4096, 1), want);
    assert_close(want, 371502080.0);
}
END_TEST

START_TEST(test_ffn_dense_replaces_the_memory) {
    ModelConfig c = model_config_default();
    c.ffn = FFN_DENSE;
    double want = L * 3 * seed_layer(820.0 / 4096, 1, 2 * 2 * H * 4 * H) + 3 * 2 * H * V;
    assert_close(model_flops_per_token(&c, 4096, 1), want);
    assert_close(want, 336994104.0);
}
END_TEST

// T changes both the query share (n_sel = ceil(rho T)) and the mean causal key count.
START_TEST(test_sequence_length_enters_rho_and_tbar) {
    ModelConfig c = model_config_default();
    const int lengths[] = {1024, 2048, 8192, 16384};
    double previous = 0.0;
    for (int i = 0; i < 4; i++) {
        int t = lengths[i];
        double rho = (double)model_n_selected(&c, t) / t, tbar = (t + 1) / 2.0;
        double layer = 2 * 4 * H + 4 * 2 * H * H + 2 * H + 4 * H * 2 * 64 +
                       rho * (4 * H * H + 4 * tbar * H) + 2 * H * R + 2 * K * H;
        double want = L * (3 * layer + 2 * R * S) + 3 * 2 * H * V;
        double got = model_flops_per_token(&c, t, 1);
        assert_close(got, want);
        ck_assert(got > previous); // attention grows with T
        previous = got;
    }
    // An odd capacity: n_sel = ceil(0.3 * 10) = 3 -> rho 0.3 exactly, T = 10.
    c.capacity = 0.3;
    double layer = 2 * 4 * H + 4 * 2 * H * H + 2 * H + 4 * H * 2 * 64 +
                   0.3 * (4 * H * H + 4 * 5.5 * H) + 2 * H * R + 2 * K * H;
    assert_close(model_flops_per_token(&c, 10, 0), L * (layer + 2 * R * S) + 2 * H * V);
}
END_TEST

START_TEST(test_tiny_config_by_hand) {
    ModelConfig c = model_config_tiny(); // L2 H32 nh4 nkv2 hd8 T16 Kc4 m2 rho.2 S64 R8 K4 V50
    // n_sel = ceil(3.2) = 4 -> rho 0.25; tbar 8.5
    double layer = 2 * 4 * 32 + 4 * 2 * 32 * 32 + 2 * 32 + 4 * 32 * 2 * 8 +
                   0.25 * (4 * 32 * 32 + 4 * 8.5 * 32) + 2 * 32 * 8 + 2 * 4 * 32;
    assert_close(model_flops_per_token(&c, 16, 1), 2 * (3 * layer + 2 * 8 * 64) + 3 * 2 * 32 * 50);
}
END_TEST

int main(void) {
    Suite *s = suite_create("flops");
    TCase *tc = tcase_create("flops");
    tcase_add_test(tc, test_seed_training_is_271_mflop);
    tcase_add_test(tc, test_seed_forward_counts_every_term_once);
    tcase_add_test(tc, test_attn_dense_every_token_queries_no_router);
    tcase_add_test(tc, test_ffn_dense_replaces_the_memory);
    tcase_add_test(tc, test_sequence_length_enters_rho_and_tbar);
    tcase_add_test(tc, test_tiny_config_by_hand);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
