// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator, so any backend and any rank count draws the same number for
// the same (key, counter). Used for the router's Gumbel noise and for parameter init.
#pragma once
#include <stdint.h>

// out = Philox4x32-10(counter ctr, key); 10 rounds.
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

// u in (0, 1) from one 32-bit word: ((x >> 8) + 0.5) * 2^-24 (MODEL.md's Gumbel recipe).
double philox_word_to_uniform(uint32_t x);

// Gumbel noise of MODEL.md: key = seed, counter = (step, layer, sequence, position).
float philox_gumbel(uint64_t seed, uint32_t step, uint32_t layer, uint32_t sequence,
                    uint32_t position);

// A standard normal draw for parameter init, keyed by (seed, tensor id, element index):
// Box-Muller on the first two output words of counter (tensor, index low, index high, 0).
// Element-indexed, so a rank initialising only its slice of a table draws the same values
// as a single rank initialising the whole table.
float philox_normal(uint64_t seed, uint32_t tensor, uint64_t index);
