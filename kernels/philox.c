// Philox4x32-10 and the two draws built on it (Gumbel noise, normal init).
// Written from the published description (Salmon et al., SC'11); checked against the
// Random123 known-answer vectors in tests/unit/test_philox.c.
#include "kernels/philox.h"

#include <math.h>

// Round multipliers and Weyl-sequence key increments of Philox4x32.
static const uint32_t PHILOX_M0 = 0xD2511F53u;
static const uint32_t PHILOX_M1 = 0xCD9E8D57u;
static const uint32_t PHILOX_W0 = 0x9E3779B9u;
static const uint32_t PHILOX_W1 = 0xBB67AE85u;

// The high and low 32-bit halves of the 64-bit product a * b.
static void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t product = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(product >> 32);
    *lo = (uint32_t)product;
}

// One S-box round: two multiplies, the high halves xored with the other words and the key.
static void philox_round(uint32_t x[4], const uint32_t key[2]) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(PHILOX_M0, x[0], &hi0, &lo0);
    mulhilo32(PHILOX_M1, x[2], &hi1, &lo1);
    uint32_t next[4] = {hi1 ^ x[1] ^ key[0], lo1, hi0 ^ x[3] ^ key[1], lo0};
    for (int i = 0; i < 4; i++)
        x[i] = next[i];
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t x[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t round_key[2] = {key[0], key[1]};
    for (int round = 0; round < 10; round++) {
        if (round > 0) { // the key schedule bumps the key before every round but the first
            round_key[0] += PHILOX_W0;
            round_key[1] += PHILOX_W1;
        }
        philox_round(x, round_key);
    }
    for (int i = 0; i < 4; i++)
        out[i] = x[i];
}

double philox_word_to_uniform(uint32_t x) {
    // 24 bits, centred in their bucket, so u is never exactly 0 or 1 and is exact in fp32.
    return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0);
}

float philox_gumbel(uint64_t seed, uint32_t step, uint32_t layer, uint32_t sequence,
                    uint32_t position) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {step, layer, sequence, position};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    double u = philox_word_to_uniform(out[0]);
    return (float)(-log(-log(u)));
}

float philox_normal(uint64_t seed, uint32_t tensor, uint64_t index) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {tensor, (uint32_t)index, (uint32_t)(index >> 32), 0};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    double u1 = philox_word_to_uniform(out[0]);
    double u2 = philox_word_to_uniform(out[1]);
    const double two_pi = 6.283185307179586476925286766559;
    return (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
}
