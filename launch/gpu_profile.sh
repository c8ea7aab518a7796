#!/usr/bin/env bash
# Where the GPU time of a training step goes, kernel by kernel: builds the CUDA backend
# (as gpu_suite.sh does, into build-gpu), runs the bench under Nsight Systems and prints
# the kernels that take the most time per step. Logs and the .nsys-rep go to $OUT (or
# ./gpu_profile_out).
#   bash launch/gpu_profile.sh [bench flags...]    e.g. --matmul bf16 --micro_batch 4
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_profile_out}
mkdir -p "$out"
[ -f .gpu/env.sh ] && source .gpu/env.sh
source launch/mpi_env.sh
command -v ncu >/dev/null || { echo "gpu_profile: ncu (Nsight Compute) not found on PATH" >&2; exit 1; }

cmake -S . -B build-gpu ${GPU_CMAKE_FLAGS:-} -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }

# ncu serialises the kernels and times each one (a single metric: one replay pass), so the
# run is slow but each kernel's time is its own. One warm-up step and STEPS timed steps.
steps=${STEPS:-2}
ncu --metrics gpu__time_duration.sum --csv --page raw --log-file "$out/ncu.csv" \
    build-gpu/hspmn_dist bench --preset seed --device cuda --comm mpi --bench_steps "$steps" \
    --bench_warmup 1 "$@" >"$out/bench.log" 2>&1 || { tail -20 "$out/bench.log"; exit 1; }
echo "=== kernels, ms per step (ncu; over $((steps + 1)) steps), top 40 ==="
python3 - "$out/ncu.csv" $((steps + 1)) <<'PY'
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = list(csv.DictReader(lines))
steps = int(sys.argv[2])
total, count = collections.Counter(), collections.Counter()
for r in rows:
    try:
        t = float(r["gpu__time_duration.sum"].replace(",", ""))  # ncu writes 1,234
    except (KeyError, ValueError):
        continue  # the units row
    name = r["Kernel Name"].split("(")[0]
    total[name] += t
    count[name] += 1
unit = {"nsecond": 1e6, "usecond": 1e3, "msecond": 1.0}.get(rows[0]["gpu__time_duration.sum"], 1e6)
allt = sum(total.values())
for name, t in total.most_common(40):
    print(f"{t / steps / unit:8.2f} ms {100 * t / allt:5.1f}% {count[name] // steps:5d}x  {name[:90]}")
print(f"{allt / steps / unit:8.2f} ms total kernel time per step")
PY
