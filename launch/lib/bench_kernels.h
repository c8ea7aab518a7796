// hspmn_dist bench --bench_kernels 1: each main op of the op table (kernels/ops.h) timed on
// its own at the model's shapes, against a stated ceiling (--peak_tflops for compute-bound
// ops, --peak_gbps for memory-bound ones). docs/PERFORMANCE.md "Kernel micro-benchmarks"
// explains the table and the work models.
#pragma once
#include "launch/lib/session.h"

// The memory ceiling when --peak_gbps is not given: H100 SXM HBM3, GB/s (1e9 bytes).
#define BENCH_KERNELS_DEFAULT_GBPS 3350.0

typedef struct KernelBenchSettings {
    int steps;          // timed calls per op (the median is reported)
    int warmup;         // untimed calls per op first
    double peak_tflops; // compute ceiling per device, TFLOP/s
    double peak_gbps;   // memory ceiling per device, GB/s
} KernelBenchSettings;

// Runs the kernel benchmark on an open session whose model configuration is resolved
// (session_resolve_config). Every rank times the same ops at its own per-rank shapes (the
// slot table shard is S / ranks rows) on its own backend; the printed time of an op is the
// slowest rank's median. Rank 0 prints. Returns the process exit code.
int bench_kernels_main(Session *s, const KernelBenchSettings *settings);
