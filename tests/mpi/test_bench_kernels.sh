#!/usr/bin/env bash
# hspmn_dist bench --bench_kernels 1 on the cpu: every op row is printed once with a positive
# finite time, work and rate held to a named ceiling whose percentage matches the rate; the
# ceilings follow --peak_tflops / --peak_gbps; two ranks print one table; malformed values of
# the new flags are usage errors (exit 2) naming the flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
compute_ops="slot_topk attention_forward attention_backward attention_forward:dense
    attention_backward:dense linear_forward:head
    linear_backward:head linear_forward:mlp linear_backward:mlp lm_head_loss"
memory_ops="slot_read_forward slot_read_backward cross_entropy_fused adamw_update:dense
    adamw_update:slots gather_rows:values scatter_add_rows:values"

# check_table LOG TFLOPS GBPS: each row's columns are
#   op shape ms/call MB GFLOP rate unit ceiling %ceil
check_table() {
    local log=$1 tflops=$2 gbps=$3
    grep -E "^ceilings: compute $tflops TFLOP/s \(--peak_tflops.*memory $gbps GB/s \(--peak_gbps" \
        "$log" >/dev/null || { echo "FAIL: ceilings line does not name $tflops / $gbps"; exit 1; }
    awk -v compute="$compute_ops" -v memory="$memory_ops" -v tflops="$tflops" -v gbps="$gbps" '
        function positive(x) { return x ~ /^[0-9.]+(e[-+]?[0-9]+)?$/ && x + 0 > 0 }
        BEGIN {
            n = split(compute, c, /[ \n]+/); for (i = 1; i <= n; i++) if (c[i] != "") want[c[i]] = "compute"
            n = split(memory, m, /[ \n]+/); for (i = 1; i <= n; i++) if (m[i] != "") want[m[i]] = "memory"
        }
        # The table: from its header row to the first line that is not indented.
        $1 == "op" && $2 == "shape" { in_table = 1; next }
        in_table && !/^  / { in_table = 0 }
        in_table && $1 in want {
            seen[$1]++
            ms = $3; mb = $4; gflop = $5; rate = $6; unit = $7; ceil = $8; pct = $9
            if (!positive(ms) || !positive(mb) || !positive(rate)) {
                print "FAIL: " $1 ": time " ms ", MB " mb ", rate " rate; bad = 1
            }
            if (ceil != want[$1]) { print "FAIL: " $1 " held to " ceil; bad = 1 }
            if (ceil == "compute") {
                if (unit != "TFLOP/s" || !positive(gflop)) { print "FAIL: " $1 " FLOPs " gflop " " unit; bad = 1 }
                # GFLOP / ms = TFLOP/s
                if (rate < 0.99 * gflop / ms || rate > 1.01 * gflop / ms) {
                    print "FAIL: " $1 " rate " rate " is not its GFLOP over its time"; bad = 1
                }
                peak = tflops
            } else {
                if (unit != "GB/s" || gflop != "-") { print "FAIL: " $1 " unit " unit " FLOPs " gflop; bad = 1 }
                if (rate < 0.99 * mb / ms || rate > 1.01 * mb / ms) {  # MB / ms = GB/s
                    print "FAIL: " $1 " rate " rate " is not its MB over its time"; bad = 1
                }
                peak = gbps
            }
            sub(/%$/, "", pct)
            pct += 0 # numeric again: after sub() awk would compare it as a string
            want_pct = 100 * rate / peak
            if (pct < 0.99 * want_pct || pct > 1.01 * want_pct) {
                print "FAIL: " $1 " is " pct "% of its ceiling, expected " want_pct; bad = 1
            }
        }
        END {
            for (op in want) if (seen[op] != 1) { print "FAIL: row " op " printed " seen[op] + 0 " times"; bad = 1 }
            exit bad
        }' "$log"
    grep -E '^slot_topk: [0-9.e+-]+ G token-key scores/s' "$log" >/dev/null ||
        { echo "FAIL: no scores/s line"; exit 1; }
    grep -E '^slot_read_forward: [0-9.e+-]+ GB/s effective, against .* 2500 GB/s' "$log" \
        >/dev/null || { echo "FAIL: no slot lookup target line"; exit 1; }
    grep -E '^attention op, forward \+ backward: Mq=[0-9]+ \(every position\) .* = [0-9.e+-]+x' \
        "$log" >/dev/null || { echo "FAIL: no attention speed-up line"; exit 1; }
    grep -E '^lm_head_loss, N=[0-9]+ tokens: [0-9.e+-]+ ms; .* ratio [0-9.e+-]+x' "$log" \
        >/dev/null || { echo "FAIL: no lm_head_loss comparison line"; exit 1; }
    # The kernel benchmark replaces the training steps.
    ! grep -q '^tokens/s' "$log" || { echo "FAIL: training steps ran too"; exit 1; }
}

run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_kernels 1 --bench_steps 2 \
    --bench_warmup 1 >"$work/k1.log"
cat "$work/k1.log"
check_table "$work/k1.log" 800 3350
grep -E '^timing: median of 2 calls after 1 untimed' "$work/k1.log" >/dev/null ||
    { echo "FAIL: timing line does not follow --bench_steps / --bench_warmup"; exit 1; }

# Given ceilings are the ones used; two ranks print one table (slot shard S / 2 rows).
run_mpi 2 "$bin" bench --preset tiny --device cpu --bench_kernels 1 --bench_steps 1 \
    --bench_warmup 0 --peak_tflops 0.5 --peak_gbps 20 >"$work/k2.log"
check_table "$work/k2.log" 0.5 20
[[ $(grep -c '^== bench kernels' "$work/k2.log") -eq 1 ]] || { echo "FAIL: not one table"; exit 1; }
grep -E '^shapes: .* slot shard 32 rows' "$work/k2.log" >/dev/null ||
    { echo "FAIL: two ranks do not time a half shard"; exit 1; }
grep -E '^  slot_topk +N=[0-9]+,rows=32,' "$work/k2.log" >/dev/null ||
    { echo "FAIL: slot_topk row does not use the shard"; exit 1; }

# Malformed values are usage errors naming the flag.
expect_usage_error() { # flag value
    local code=0
    run_mpi 1 "$bin" bench --preset tiny --device cpu --bench_kernels 1 --bench_steps 1 \
        --bench_warmup 0 "--$1" "$2" >/dev/null 2>"$work/err.log" || code=$?
    [[ $code -eq 2 ]] || { echo "FAIL: --$1 $2 exited $code, expected 2"; exit 1; }
    grep -q -- "--$1" "$work/err.log" || { echo "FAIL: --$1 $2: error does not name the flag"; exit 1; }
}
expect_usage_error bench_kernels 2
expect_usage_error bench_kernels x
expect_usage_error peak_gbps 0
expect_usage_error peak_gbps -1
expect_usage_error peak_gbps abc
# To a file first: `grep -q` on a pipe stops reading at the first match, and under pipefail
# the writer's SIGPIPE would fail the test at random.
"$bin" --help >"$work/help.txt"
grep -q -- '--bench_kernels' "$work/help.txt" || { echo "FAIL: --help lacks --bench_kernels"; exit 1; }
grep -q -- '--peak_gbps' "$work/help.txt" || { echo "FAIL: --help lacks --peak_gbps"; exit 1; }
echo "bench kernels test passed"
