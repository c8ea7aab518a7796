// Learning-rate schedule: linear warmup to the peak, then cosine decay to min_lr_frac * peak.
#pragma once

typedef struct LrSchedule {
    float lr;          // peak learning rate
    int warmup_steps;  // steps of linear warmup (0: start at the peak)
    int total_steps;   // the cosine reaches its floor here and stays there
    float min_lr_frac; // floor as a fraction of the peak, in [0, 1]
} LrSchedule;

// Returns 0 when valid; otherwise a message naming the entry and its value in err, -1.
int lr_schedule_validate(const LrSchedule *s, char *err, int errlen);

// The learning rate of optimizer step `step` (counted from 0):
//   step < warmup:            lr * (step + 1) / warmup
//   warmup <= step < total:   floor + (lr - floor) * (1 + cos(pi * progress)) / 2,
//                             progress = (step - warmup) / (total - warmup)
//   step >= total:            floor = min_lr_frac * lr
float lr_schedule_at(const LrSchedule *s, int step);
