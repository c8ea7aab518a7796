// Philox4x32-10 against Random123's known-answer vectors (tests/kat_vectors of the Random123
// distribution, the three "philox4x32 10" lines), then the uniform recipe, the Gumbel draw
// and the normal draw built on it.
#include "kernels/philox.h"
#include "tests/testutil.h"

#include <math.h>

static const double PI = 3.14159265358979323846;

typedef struct PhiloxKat {
    uint32_t ctr[4], key[2], out[4];
} PhiloxKat;

// counter (4 words), key (2 words) -> output (4 words), as printed in kat_vectors
static const PhiloxKat KATS[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

START_TEST(test_known_answers) {
    for (int c = 0; c < 3; c++) {
        uint32_t out[4];
        philox4x32_10(KATS[c].ctr, KATS[c].key, out);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(out[i] == KATS[c].out[i], "vector %d word %d: got %08x want %08x", c, i,
                          out[i], KATS[c].out[i]);
    }
}
END_TEST

// ((x >> 8) + 0.5) * 2^-24: exact values at the ends and the middle; never 0 or 1.
START_TEST(test_uniform_recipe) {
    ck_assert(philox_word_to_uniform(0x00000000u) == 0.5 / 16777216.0);
    ck_assert(philox_word_to_uniform(0x000000ffu) == 0.5 / 16777216.0); // low 8 bits dropped
    ck_assert(philox_word_to_uniform(0x00000100u) == 1.5 / 16777216.0);
    ck_assert(philox_word_to_uniform(0x80000000u) == (8388608.0 + 0.5) / 16777216.0);
    ck_assert(philox_word_to_uniform(0xffffffffu) == (16777215.0 + 0.5) / 16777216.0);
    ck_assert(philox_word_to_uniform(0xffffffffu) < 1.0);
    ck_assert(philox_word_to_uniform(0u) > 0.0);
}
END_TEST

// Gumbel: key = (seed low, seed high), counter = (step, layer, sequence, position), first
// word. Expected values computed independently (Python, double) from the KAT first words:
// u = ((w >> 8) + 0.5) / 2^24, G = -log(-log u). Tolerance: one fp32 ulp-ish (1e-6 rel).
START_TEST(test_gumbel_known_words) {
    float g0 = philox_gumbel(0, 0, 0, 0, 0); // first word 0x6627e8d5
    ck_assert_double_eq_tol(g0, 0.08482019680889749, 1e-7);
    float g1 = philox_gumbel(0xffffffffffffffffull, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                             0xffffffffu); // first word 0x408f276d
    ck_assert_double_eq_tol(g1, -0.3203391285035597, 1e-6);
    // seed high word 0x299f31d0, low word 0xa4093822: checks the key word order
    float g2 = philox_gumbel(0x299f31d0a4093822ull, 0x243f6a88u, 0x85a308d3u, 0x13198a2eu,
                             0x03707344u); // first word 0xd16cfe09
    ck_assert_double_eq_tol(g2, 1.6054053377816089, 2e-6);
    // swapping the seed's words must change the draw (the order matters)
    float g2_swapped =
        philox_gumbel(0xa4093822299f31d0ull, 0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u);
    ck_assert(g2_swapped != g2);
}
END_TEST

// Box-Muller on words 0 and 1 of counter (tensor, index low, index high, 0), key = seed.
START_TEST(test_normal_layout) {
    const uint64_t seed = 0x0123456789abcdefull;
    const uint64_t indices[] = {0, 1, 12345, 0x100000002ull};
    for (int c = 0; c < 4; c++) {
        uint64_t index = indices[c];
        uint32_t ctr[4] = {7, (uint32_t)index, (uint32_t)(index >> 32), 0};
        uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        uint32_t out[4];
        philox4x32_10(ctr, key, out);
        double u1 = philox_word_to_uniform(out[0]), u2 = philox_word_to_uniform(out[1]);
        double want = sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
        ck_assert_double_eq_tol(philox_normal(seed, 7, index), want, 1e-6 * (1.0 + fabs(want)));
    }
    // the high index word reaches the counter: index 2 and 2 + 2^32 differ
    ck_assert(philox_normal(seed, 7, 2) != philox_normal(seed, 7, 0x100000002ull));
}
END_TEST

// Moments of 200k draws. Standard errors: mean 0.0022, variance 0.0032, Gumbel mean
// (Euler-Mascheroni 0.5772) 0.0029, Gumbel variance pi^2/6 0.009; bounds are ~5 sigma.
START_TEST(test_moments) {
    const int n = 200000;
    double sum = 0, sum_sq = 0, gsum = 0, gsum_sq = 0;
    for (int i = 0; i < n; i++) {
        double z = philox_normal(42, 3, (uint64_t)i);
        sum += z, sum_sq += z * z;
        double g = philox_gumbel(42, 5, 1, (uint32_t)(i / 1000), (uint32_t)(i % 1000));
        gsum += g, gsum_sq += g * g;
    }
    double mean = sum / n, var = sum_sq / n - mean * mean;
    ck_assert_double_le(fabs(mean), 0.012);
    ck_assert_double_le(fabs(var - 1.0), 0.016);
    double gmean = gsum / n, gvar = gsum_sq / n - gmean * gmean;
    ck_assert_double_le(fabs(gmean - 0.5772156649), 0.015);
    ck_assert_double_le(fabs(gvar - PI * PI / 6.0), 0.05);
}
END_TEST

static Suite *philox_suite(void) {
    Suite *s = suite_create("philox");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_known_answers);
    tcase_add_test(tc, test_uniform_recipe);
    tcase_add_test(tc, test_gumbel_known_words);
    tcase_add_test(tc, test_normal_layout);
    tcase_add_test(tc, test_moments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return test_run_suite(philox_suite());
}
