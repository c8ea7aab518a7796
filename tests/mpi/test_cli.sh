#!/usr/bin/env bash
# hspmn_dist's command line: --help, and clear usage errors (exit 2, the flag and the value
# named) for malformed flags and impossible combinations, on 1 and 2 ranks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run_mpi.sh"
bin="$HSPMN_BUILD/hspmn_dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect NP CODE PATTERN args...: hspmn_dist on NP ranks exits with CODE and prints PATTERN
# (a fixed string) somewhere in its output.
expect() {
    local np=$1 code=$2 pattern=$3
    shift 3
    local rc=0
    run_mpi "$np" "$bin" --run_dir "$work/run" "$@" >"$work/out" 2>&1 || rc=$?
    if [[ $rc -ne $code ]] || ! grep -qF -- "$pattern" "$work/out"; then
        echo "FAIL: np=$np '$*': exit $rc (want $code), output should contain '$pattern':"
        sed 's/^/    /' "$work/out" | head -20
        failures=$((failures + 1))
    else
        echo "ok: np=$np '$*' -> exit $rc, '$(grep -m1 -F -- "$pattern" "$work/out")'"
    fi
}

# --help lists the flags with their defaults and exits 0.
"$bin" --help >"$work/help"
for flag in --d_model --n_slots --capacity --attn --ffn --preset --micro_batch --batch --steps \
    --lr --data --run_dir --ckpt_every --resume --device --comm --threads --matmul \
    --refetch_slot_rows --recompute_elementwise --activations; do
    grep -q -- "$flag " "$work/help" || { echo "FAIL: --help does not list $flag"; failures=$((failures + 1)); }
done
grep -q -- "--steps *3000" "$work/help" || { echo "FAIL: --help shows no default for --steps"; failures=$((failures + 1)); }
grep -q -- "--matmul *bf16 on cuda, fp32 on cpu" "$work/help" ||
    { echo "FAIL: --help does not give --matmul's per-device default"; failures=$((failures + 1)); }
grep -q -- "--activations *bf16 with bf16 matmuls, else fp32" "$work/help" ||
    { echo "FAIL: --help does not give --activations' default"; failures=$((failures + 1)); }
grep -q -- "--refetch_slot_rows *1 " "$work/help" ||
    { echo "FAIL: --help does not show --refetch_slot_rows on by default"; failures=$((failures + 1)); }
# The run's configuration names the precision the backend chose (fp32 on the cpu when
# --matmul is not given) and what the backward keeps.
run_mpi 1 "$bin" --preset tiny --device cpu --steps 0 --resume none --run_dir "$work/cfg" >"$work/cfg.log" 2>&1 ||
    { echo "FAIL: a 0-step cpu run failed:"; sed 's/^/    /' "$work/cfg.log" | head; failures=$((failures + 1)); }
grep -qE "^ *matmul +fp32$" "$work/cfg.log" ||
    { echo "FAIL: the cpu run's configuration does not say matmul fp32:"; grep -i matmul "$work/cfg.log"; failures=$((failures + 1)); }
grep -qE "^ *backward memory +slot rows fetched again; norm, conv and GELU outputs kept$" "$work/cfg.log" ||
    { echo "FAIL: the configuration does not name the default memory options:"; grep -i "backward memory" "$work/cfg.log"; failures=$((failures + 1)); }
grep -qE "^ *activations +fp32$" "$work/cfg.log" ||
    { echo "FAIL: the cpu run's configuration does not say activations fp32:"; grep -i "activations" "$work/cfg.log"; failures=$((failures + 1)); }
# --activations bf16 works on the cpu too (the conversions are ops of both backends).
run_mpi 1 "$bin" --preset tiny --device cpu --steps 2 --activations bf16 --resume none --run_dir "$work/cfg16" >"$work/cfg16.log" 2>&1 ||
    { echo "FAIL: a cpu run with --activations bf16 failed:"; sed 's/^/    /' "$work/cfg16.log" | head; failures=$((failures + 1)); }
grep -qE "^ *activations +bf16 between forward and backward" "$work/cfg16.log" ||
    { echo "FAIL: the configuration does not say activations bf16:"; grep -i "activations" "$work/cfg16.log"; failures=$((failures + 1)); }

expect 1 2 "--steps: '12x'" --steps 12x
expect 2 2 "--steps: '12x'" --steps 12x
expect 2 2 "--steps: -3 is out of range" --steps -3
expect 1 2 "--lr: 'fast'" --lr fast
expect 1 2 "unknown flag --bogus" --bogus 1
expect 1 2 "--steps: missing value" --steps
expect 1 2 "unknown data kind 'nope'" --data nope
expect 1 2 "--d_model: 'abc'" --d_model abc
expect 1 2 "--attn: 'sideways'" --attn sideways
expect 1 2 "--device: 'tpu'" --device tpu
expect 1 2 "--matmul: 'fp16' is not one of fp32|tf32|bf16" --matmul fp16
expect 1 2 "--refetch_slot_rows: 2 is out of range [0, 1]" --refetch_slot_rows 2
expect 1 2 "--recompute_elementwise: 'yes' is not an integer" --recompute_elementwise yes
expect 1 2 "--activations: 'fp16' is not one of fp32|bf16" --activations fp16
expect 1 2 "unknown command 'fly'" fly
expect 1 2 "d_model=30 is not divisible by n_heads=4" --preset tiny --d_model 30
# Activations that cannot fit the memory free (1.1 TB of them) are refused before anything
# is allocated, with what each memory option would save.
# The advice names only the options that are off (--refetch_slot_rows is on by default).
expect 1 1 "lower --micro_batch, or keep less for the backward (--recompute_elementwise 1 saves" \
    --preset tiny --device cpu --micro_batch 4000000 --batch 4000000 --steps 1
expect 1 1 ", --activations bf16 saves" \
    --preset tiny --device cpu --micro_batch 4000000 --batch 4000000 --steps 1
expect 1 1 "(--refetch_slot_rows 1 saves" --refetch_slot_rows 0 \
    --preset tiny --device cpu --micro_batch 4000000 --batch 4000000 --steps 1
expect 1 1 "lower --micro_batch (the memory options --refetch_slot_rows, --recompute_elementwise and --activations bf16 are on already)" \
    --refetch_slot_rows 1 --recompute_elementwise 1 --activations bf16 \
    --preset tiny --device cpu --micro_batch 4000000 --batch 4000000 --steps 1
# batch = micro_batch x ranks x accumulation must hold exactly
expect 2 2 "--batch 8 is not divisible by --micro_batch 3 x 2 ranks" --preset tiny \
    --micro_batch 3 --batch 8 --steps 1
# every rank holds an equal shard of each slot table
expect 2 2 "--n_slots 63 is not divisible by the number of ranks (2)" --preset tiny \
    --n_slots 63 --steps 1
# eval without a checkpoint
expect 1 2 "eval needs a checkpoint" eval
# cuda asked for where there is none
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "skip: --device cuda check (a GPU is visible here)"
    # ...and a GPU run that its kernels cannot take is refused before anything is built.
    expect 1 2 "seq_len=32768 is more than the cuda backend's kernels take (at most 16384)" \
        --device cuda --preset tiny --seq_len 32768 --steps 1
    expect 1 2 "top_k=64 is more than the cuda backend's kernels take (at most 32)" \
        --device cuda --preset tiny --top_k 64 --steps 1
else
    expect 1 2 "--device cuda:" --device cuda --preset tiny --steps 1
fi
expect 1 2 "--comm nccl needs --device cuda" --device cpu --comm nccl --preset tiny --steps 1

if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all command-line checks passed"
