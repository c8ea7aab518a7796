// Linear warmup then cosine decay (see schedule.h).
#include "optim/schedule.h"

#include <math.h>
#include <stdio.h>

int lr_schedule_validate(const LrSchedule *s, char *err, int errlen) {
    if (!(s->lr >= 0.0f) || !isfinite(s->lr)) {
        snprintf(err, errlen, "lr must be a finite value >= 0 (got %g)", (double)s->lr);
        return -1;
    }
    if (s->warmup_steps < 0) {
        snprintf(err, errlen, "warmup_steps must be >= 0 (got %d)", s->warmup_steps);
        return -1;
    }
    if (s->total_steps < s->warmup_steps) {
        snprintf(err, errlen, "total_steps (%d) must be >= warmup_steps (%d)", s->total_steps,
                 s->warmup_steps);
        return -1;
    }
    if (!(s->min_lr_frac >= 0.0f && s->min_lr_frac <= 1.0f)) {
        snprintf(err, errlen, "min_lr_frac must lie in [0, 1] (got %g)", (double)s->min_lr_frac);
        return -1;
    }
    return 0;
}

float lr_schedule_at(const LrSchedule *s, int step) {
    double peak = s->lr;
    if (step < s->warmup_steps)
        return (float)(peak * (double)(step + 1) / (double)s->warmup_steps);
    double floor_lr = s->min_lr_frac * peak;
    if (step >= s->total_steps)
        return (float)floor_lr;
    int decay_steps = s->total_steps - s->warmup_steps; // > 0 here: warmup <= step < total
    double progress = (double)(step - s->warmup_steps) / (double)decay_steps;
    const double pi = 3.14159265358979323846;
    return (float)(floor_lr + (peak - floor_lr) * 0.5 * (1.0 + cos(pi * progress)));
}
