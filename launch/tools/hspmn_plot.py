#!/usr/bin/python3
"""Render an hspmn_dist metrics.h5 to a PNG of training curves.

  hspmn_plot.py RUN_DIR/metrics.h5 [-o curves.png]   (default: metrics.png beside it)
  hspmn_plot.py RUN_DIR                              (a run dir works too)

metrics.h5 (io/metrics.h) holds one row per logged step, aligned across datasets: float64
[n] scalars (step, loss, ce, route_loss, entropy, lr, grad_norm, tok_per_s, eval_*) and
float32 [n, L] per-layer series (routed_fraction, slot_hit_fraction, slot_usage_entropy).
A value not logged for a row is NaN. The file is opened in SWMR read mode, so a run that is
still writing it can be plotted; rows are cut to the shortest dataset in case a writer was
midway through appending. Panels whose datasets are missing or all NaN are left out.
"""

import argparse
import math
import os
import sys

try:
    import h5py
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
except ImportError as exc:  # the tests skip on this message
    sys.stderr.write(f"hspmn_plot: needs h5py, numpy and matplotlib ({exc}); on Debian: "
                     "apt-get install python3-h5py python3-numpy python3-matplotlib\n")
    sys.exit(3)

# (title, [(dataset, label)], y scale) for scalar panels, in display order.
SCALAR_PANELS = [
    ("loss", [("loss", "train loss"), ("ce", "train CE"), ("eval_loss", "eval loss")], "linear"),
    ("auxiliary losses", [("route_loss", "route loss"), ("entropy", "slot entropy loss")],
     "linear"),
    ("learning rate", [("lr", "lr")], "linear"),
    ("grad norm (before clipping)", [("grad_norm", "grad norm")], "log"),
    ("throughput (tokens/s)", [("tok_per_s", "tok/s")], "linear"),
]
# (title, dataset) for per-layer panels: one line per layer.
LAYER_PANELS = [
    ("routed fraction per layer", "routed_fraction"),
    ("slots hit per window (fraction) per layer", "slot_hit_fraction"),
    ("slot usage entropy (nats) per layer", "slot_usage_entropy"),
]
# Names handled above or not worth a curve of their own.
NOT_EVAL_SERIES = {"step", "skipped"}


def fail(message):
    sys.stderr.write(f"hspmn_plot: {message}\n")
    sys.exit(2)


def open_metrics(path):
    """SWMR read when the writer enabled it; a plain read for a file written without it."""
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except (OSError, IOError):
        try:
            return h5py.File(path, "r")
        except (OSError, IOError) as exc:
            fail(f"cannot open metrics file {path}: {exc}")


def read_series(f):
    """{name: array} of every top-level dataset, cut to a common row count."""
    series = {}
    for name, obj in f.items():
        if isinstance(obj, h5py.Dataset) and obj.ndim in (1, 2):
            if f.swmr_mode:
                obj.refresh()  # the latest rows a running writer has flushed
            series[name] = obj[()]
    if "step" not in series:
        fail(f"{f.filename}: no /step dataset: not an hspmn_dist metrics file")
    rows = min(len(values) for values in series.values())
    return {name: values[:rows] for name, values in series.items()}, rows


def has_data(values):
    return values is not None and values.size > 0 and np.any(np.isfinite(values))


def eval_accuracy_panel(series):
    """eval_acc_* series (sparse: one value per eval) as one panel, if any exist."""
    names = sorted(n for n in series if n.startswith("eval_acc") and has_data(series[n]))
    if not names:
        return None
    return ("eval accuracy", [(n, n[len("eval_acc_"):] or n) for n in names], "linear")


def plot_scalar_panel(ax, steps, series, lines, scale):
    drawn = 0
    for name, label in lines:
        values = series.get(name)
        if values is None or values.ndim != 1 or not has_data(values):
            continue
        finite = np.isfinite(values)
        # Sparse series (evals) as markers joined by a line; dense ones as plain lines.
        marker = "o" if finite.sum() < 0.5 * len(values) else None
        ax.plot(steps[finite], values[finite], marker=marker, markersize=3, label=label)
        drawn += 1
    if scale == "log" and drawn:
        # Log scale only when it helps: positive values spanning more than 20x (a spike).
        finite = np.concatenate([series[n][np.isfinite(series[n])] for n, _ in lines
                                 if n in series and series[n].ndim == 1])
        if finite.size and finite.min() > 0 and finite.max() > 20 * finite.min():
            ax.set_yscale("log")
    if drawn > 1:
        ax.legend(fontsize=7)
    return drawn


def plot_layer_panel(ax, steps, values):
    layers = values.shape[1]
    # Distinct colors for up to 10 layers; a gradient (first to last) beyond that.
    if layers <= 10:
        colors = plt.cm.tab10(np.arange(layers))
    else:
        colors = plt.cm.viridis(np.linspace(0.0, 0.9, layers))
    for layer in range(layers):
        column = values[:, layer]
        finite = np.isfinite(column)
        # Logged every log_every steps only: markers show where the values are.
        marker = "o" if finite.sum() < 0.5 * len(column) else None
        ax.plot(steps[finite], column[finite], color=colors[layer], marker=marker,
                markersize=3, label=f"layer {layer}")
    ax.legend(fontsize=7, ncol=2 if layers > 4 else 1)


def collect_panels(series):
    panels = []
    for title, lines, scale in SCALAR_PANELS:
        if any(n in series and series[n].ndim == 1 and has_data(series[n]) for n, _ in lines):
            panels.append(("scalar", title, lines, scale))
    acc = eval_accuracy_panel(series)
    if acc:
        panels.append(("scalar",) + acc)
    for title, name in LAYER_PANELS:
        if name in series and series[name].ndim == 2 and has_data(series[name]):
            panels.append(("layers", title, name, None))
    return panels


def render(metrics_path, out_path, title):
    with open_metrics(metrics_path) as f:
        series, rows = read_series(f)
    if rows == 0:
        fail(f"{metrics_path}: no rows logged yet")
    steps = series["step"]
    panels = collect_panels(series)
    if not panels:
        fail(f"{metrics_path}: none of the known metrics has a finite value")
    cols = 2 if len(panels) > 1 else 1
    grid_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(6.0 * cols, 3.2 * grid_rows),
                             squeeze=False)
    for ax, (kind, panel_title, what, scale) in zip(axes.flat, panels):
        if kind == "scalar":
            plot_scalar_panel(ax, steps, series, what, scale)
        else:
            plot_layer_panel(ax, steps, series[what])
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title}: {rows} rows, steps {int(steps[0])}..{int(steps[-1])}",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return len(panels), rows


def main():
    parser = argparse.ArgumentParser(description="Plot an hspmn_dist metrics.h5 to a PNG.")
    parser.add_argument("metrics", help="metrics.h5, or the run dir holding it")
    parser.add_argument("-o", "--output", help="PNG to write (default: metrics.png beside it)")
    parser.add_argument("--title", help="figure title (default: the run dir's name)")
    args = parser.parse_args()
    path = args.metrics
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.h5")
    if not os.path.isfile(path):
        fail(f"{path}: no such file")
    run_dir = os.path.dirname(os.path.abspath(path))
    out_path = args.output or os.path.join(run_dir, "metrics.png")
    title = args.title or os.path.basename(run_dir)
    panels, rows = render(path, out_path, title)
    print(f"hspmn_plot: wrote {out_path} ({panels} panels, {rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
