// Philox4x32-10 on the device: the same bits as kernels/philox.c (the cpu backend's), so
// the router's Gumbel noise is identical on every backend and rank count.
#pragma once
#include <stdint.h>

#define PHILOX_M0 0xD2511F53u // round multipliers
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u // Weyl key increments
#define PHILOX_W1 0xBB67AE85u

// out = Philox4x32-10(counter x, key (key0, key1)), in place on x.
__device__ inline void philox4x32_10_device(uint32_t x[4], uint32_t key0, uint32_t key1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) { // the key is bumped before every round but the first
            key0 += PHILOX_W0;
            key1 += PHILOX_W1;
        }
        uint32_t hi0 = __umulhi(PHILOX_M0, x[0]), lo0 = PHILOX_M0 * x[0];
        uint32_t hi1 = __umulhi(PHILOX_M1, x[2]), lo1 = PHILOX_M1 * x[2];
        uint32_t next0 = hi1 ^ x[1] ^ key0, next2 = hi0 ^ x[3] ^ key1;
        x[0] = next0;
        x[1] = lo1;
        x[2] = next2;
        x[3] = lo0;
    }
}

// MODEL.md's Gumbel draw: key = seed, counter = (step, layer, sequence, position), first
// output word x, u = ((x >> 8) + 0.5) 2^-24, G = -log(-log u), in double as the cpu does.
__device__ inline float philox_gumbel_device(uint64_t seed, uint32_t step, uint32_t layer,
                                             uint32_t sequence, uint32_t position) {
    uint32_t x[4] = {step, layer, sequence, position};
    philox4x32_10_device(x, (uint32_t)seed, (uint32_t)(seed >> 32));
    double u = ((double)(x[0] >> 8) + 0.5) * (1.0 / 16777216.0);
    return (float)(-log(-log(u)));
}
