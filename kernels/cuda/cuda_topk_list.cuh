// The sorted top-K lists the slot selection kernels keep per token (cuda_slot_topk.cu,
// cuda_slot_topk_tc.cu): the ranking rule and the register-list insertion.
#pragma once
#include <math.h> // INFINITY
#include <stdint.h>

// Does (score a, slot ia) rank before (score b, slot ib)? Slot -1 (padding) compares as the
// largest unsigned id, so it loses every tie. A NaN score ranks before nothing.
__device__ __forceinline__ bool ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != b)
        return a > b;
    return (uint32_t)ia < (uint32_t)ib;
}

// An empty list: every place padding, (-inf, -1).
template <int KP>
__device__ __forceinline__ void topk_list_clear(float (&s)[KP], int32_t (&ids)[KP]) {
#pragma unroll
    for (int k = 0; k < KP; k++) {
        s[k] = -INFINITY;
        ids[k] = -1;
    }
}

// Offer (score, slot) to the sorted register list (s, ids) [KP]; returns whether it entered.
// Every index is a compile-time constant after unrolling, so the list stays in registers.
// Going from the end: an entry that the newcomer beats moves down one place, and the
// newcomer lands where it beats the entry but not the one above.
template <int KP>
__device__ __forceinline__ bool topk_offer(float (&s)[KP], int32_t (&ids)[KP], float score,
                                           int32_t slot) {
    if (!(score >= s[KP - 1])) // the cheap reject of almost every key (and of NaN)
        return false;
    if (!ranks_before(score, slot, s[KP - 1], ids[KP - 1]))
        return false;
#pragma unroll
    for (int k = KP - 1; k > 0; k--) {
        bool moves_down = ranks_before(score, slot, s[k - 1], ids[k - 1]);
        bool lands_here = !moves_down && ranks_before(score, slot, s[k], ids[k]);
        s[k] = moves_down ? s[k - 1] : (lands_here ? score : s[k]);
        ids[k] = moves_down ? ids[k - 1] : (lands_here ? slot : ids[k]);
    }
    if (ranks_before(score, slot, s[0], ids[0])) {
        s[0] = score;
        ids[0] = slot;
    }
    return true;
}

// topk_offer for a scan that offers slots in increasing order: the newcomer comes after
// every listed slot, so it loses every tie with a listed slot and wins every tie with
// padding (-1, always at the tail). Same result as topk_offer, fewer instructions a place:
// the insertion is the hot path of the tensor-core search, where a key enters a list far
// more often than in the merge.
template <int KP>
__device__ __forceinline__ void topk_offer_later(float (&s)[KP], int32_t (&ids)[KP], float score,
                                                 int32_t slot) {
    if (!(score >= s[KP - 1])) // also rejects NaN
        return;
    bool beats_here = score > s[KP - 1] || ids[KP - 1] < 0;
    if (!beats_here)
        return;
#pragma unroll
    for (int k = KP - 1; k > 0; k--) {
        bool beats_above = score > s[k - 1] || ids[k - 1] < 0;
        s[k] = beats_above ? s[k - 1] : (beats_here ? score : s[k]);
        ids[k] = beats_above ? ids[k - 1] : (beats_here ? slot : ids[k]);
        beats_here = beats_above;
    }
    if (beats_here) {
        s[0] = score;
        ids[0] = slot;
    }
}

// Calls f.template operator()<KP>() with KP = K rounded up to a power of two (1 .. 32): the
// list lengths the selection kernels are built for (they write only the first K entries).
template <typename F> void with_list_length(int K, F &&f) {
    if (K <= 1)
        f.template operator()<1>();
    else if (K <= 2)
        f.template operator()<2>();
    else if (K <= 4)
        f.template operator()<4>();
    else if (K <= 8)
        f.template operator()<8>();
    else if (K <= 16)
        f.template operator()<16>();
    else
        f.template operator()<32>();
}
