#!/usr/bin/env bash
# hspmn_dist bench on the cpu: at 1 and 2 ranks it prints tokens/s, MFU, memory and a phase
# table naming every phase, whose times add up to the measured step (within 20%); with
# --bench_sweep it prints one summary row per variant (each length sparse and attn=dense) and
# the attention speed-up of sparse queries at each length.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
phases="embed reflexive router attention slot_memory head_loss storage optimizer comm"

check_single() { # log ranks
    local log=$1 ranks=$2
    grep -E '^tokens/s: [0-9.]+ \(all '"$ranks"' rank' "$log" >/dev/null ||
        { echo "FAIL: no tokens/s line for $ranks rank(s)"; exit 1; }
    grep -E '^MFU: [0-9.e+-]+% of 800 TFLOP/s per device x '"$ranks"' device' "$log" >/dev/null ||
        { echo "FAIL: no MFU line"; exit 1; }
    grep -E '^memory: peak [0-9.]+ MiB' "$log" >/dev/null || { echo "FAIL: no memory line"; exit 1; }
    grep -E '^model FLOPs per token: [0-9.]+ MFLOP training' "$log" >/dev/null ||
        { echo "FAIL: no FLOP count"; exit 1; }
    for phase in $phases; do
        grep -E "^  $phase +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+%" "$log" >/dev/null ||
            { echo "FAIL: phase $phase missing from the table"; exit 1; }
    done
    awk -v phases="$phases" '
        BEGIN { n = split(phases, names, " "); for (i = 1; i <= n; i++) want[names[i]] = 1 }
        $1 in want { sum += $4; seen++ }
        $1 == "(step)" { step = $2 }
        $1 == "tokens/s:" { tok = $2 }
        END {
            printf "phases sum to %.3f ms of a %.3f ms step; %s tok/s\n", sum, step, tok
            if (seen != n) { print "FAIL: " seen " phase rows of " n; exit 1 }
            if (!(step > 0) || !(tok > 0)) { print "FAIL: no step time or throughput"; exit 1 }
            if (sum < 0.8 * step || sum > 1.2 * step) { print "FAIL: phases do not add up"; exit 1 }
        }' "$log"
}

for np in 1 2; do
    run_mpi "$np" "$bin" bench --preset tiny --device cpu --bench_steps 2 --bench_warmup 1 \
        >"$work/bench$np.log"
    cat "$work/bench$np.log"
    check_single "$work/bench$np.log" "$np"
done

# --refetch_slot_rows 1 and --recompute_elementwise 1: the header says so and the peak is
# lower than with both off (one layer's slot rows and recomputable activations of the tiny
# model's two: 512 tokens x (4 x (8 + 32) + 3 x 32 + 64 + 32 x 13 / 64) floats, 0.63 MiB).
run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_steps 1 --bench_warmup 0 \
    --refetch_slot_rows 0 --recompute_elementwise 0 >"$work/kept.log"
run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_steps 1 --bench_warmup 0 \
    --refetch_slot_rows 1 --recompute_elementwise 1 >"$work/lean.log"
check_single "$work/lean.log" 1
grep -q '^model: .*slot rows refetched in the backward.*recomputed in the backward' \
    "$work/lean.log" || { echo "FAIL: the header does not name the memory options"; exit 1; }
# --activations bf16 on top: named in the header, a storage phase that takes time, and a
# peak lower again. (With 4 layers: bf16 copies of all layers but the last save (L - 1) / 2
# layers' worth of activations.)
run_mpi 1 "$bin" bench --preset tiny --n_layers 4 --device cpu --bench_steps 1 --bench_warmup 0 \
    --refetch_slot_rows 1 --recompute_elementwise 1 >"$work/lean4.log"
run_mpi 1 "$bin" bench --preset tiny --n_layers 4 --device cpu --bench_steps 1 --bench_warmup 0 \
    --refetch_slot_rows 1 --recompute_elementwise 1 --activations bf16 >"$work/bf16.log"
check_single "$work/bf16.log" 1
grep -q '^model: .*activations kept in bf16 for the backward' "$work/bf16.log" ||
    { echo "FAIL: the header does not name --activations bf16"; exit 1; }
awk '$1 == "storage" && !($4 > 0) { print "FAIL: no time in the storage phase"; bad = 1 }
     END { exit bad }' "$work/bf16.log"
peak() { sed -nE 's/^memory: peak ([0-9.]+) MiB.*/\1/p' "$1"; }
awk -v kept="$(peak "$work/kept.log")" -v lean="$(peak "$work/lean.log")" \
    -v lean4="$(peak "$work/lean4.log")" -v bf16="$(peak "$work/bf16.log")" 'BEGIN {
    printf "peak %s MiB keeping every activation, %s MiB with both memory options\n", kept, lean
    printf "4 layers: peak %s MiB with both memory options, %s MiB with bf16 activations too\n",
        lean4, bf16
    if (!(lean + 0.1 < kept + 0)) { print "FAIL: the memory options did not lower the peak"; exit 1 }
    if (!(bf16 + 0.1 < lean4 + 0)) { print "FAIL: bf16 activations did not lower the peak"; exit 1 }
}'

# The sweep: base, attn=dense, ffn=dense and each sequence length, one row each.
run_mpi 2 "$bin" bench --preset tiny --device cpu --bench_steps 2 --bench_warmup 1 --bench_sweep \
    --bench_seq_lens 16,32,64 --bench_tokens 256 >"$work/sweep.log"
sed -n '/^== sweep summary/,$p' "$work/sweep.log"
for variant in base attn=dense ffn=dense T=16 T=16/dense T=32 T=32/dense T=64 T=64/dense; do
    rows=$(sed -n '/^== sweep summary/,$p' "$work/sweep.log" |
        grep -cE "^  $variant +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.e+-]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$" || true)
    [[ $rows -eq 1 ]] || { echo "FAIL: sweep row for $variant appears $rows times"; exit 1; }
done
# The attention speed-up of sparse queries, one line per length with an attn=dense twin.
for pair in "attn=dense vs base" "T=16/dense vs T=16" "T=32/dense vs T=32" "T=64/dense vs T=64"; do
    grep -E "^  T=[0-9]+ +$pair: [0-9.]+ / [0-9.]+ ms = [0-9.]+x$" "$work/sweep.log" >/dev/null ||
        { echo "FAIL: no attention speed-up line '$pair'"; exit 1; }
done
# Constant tokens per step: T=16 runs 16 sequences per rank, T=64 runs 4.
grep -E '^  T=16 +16 +16 ' "$work/sweep.log" >/dev/null &&
    grep -E '^  T=64 +64 +4 ' "$work/sweep.log" >/dev/null ||
    { echo "FAIL: the sweep did not scale the micro-batch"; exit 1; }

# "--bench_sweep 0" (the --flag value form) turns the sweep off: no summary.
run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_steps 1 --bench_warmup 0 --bench_sweep 0 \
    >"$work/nosweep.log"
! grep -q '^== sweep summary' "$work/nosweep.log" || { echo "FAIL: --bench_sweep 0 swept"; exit 1; }
grep -q '^tokens/s' "$work/nosweep.log" || { echo "FAIL: --bench_sweep 0 did not bench"; exit 1; }

# A bad sweep list is a usage error naming the flag.
if run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_sweep --bench_seq_lens 16,x \
    2>"$work/err.log" >/dev/null; then
    echo "FAIL: --bench_seq_lens 16,x was accepted"; exit 1
fi
grep -q 'bench_seq_lens' "$work/err.log" || { echo "FAIL: error does not name the flag"; exit 1; }
echo "bench test passed"
