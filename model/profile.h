// Where the time of a training step goes: a Profiler times the phases of the model (and
// the optimizer and gradient all-reduce, marked by whoever runs them) through the op
// table's timers, so the same markers work on every backend.
//
// Markers are cheap: with Model.profiler == NULL a marker is one NULL check. With a
// profiler, a marker records a backend timer (cuda: an event on the stream) and nothing
// waits; the step's timer pairs are resolved once, in profiler_end_step.
//
// Use:
//   profiler_begin_step(p);
//   ... model_forward / model_backward (markers inside);
//   profile_begin(p, PHASE_OPTIMIZER, PROFILE_FORWARD); optimizer ...; profile_end(p);
//   float step_ms = profiler_end_step(p);
#pragma once
#include "kernels/ops.h"

typedef enum ProfilePhase {
    PHASE_EMBED = 0,   // token embedding gather (forward), its scatter-add (backward)
    PHASE_REFLEXIVE,   // norm_a, causal conv, reflexive MLP
    PHASE_ROUTER,      // router logits, Gumbel noise, query selection, route loss
    PHASE_ATTENTION,   // q/k/v/o projections, RoPE, attention, gate
    PHASE_SLOT_MEMORY, // norm_m, compressor, slot exchange, slot read (or the dense FFN)
    PHASE_HEAD_LOSS,   // norm_f, LM head, cross-entropy
    PHASE_STORAGE,     // bf16_activations: keeping activations in bf16, widening them back
    PHASE_OPTIMIZER,   // zeroing the gradients, grad norm, AdamW
    PHASE_COMM,        // all-reduce of the dense gradients
    PHASE_COUNT
} ProfilePhase;

typedef enum ProfileDirection { PROFILE_FORWARD = 0, PROFILE_BACKWARD = 1 } ProfileDirection;

typedef struct ProfileMark {
    void *start, *end; // backend timers
    int phase, direction;
} ProfileMark;

typedef struct Profiler {
    const Ops *ops;
    ProfileMark *marks; // [capacity] this step's timer pairs; timers are kept across steps
    int n_marks, capacity;
    int open; // 1 while a phase is begun and not yet ended
    void *step_start, *step_end;
    int in_step;
    // Totals over the steps ended since the last profiler_reset (milliseconds).
    double phase_ms[PHASE_COUNT][2]; // [phase][direction]
    double step_ms_total;
    int steps;
} Profiler;

Profiler *profiler_create(const Ops *ops);
void profiler_destroy(Profiler *p);
// Forget the totals (the timers are kept).
void profiler_reset(Profiler *p);

void profiler_begin_step(Profiler *p);
// Record the step's end, wait for it, add every phase's time to the totals; returns the
// step time in milliseconds.
float profiler_end_step(Profiler *p);

// Phase markers. Phases do not nest: begin, end, begin, end. Call them through
// profile_begin / profile_end, which do nothing when the profiler is NULL.
void profiler_phase_begin(Profiler *p, ProfilePhase phase, ProfileDirection direction);
void profiler_phase_end(Profiler *p);
static inline void profile_begin(Profiler *p, ProfilePhase phase, ProfileDirection direction) {
    if (p)
        profiler_phase_begin(p, phase, direction);
}
static inline void profile_end(Profiler *p) {
    if (p)
        profiler_phase_end(p);
}

// Mean milliseconds per step of one phase: direction PROFILE_FORWARD or PROFILE_BACKWARD,
// or -1 for both together. 0 before any step has ended.
double profiler_phase_mean_ms(const Profiler *p, ProfilePhase phase, int direction);
double profiler_step_mean_ms(const Profiler *p);
// "embed", "reflexive", "router", "attention", "slot_memory", "head_loss", "storage",
// "optimizer", "comm"
const char *profile_phase_name(ProfilePhase phase);
