#!/usr/bin/env bash
# hspmn_plot.py on the metrics.h5 of a real run of hspmn_dist (2 ranks, CPU): once while
# the run is still writing it (SWMR read), once after; the PNG is a real, non-trivial PNG
# with every panel the run logged. Files lacking datasets plot what they have; a file that
# is not a metrics file is refused with a message.
set -euo pipefail

src=${HSPMN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${HSPMN_BUILD:-$src/build}
source "$src/tests/python_env.sh"
python=${HSPMN_PYTHON:-/usr/bin/python3}
plot=$src/launch/tools/hspmn_plot.py

if ! $python -c 'import h5py, numpy, matplotlib' 2>/dev/null; then
    echo "SKIP: $python cannot import h5py, numpy and matplotlib" \
        "(apt-get install python3-h5py python3-matplotlib)"
    exit 77
fi
if [[ ! -x $build/hspmn_dist ]]; then
    echo "FAIL: $build/hspmn_dist is not built"
    exit 1
fi

source "$src/tests/mpi/run_mpi.sh"
work=$(mktemp -d)
train_pid=
cleanup() {
    if [[ -n $train_pid ]] && kill -0 "$train_pid" 2>/dev/null; then
        kill "$train_pid" 2>/dev/null || true
        wait "$train_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

# check_png FILE MIN_BYTES: PNG signature, an IHDR chunk, a plausible size; prints WxH.
check_png() {
    $python - "$1" "$2" <<'EOF'
import struct, sys
path, min_bytes = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"{path}: not a PNG (first bytes {data[:8]!r})")
if data[12:16] != b"IHDR":
    sys.exit(f"{path}: no IHDR chunk")
width, height = struct.unpack(">II", data[16:24])
if len(data) < min_bytes or width < 300 or height < 300:
    sys.exit(f"{path}: {len(data)} bytes, {width}x{height}: too small for a plot")
if not data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"):
    sys.exit(f"{path}: truncated (no IEND chunk)")
print(f"{path}: PNG {width}x{height}, {len(data)} bytes")
EOF
}

echo "== plot while the run is writing metrics.h5 (SWMR)"
# mpirun itself in the background (not the run_mpi function), so $! is mpirun's pid and
# killing it ends the ranks.
"${MPIEXEC:-mpirun}" --oversubscribe -np 2 "$build/hspmn_dist" train --device cpu --preset tiny \
    --steps 2000 --warmup 2 --ckpt_every 0 --eval_every 0 --log_every 10 --run_dir "$work/live" >"$work/live.log" 2>&1 &
train_pid=$!
plotted_live=0
for ((i = 0; i < 60; i++)); do
    sleep 0.5
    kill -0 "$train_pid" 2>/dev/null || break
    [[ -f $work/live/metrics.h5 ]] || continue
    if $python "$plot" "$work/live/metrics.h5" -o "$work/live.png" >"$work/live_plot.txt" 2>&1; then
        plotted_live=1
        break
    fi
done
kill -0 "$train_pid" 2>/dev/null || {
    cat "$work/live.log"
    fail "the 2000-step run ended before it could be plotted live"
}
((plotted_live)) || {
    cat "$work/live_plot.txt"
    fail "could not plot metrics.h5 while the run was writing it"
}
kill "$train_pid"
wait "$train_pid" 2>/dev/null || true
train_pid=
cat "$work/live_plot.txt"
check_png "$work/live.png" 10000 || fail "live plot"

echo "== plot a finished run (default output beside metrics.h5)"
run_mpi 2 "$build/hspmn_dist" train --device cpu --preset tiny --steps 30 --warmup 2 \
    --ckpt_every 0 --eval_every 10 --eval_batches 2 --log_every 5 --run_dir "$work/run" >"$work/train.log" 2>&1 ||
    {
        cat "$work/train.log"
        fail "hspmn_dist training run failed"
    }
$python "$plot" "$work/run" >"$work/plot.txt" || fail "hspmn_plot.py exited with $?"
cat "$work/plot.txt"
check_png "$work/run/metrics.png" 20000 || fail "finished-run plot"
# loss, aux losses, lr, grad norm, throughput, eval accuracy and the 3 per-layer panels.
panels=$(sed -n 's/.*(\([0-9]*\) panels, \([0-9]*\) rows).*/\1 \2/p' "$work/plot.txt")
[[ $panels == "9 30" ]] || fail "expected 9 panels and 30 rows, got '$panels'"

echo "== a metrics file with only step and loss: one panel"
$python - "$work/partial.h5" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f["step"] = np.arange(1, 51, dtype=np.float64)
    f["loss"] = np.linspace(5.0, 3.0, 50)
    f["grad_norm"] = np.full(50, np.nan)  # present but never logged: no panel
EOF
$python "$plot" "$work/partial.h5" -o "$work/partial.png" >"$work/partial.txt" ||
    fail "partial metrics file not plotted"
grep -q "(1 panels, 50 rows)" "$work/partial.txt" || fail "partial: $(cat "$work/partial.txt")"
check_png "$work/partial.png" 5000 || fail "partial plot"

echo "== not a metrics file: exit 2 with a message"
$python -c 'import sys, h5py; h5py.File(sys.argv[1], "w")["x"] = [1.0]' "$work/other.h5"
status=0
$python "$plot" "$work/other.h5" -o "$work/other.png" 2>"$work/err.txt" || status=$?
((status == 2)) && grep -q "no /step dataset" "$work/err.txt" ||
    fail "non-metrics file: exit $status, message '$(cat "$work/err.txt")'"
[[ ! -e $work/other.png ]] || fail "a PNG was written for a non-metrics file"

echo "PASS: test_plot"
