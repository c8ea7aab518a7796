// Model configuration: MODEL.md defaults, the n_sel formula, validation and set/get by name.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/config.h"
#include "tests/testutil.h"

// Field by field (memcmp would also compare padding bytes).
static int config_equal(const ModelConfig *a, const ModelConfig *b) {
    return a->vocab_size == b->vocab_size && a->d_model == b->d_model &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->seq_len == b->seq_len &&
           a->conv_kernel == b->conv_kernel && a->mlp_mult == b->mlp_mult &&
           a->capacity == b->capacity && a->n_slots == b->n_slots && a->ptr_dim == b->ptr_dim &&
           a->top_k == b->top_k && a->rope_theta == b->rope_theta &&
           a->route_loss == b->route_loss && a->entropy_loss == b->entropy_loss &&
           a->attn == b->attn && a->ffn == b->ffn && a->route == b->route &&
           a->gate_fixed == b->gate_fixed;
}

START_TEST(test_defaults_match_model_md) {
    ModelConfig c = model_config_default();
    ck_assert_int_eq(c.vocab_size, 50257);
    ck_assert_int_eq(c.d_model, 512);
    ck_assert_int_eq(c.n_layers, 8);
    ck_assert_int_eq(c.n_heads, 8);
    ck_assert_int_eq(c.n_kv_heads, 2);
    ck_assert_int_eq(model_head_dim(&c), 64);
    ck_assert_int_eq(c.seq_len, 4096);
    ck_assert_int_eq(c.conv_kernel, 4);
    ck_assert_int_eq(c.mlp_mult, 2);
    ck_assert_double_eq(c.capacity, 0.2);
    ck_assert_int_eq(c.n_slots, 65536);
    ck_assert_int_eq(c.ptr_dim, 32);
    ck_assert_int_eq(c.top_k, 8);
    ck_assert_double_eq(c.rope_theta, 10000.0);
    ck_assert_double_eq(c.route_loss, 0.01);
    ck_assert_double_eq(c.entropy_loss, 0.001);
    ck_assert_int_eq(c.attn, ATTN_SPARSE);
    ck_assert_int_eq(c.ffn, FFN_MEMORY);
    ck_assert_int_eq(c.route, ROUTE_TOPN);
    ck_assert_int_eq(c.gate_fixed, 0);
    char err[256] = "";
    ck_assert_int_eq(model_config_validate(&c, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_tiny_config) {
    ModelConfig c = model_config_tiny();
    ck_assert_int_eq(c.n_layers, 2);
    ck_assert_int_eq(c.d_model, 32);
    ck_assert_int_eq(c.n_heads, 4);
    ck_assert_int_eq(c.n_kv_heads, 2);
    ck_assert_int_eq(c.seq_len, 16);
    ck_assert_int_eq(c.conv_kernel, 4);
    ck_assert_int_eq(c.mlp_mult, 2);
    ck_assert_double_eq(c.capacity, 0.2);
    ck_assert_int_eq(c.n_slots, 64);
    ck_assert_int_eq(c.ptr_dim, 8);
    ck_assert_int_eq(c.top_k, 4);
    ck_assert_int_eq(c.vocab_size, 50);
    char err[256] = "";
    ck_assert_int_eq(model_config_validate(&c, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_n_selected_formula) {
    ModelConfig c = model_config_default();
    // 0.2 * 4096 = 819.2 -> 820
    ck_assert_int_eq(model_n_selected(&c, 4096), 820);
    // 0.25 * 16 = 4 exactly: must not round up to 5
    c.capacity = 0.25;
    ck_assert_int_eq(model_n_selected(&c, 16), 4);
    // 0.1 * 30 is 3.0000000000000004 in double: still 3
    c.capacity = 0.1;
    ck_assert_int_eq(model_n_selected(&c, 30), 3);
    // 0.3 * 10 is 3.0000000000000004 too
    c.capacity = 0.3;
    ck_assert_int_eq(model_n_selected(&c, 10), 3);
    // 0.2 * 16 = 3.2 -> 4
    c.capacity = 0.2;
    ck_assert_int_eq(model_n_selected(&c, 16), 4);
    // tiny rho: clamped up to one query
    c.capacity = 1e-9;
    ck_assert_int_eq(model_n_selected(&c, 4096), 1);
    // rho = 1: every token
    c.capacity = 1.0;
    ck_assert_int_eq(model_n_selected(&c, 4096), 4096);
    ck_assert_int_eq(model_n_selected(&c, 1), 1);
    // attn=dense: T whatever rho says
    c.capacity = 0.2;
    c.attn = ATTN_DENSE;
    ck_assert_int_eq(model_n_selected(&c, 100), 100);
}
END_TEST

// Validation fails and its message contains `expect`.
static void expect_invalid(const ModelConfig *c, const char *expect) {
    char err[256] = "";
    ck_assert_int_eq(model_config_validate(c, err, sizeof(err)), -1);
    if (strstr(err, expect) == NULL)
        ck_abort_msg("message '%s' does not contain '%s'", err, expect);
}

START_TEST(test_validation_messages) {
    ModelConfig c = model_config_tiny();
    c.d_model = 30;
    expect_invalid(&c, "d_model=30 is not divisible by n_heads=4");

    c = model_config_tiny();
    c.n_kv_heads = 3;
    expect_invalid(&c, "n_heads=4 is not divisible by n_kv_heads=3");

    c = model_config_tiny();
    c.d_model = 36; // head_dim 9: odd, RoPE pairs need an even width
    expect_invalid(&c, "head_dim=9");

    c = model_config_tiny();
    c.top_k = 65;
    expect_invalid(&c, "top_k=65 exceeds n_slots=64");

    c = model_config_tiny();
    c.capacity = 0.0;
    expect_invalid(&c, "capacity=0");
    c.capacity = 1.5;
    expect_invalid(&c, "capacity=1.5");

    c = model_config_tiny();
    c.n_layers = 0;
    expect_invalid(&c, "n_layers=0");
    c = model_config_tiny();
    c.vocab_size = -5;
    expect_invalid(&c, "vocab_size=-5");

    c = model_config_tiny();
    c.route_loss = -0.1;
    expect_invalid(&c, "route_loss=-0.1");

    c = model_config_tiny();
    c.rope_theta = 0.0;
    expect_invalid(&c, "rope_theta=0");

    c = model_config_tiny();
    c.gate_fixed = 2;
    expect_invalid(&c, "gate_fixed=2");
}
END_TEST

// model_config_set fails and its message names the entry and the value.
static void expect_set_error(const char *name, const char *value) {
    ModelConfig c = model_config_tiny();
    ModelConfig before = c;
    char err[256] = "";
    ck_assert_int_eq(model_config_set(&c, name, value, err, sizeof(err)), -1);
    if (strstr(err, name) == NULL || strstr(err, value) == NULL)
        ck_abort_msg("message '%s' does not name %s and '%s'", err, name, value);
    ck_assert_msg(config_equal(&c, &before), "a failed set changed the config");
}

START_TEST(test_set_rejects_malformed_values) {
    expect_set_error("d_model", "12x");
    expect_set_error("d_model", "");
    expect_set_error("n_layers", "-3");
    expect_set_error("n_slots", "0");
    expect_set_error("top_k", "4.5");
    expect_set_error("seq_len", "99999999999");
    expect_set_error("capacity", "0");
    expect_set_error("capacity", "1.2");
    expect_set_error("capacity", "abc");
    expect_set_error("capacity", "nan");
    expect_set_error("route_loss", "-1");
    expect_set_error("rope_theta", "0");
    expect_set_error("attn", "sparsest");
    expect_set_error("ffn", "moe");
    expect_set_error("route", "random");
    expect_set_error("gate_fixed", "2");

    ModelConfig c = model_config_tiny();
    char err[256] = "";
    ck_assert_int_eq(model_config_set(&c, "no_such_entry", "1", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown model entry 'no_such_entry'"));
}
END_TEST

START_TEST(test_set_and_get_round_trip) {
    ModelConfig c = model_config_tiny();
    char err[256] = "";
    ck_assert_int_eq(model_config_set(&c, "d_model", "64", err, sizeof(err)), 0);
    ck_assert_int_eq(c.d_model, 64);
    ck_assert_int_eq(model_config_set(&c, "capacity", "0.25", err, sizeof(err)), 0);
    ck_assert_double_eq(c.capacity, 0.25);
    ck_assert_int_eq(model_config_set(&c, "attn", "dense", err, sizeof(err)), 0);
    ck_assert_int_eq(c.attn, ATTN_DENSE);
    ck_assert_int_eq(model_config_set(&c, "ffn", "dense", err, sizeof(err)), 0);
    ck_assert_int_eq(c.ffn, FFN_DENSE);
    ck_assert_int_eq(model_config_set(&c, "route", "threshold", err, sizeof(err)), 0);
    ck_assert_int_eq(c.route, ROUTE_THRESHOLD);
    ck_assert_int_eq(model_config_set(&c, "gate_fixed", "1", err, sizeof(err)), 0);
    ck_assert_int_eq(c.gate_fixed, 1);

    // Every named entry prints and reads back to the same configuration.
    ModelConfig d = model_config_default();
    d.capacity = 0.1; // not exact in binary: the text must still round-trip
    d.entropy_loss = 1.0 / 3.0;
    ModelConfig e = model_config_tiny();
    int n_names = 0;
    for (int i = 0; model_config_names[i] != NULL; i++, n_names++) {
        char text[64];
        model_config_get(&d, model_config_names[i], text, sizeof(text));
        if (model_config_set(&e, model_config_names[i], text, err, sizeof(err)) != 0)
            ck_abort_msg("%s=%s does not read back: %s", model_config_names[i], text, err);
    }
    ck_assert_int_eq(n_names, 19);
    ck_assert_msg(config_equal(&d, &e), "get/set round trip changed the config");

    char text[64];
    model_config_get(&d, "capacity", text, sizeof(text));
    ck_assert_str_eq(text, "0.1");
    model_config_get(&d, "attn", text, sizeof(text));
    ck_assert_str_eq(text, "sparse");
    model_config_get(&d, "n_slots", text, sizeof(text));
    ck_assert_str_eq(text, "65536");
}
END_TEST

int main(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults_match_model_md);
    tcase_add_test(tc, test_tiny_config);
    tcase_add_test(tc, test_n_selected_formula);
    tcase_add_test(tc, test_validation_messages);
    tcase_add_test(tc, test_set_rejects_malformed_values);
    tcase_add_test(tc, test_set_and_get_round_trip);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
