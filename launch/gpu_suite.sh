#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA backend, run the whole ctest suite (the gpu
# parity tests included), then train the MODEL.md seed configuration for a few steps and
# print a short table. Logs go to $OUT (or ./gpu_suite_out).
#   bash launch/gpu_suite.sh [steps] [micro_batch]     (BENCH_SWEEP= skips the variant sweep,
#                                                      BENCH_KERNELS= the per-op benchmarks,
#                                                      TORCH_REFERENCE= the PyTorch baseline)
# On this workplace's lent GPU machine, the build kit is carried as .gpu/ (env.sh unpacks
# Open MPI, parallel HDF5 and Check); elsewhere the system's packages are used.
set -uo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
mb=${2:-1}
out=${OUT:-gpu_suite_out}
mkdir -p "$out"
[ -f .gpu/env.sh ] && source .gpu/env.sh
source launch/mpi_env.sh

t0=$(date +%s)
cmake -S . -B build-gpu ${GPU_CMAKE_FLAGS:-} -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }
t_build=$(($(date +%s) - t0))

(cd build-gpu && ctest --output-on-failure -j4 --timeout 600) >"$out/ctest.log" 2>&1
ctest_rc=$?
t_ctest=$(($(date +%s) - t0 - t_build))

# Seed configuration at T = 4096 on the one GPU; GPU memory sampled every 100 ms
# (nvidia-smi's view, which includes the CUDA context and cuBLAS workspaces).
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$out/gpu_mem.csv" 2>/dev/null &
smi=$!
mpirun -np 1 build-gpu/hspmn_dist train --preset seed --device cuda --steps "$steps" \
    --micro_batch "$mb" --batch "$mb" --warmup 2 --log_every 1 --eval_every 0 --ckpt_every 0 --resume none \
    --run_dir "$out/seed_run" >"$out/seed_train.log" 2>&1
train_rc=$?
kill $smi 2>/dev/null

# The benchmark: the seed configuration and its variants (attn=dense, ffn=dense, T sweep),
# with the defaults (--matmul bf16 on cuda, --refetch_slot_rows 1).
mpirun -np 1 build-gpu/hspmn_dist bench --preset seed --device cuda --micro_batch 4 \
    --bench_steps 5 --bench_warmup 2 ${BENCH_SWEEP---bench_sweep} >"$out/bench.log" 2>&1
bench_rc=$?
# The base variant with fp32 matmuls (the cpu oracle's precision), for comparison.
mpirun -np 1 build-gpu/hspmn_dist bench --preset seed --device cuda --micro_batch 4 \
    --bench_steps 5 --bench_warmup 2 --matmul fp32 >"$out/bench_fp32.log" 2>&1
# The memory options both off and both on: what they save in peak memory and cost in step
# time, against each other.
mpirun -np 1 build-gpu/hspmn_dist bench --preset seed --device cuda --micro_batch 4 \
    --bench_steps 5 --bench_warmup 2 --refetch_slot_rows 0 >"$out/bench_kept.log" 2>&1
mpirun -np 1 build-gpu/hspmn_dist bench --preset seed --device cuda --micro_batch 4 \
    --bench_steps 5 --bench_warmup 2 --recompute_elementwise 1 >"$out/bench_lean.log" 2>&1
# Each main op alone at the seed shapes against its ceiling, in both modes
# (BENCH_KERNELS= skips them).
if [ -n "${BENCH_KERNELS-1}" ]; then
    for mm in fp32 bf16; do
        mpirun -np 1 build-gpu/hspmn_dist bench --preset seed --device cuda --micro_batch 4 \
            --bench_steps 10 --bench_warmup 2 --matmul $mm --bench_kernels 1 \
            >"$out/bench_kernels_$mm.log" 2>&1
    done
fi

# The PyTorch reference of the same model at the same micro-batch: tokens/s and peak memory
# to compare with the bench (TORCH_REFERENCE= skips it; needs a python3 with torch).
if [ -n "${TORCH_REFERENCE-1}" ] && python3 -c "import torch" 2>/dev/null; then
    python3 launch/tools/hspmn_torch_reference.py --micro_batch 4 >"$out/torch_reference_mb4.log" 2>&1
fi

echo "=== ctest (last lines) ==="
grep -E "tests passed|tests failed|Failed|\*\*\*|Not Run|Skipped" "$out/ctest.log" | tail -20
echo "=== seed training (last lines) ==="
tail -8 "$out/seed_train.log"
peak=$(sort -n "$out/gpu_mem.csv" 2>/dev/null | tail -1)
echo "=== bench (base variant, then the sweep) ==="
sed -n '/^== bench base/,/^$/p' "$out/bench.log" | grep -vE "^(model:|batch:)"
sed -n '/^== sweep summary/,$p' "$out/bench.log"
echo "=== bench, --matmul fp32 ==="
grep -E "^(step time|tokens/s|MFU|memory)|^  (reflexive|attention|slot_memory|head_loss) " "$out/bench_fp32.log"
echo "=== bench, --refetch_slot_rows 0 (every activation kept) ==="
grep -E "^(step time|tokens/s|memory)|^  (reflexive|slot_memory) " "$out/bench_kept.log"
echo "=== bench, --refetch_slot_rows 1 --recompute_elementwise 1 ==="
grep -E "^(step time|tokens/s|memory)|^  (reflexive|slot_memory) " "$out/bench_lean.log"
if [ -f "$out/torch_reference_mb4.log" ]; then
    echo "=== PyTorch reference (issue 6's baseline), micro-batch 4 ==="
    sed -n '/^result/,$p' "$out/torch_reference_mb4.log"
fi
for mm in fp32 bf16; do
    [ -f "$out/bench_kernels_$mm.log" ] || continue
    echo "=== kernels alone, --matmul $mm ==="
    grep -vE "^(\[|  *$)" "$out/bench_kernels_$mm.log" | tail -25
done
echo "=== summary ==="
printf "%-28s %s\n" "build (s)" "$t_build" "ctest (s)" "$t_ctest" "ctest exit" "$ctest_rc" \
    "seed train exit" "$train_rc" "bench exit" "$bench_rc" "peak GPU memory (MiB)" "${peak:-?}"
