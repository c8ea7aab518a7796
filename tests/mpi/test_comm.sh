#!/usr/bin/env bash
# Every collective of dist/comm.h at 1, 2 and 4 ranks with known-answer data (prog_comm),
# on the cuda backend too where a GPU is present,
# and the clear refusal of --comm nccl in a build without CUDA.
set -u
source "${HSPMN_SRC:?}/tests/mpi/run_mpi.sh"
prog="${HSPMN_BUILD:?}/tests/prog_comm"
[ -x "$prog" ] || { echo "test_comm: $prog is not built"; exit 1; }

for np in 1 2 4; do
    if ! run_mpi "$np" "$prog"; then
        echo "test_comm: FAILED at -np $np"
        exit 1
    fi
done

# The host-staging path that device buffers take under MPI, exercised on host buffers.
for np in 2 4; do
    if ! HSPMN_COMM_STAGE=1 run_mpi "$np" "$prog"; then
        echo "test_comm: FAILED with host staging at -np $np"
        exit 1
    fi
done

# On the cuda backend (device buffers staged through the host); 77 = no GPU here.
run_mpi 2 "$prog" cuda
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    echo "test_comm: FAILED on the cuda backend at -np 2"
    exit 1
fi

# Without CUDA, a NCCL communicator is a fatal error that says why.
# (A CUDA build defines comm_nccl_create in the library.)
# (The symbol list goes to a variable first: `grep -q` on a pipe stops reading at the first
# match, and under pipefail nm's SIGPIPE would read as "not found".)
symbols=$(nm "$HSPMN_BUILD/libhspmn.a" 2>/dev/null || true)
if ! grep -q " T comm_nccl_create" <<<"$symbols"; then
    out=$(run_mpi 2 "$prog" nccl 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "test_comm: a NCCL communicator was created in a build without CUDA"
        exit 1
    fi
    if ! grep -q "needs the CUDA build" <<<"$out"; then
        echo "test_comm: the NCCL refusal does not say why:"
        echo "$out"
        exit 1
    fi
fi
echo "test_comm: passed"
