// The phase profiler of model/profile.h: a pool of backend timer pairs filled during a
// step and read once at its end.
#include "model/profile.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/error.h"

static const char *const phase_names[PHASE_COUNT] = {
    "embed",     "reflexive", "router",    "attention", "slot_memory",
    "head_loss", "storage",   "optimizer", "comm",
};

const char *profile_phase_name(ProfilePhase phase) {
    if ((int)phase < 0 || phase >= PHASE_COUNT)
        hs_fatal("profile_phase_name: no phase %d", (int)phase);
    return phase_names[phase];
}

Profiler *profiler_create(const Ops *ops) {
    if (!ops->timer_create || !ops->timer_record || !ops->timer_elapsed_ms || !ops->timer_destroy)
        hs_fatal("profiler: the %s backend has no timer ops", ops->name);
    Profiler *p = hs_calloc(1, sizeof(Profiler));
    p->ops = ops;
    p->step_start = ops->timer_create();
    p->step_end = ops->timer_create();
    return p;
}

void profiler_destroy(Profiler *p) {
    if (!p)
        return;
    for (int i = 0; i < p->capacity; i++) {
        p->ops->timer_destroy(p->marks[i].start);
        p->ops->timer_destroy(p->marks[i].end);
    }
    p->ops->timer_destroy(p->step_start);
    p->ops->timer_destroy(p->step_end);
    free(p->marks);
    free(p);
}

void profiler_reset(Profiler *p) {
    memset(p->phase_ms, 0, sizeof(p->phase_ms));
    p->step_ms_total = 0.0;
    p->steps = 0;
}

void profiler_begin_step(Profiler *p) {
    if (p->in_step)
        hs_fatal("profiler_begin_step: the previous step was not ended");
    p->n_marks = 0;
    p->open = 0;
    p->in_step = 1;
    p->ops->timer_record(p->step_start);
}

// The next mark of the pool, growing it (with fresh timers) when this step has more marks
// than any step before.
static ProfileMark *next_mark(Profiler *p) {
    if (p->n_marks == p->capacity) {
        int grown = p->capacity ? 2 * p->capacity : 64;
        ProfileMark *marks = hs_calloc((size_t)grown, sizeof(ProfileMark));
        if (p->capacity)
            memcpy(marks, p->marks, (size_t)p->capacity * sizeof(ProfileMark));
        for (int i = p->capacity; i < grown; i++) {
            marks[i].start = p->ops->timer_create();
            marks[i].end = p->ops->timer_create();
        }
        free(p->marks);
        p->marks = marks;
        p->capacity = grown;
    }
    return &p->marks[p->n_marks++];
}

void profiler_phase_begin(Profiler *p, ProfilePhase phase, ProfileDirection direction) {
    if (!p->in_step)
        hs_fatal("profiler: phase %s begun outside profiler_begin_step/end_step",
                 profile_phase_name(phase));
    if (p->open)
        hs_fatal("profiler: phase %s begun while phase %s is still open (phases do not nest)",
                 profile_phase_name(phase), phase_names[p->marks[p->n_marks - 1].phase]);
    ProfileMark *mark = next_mark(p);
    mark->phase = phase;
    mark->direction = direction;
    p->open = 1;
    p->ops->timer_record(mark->start);
}

void profiler_phase_end(Profiler *p) {
    if (!p->open)
        hs_fatal("profiler: phase end without a begin");
    p->ops->timer_record(p->marks[p->n_marks - 1].end);
    p->open = 0;
}

float profiler_end_step(Profiler *p) {
    if (!p->in_step)
        hs_fatal("profiler_end_step: no step was begun");
    if (p->open)
        hs_fatal("profiler_end_step: phase %s is still open",
                 phase_names[p->marks[p->n_marks - 1].phase]);
    p->ops->timer_record(p->step_end);
    p->in_step = 0;
    float step_ms = p->ops->timer_elapsed_ms(p->step_start, p->step_end);
    for (int i = 0; i < p->n_marks; i++) {
        const ProfileMark *mark = &p->marks[i];
        p->phase_ms[mark->phase][mark->direction] +=
            p->ops->timer_elapsed_ms(mark->start, mark->end);
    }
    p->step_ms_total += step_ms;
    p->steps++;
    return step_ms;
}

double profiler_phase_mean_ms(const Profiler *p, ProfilePhase phase, int direction) {
    if (p->steps == 0)
        return 0.0;
    double total = direction < 0 ? p->phase_ms[phase][0] + p->phase_ms[phase][1]
                                 : p->phase_ms[phase][direction];
    return total / p->steps;
}

double profiler_step_mean_ms(const Profiler *p) {
    return p->steps ? p->step_ms_total / p->steps : 0.0;
}
