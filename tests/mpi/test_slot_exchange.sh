#!/usr/bin/env bash
# The expert-parallel slot exchange at 1, 2 and 4 ranks equals a single-rank computation on
# the whole table (prog_slot_exchange), and a world that does not divide n_slots is refused
# with a message naming both numbers.
set -u
source "${HSPMN_SRC:?}/tests/mpi/run_mpi.sh"
prog="${HSPMN_BUILD:?}/tests/prog_slot_exchange"
[ -x "$prog" ] || { echo "test_slot_exchange: $prog is not built"; exit 1; }

for np in 1 2 4; do
    if ! run_mpi "$np" "$prog"; then
        echo "test_slot_exchange: FAILED at -np $np"
        exit 1
    fi
done

# On the cuda backend (device buffers, MPI staged through the host); 77 = no GPU here.
run_mpi 2 "$prog" cuda
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    echo "test_slot_exchange: FAILED on the cuda backend at -np 2"
    exit 1
fi

# 66 slots over 4 ranks: both the exchange and the parameter layout must refuse, clearly.
for mode in bad-slots bad-layout; do
    out=$(run_mpi 4 "$prog" "$mode" 66 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "test_slot_exchange: $mode: 66 slots over 4 ranks was accepted"
        exit 1
    fi
    if ! grep -q "n_slots=66 is not divisible" <<<"$out"; then
        echo "test_slot_exchange: $mode: the refusal does not name n_slots=66:"
        echo "$out"
        exit 1
    fi
done
# ... while 66 slots over 2 ranks is fine.
run_mpi 2 "$prog" bad-slots 66 >/dev/null || { echo "test_slot_exchange: 66 slots over 2 ranks refused"; exit 1; }
echo "test_slot_exchange: passed"
