#!/usr/bin/python3
"""Inspect or compare hspmn_dist checkpoints (ckpt_<step>.h5).

  hspmn_inspect.py CKPT                 format, step, config and a table of tensors
  hspmn_inspect.py CKPT --optim         ... including the AdamW moments under /optim
  hspmn_inspect.py --diff A B [--tol T] per-tensor differences; exit 1 beyond T

The checkpoint schema is the one io/checkpoint.h writes: every parameter at its MODEL.md
path under /model with its global shape, the AdamW moments under /optim/m and /optim/v at
the same paths, run state scalars under /state, the configuration as string attributes
of /config, and the root attribute format_version.

Slot usage. Only the K slots a token reads receive gradient (MODEL.md), and slot rows are
not decayed, so a slot row that was never read keeps its init values and a zero AdamW
second moment. The table reports, for every memory/keys and memory/values tensor, how
many rows have a non-zero second moment in /optim/v (slots that received gradient at least
once) and the median row RMS next to the init std 0.02.
"""

import argparse
import sys

try:
    import h5py
    import numpy as np
except ImportError as exc:  # the tests skip on this message
    sys.stderr.write(f"hspmn_inspect: needs h5py and numpy ({exc}); "
                     "on Debian: apt-get install python3-h5py python3-numpy\n")
    sys.exit(3)

# Model entries of /config in MODEL.md order; the other attributes are training settings.
MODEL_ENTRIES = [
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "seq_len", "conv_kernel",
    "mlp_mult", "capacity", "n_slots", "ptr_dim", "top_k", "rope_theta", "route_loss",
    "entropy_loss", "attn", "ffn", "route", "gate_fixed",
]
SLOT_INIT_STD = 0.02  # MODEL.md: memory keys and values start as N(0, 0.02)


def fail(message):
    sys.stderr.write(f"hspmn_inspect: {message}\n")
    sys.exit(2)


def open_checkpoint(path):
    try:
        return h5py.File(path, "r")
    except (OSError, IOError) as exc:
        fail(f"cannot open checkpoint {path}: {exc}")


def attr_text(value):
    """An HDF5 string attribute as str (h5py returns bytes for fixed-length strings)."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_text(value[()])
    return str(value)


def datasets(f):
    """Every dataset of the file: {path: h5py.Dataset}, paths with a leading '/'."""
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = obj

    f.visititems(visit)
    return found


def scalar(f, path):
    return f[path][()] if path in f else None


def shape_text(shape):
    return "[" + ", ".join(str(n) for n in shape) + "]" if shape else "[]"


def l2_norm(values):
    return float(np.sqrt(np.sum(np.square(values, dtype=np.float64))))


def is_slot_table(path):
    return path.endswith("/memory/keys") or path.endswith("/memory/values")


def slot_usage(f, path, values):
    """Summary of one slot table [S, width]: rows that received gradient, row RMS."""
    rows = values.shape[0]
    row_rms = np.sqrt(np.mean(np.square(values, dtype=np.float64), axis=1))
    parts = []
    moment_path = "/optim/v" + path
    if moment_path in f and f[moment_path].shape == values.shape:
        moment = f[moment_path][()]
        touched = int(np.count_nonzero(np.any(moment != 0, axis=1)))
        parts.append(f"slots with gradient {touched}/{rows} ({100.0 * touched / rows:.1f}%)")
    else:
        parts.append("slots with gradient: no /optim/v")
    parts.append(f"row rms median {np.median(row_rms):.4f} (init {SLOT_INIT_STD})")
    return ", ".join(parts)


def print_header(f, path):
    print(f"checkpoint      {path}")
    print(f"format_version  {attr_text(f.attrs.get('format_version', 'missing'))}")
    for label, dpath in [("step", "/state/step"), ("optim step", "/optim/step"),
                         ("data cursor", "/state/data_cursor"), ("seed", "/state/seed")]:
        value = scalar(f, dpath)
        print(f"{label:<15} {'missing' if value is None else int(value)}")


def print_config(f):
    if "config" not in f:
        print("\nconfig: missing (/config group not found)")
        return
    attrs = {key: attr_text(value) for key, value in f["config"].attrs.items()}
    print("\nmodel config (/config)")
    for key in MODEL_ENTRIES:
        if key in attrs:
            print(f"  {key:<20} {attrs[key]}")
    settings = sorted(key for key in attrs if key not in MODEL_ENTRIES)
    if settings:
        print("training settings (/config)")
        for key in settings:
            print(f"  {key:<20} {attrs[key]}")


def print_tensors(f, with_optim, name_filter):
    table = datasets(f)
    paths = [p for p in sorted(table) if p.startswith("/model/")
             or (with_optim and p.startswith("/optim/") and table[p].shape != ())]
    if name_filter:
        paths = [p for p in paths if name_filter in p]
    width = max([len(p) for p in paths] + [6])
    print(f"\n{'tensor':<{width}}  {'shape':<12} {'dtype':<8} {'l2 norm':>11}  notes")
    total = 0
    for path in paths:
        values = table[path][()]
        total += values.size
        note = slot_usage(f, path, values) if (
            path.startswith("/model/") and is_slot_table(path) and values.ndim == 2) else ""
        print(f"{path:<{width}}  {shape_text(values.shape):<12} {str(values.dtype):<8} "
              f"{l2_norm(values):11.4e}  {note}".rstrip())
    print(f"{len(paths)} tensors, {total} elements")


def inspect(args):
    with open_checkpoint(args.ckpt) as f:
        print_header(f, args.ckpt)
        print_config(f)
        print_tensors(f, args.optim, args.filter)
    return 0


def compare_config(fa, fb):
    """Print /config attributes that differ (informational; tensors decide the result)."""
    ca = {k: attr_text(v) for k, v in fa["config"].attrs.items()} if "config" in fa else {}
    cb = {k: attr_text(v) for k, v in fb["config"].attrs.items()} if "config" in fb else {}
    for key in sorted(set(ca) | set(cb)):
        if ca.get(key) != cb.get(key):
            print(f"config {key}: {ca.get(key, '(missing)')} vs {cb.get(key, '(missing)')}")


def diff(args):
    path_a, path_b = args.diff
    with open_checkpoint(path_a) as fa, open_checkpoint(path_b) as fb:
        compare_config(fa, fb)
        ta, tb = datasets(fa), datasets(fb)
        paths = sorted(set(ta) | set(tb))
        if args.model_only:
            paths = [p for p in paths if p.startswith("/model/")]
        width = max([len(p) for p in paths] + [6])
        print(f"{'tensor':<{width}}  {'max abs diff':>12}  {'rel norm diff':>13}")
        differing = 0
        worst = 0.0
        for path in paths:
            if path not in ta or path not in tb:
                print(f"{path:<{width}}  only in {path_a if path in ta else path_b}")
                differing += 1
                continue
            a = ta[path][()].astype(np.float64)
            b = tb[path][()].astype(np.float64)
            if a.shape != b.shape:
                print(f"{path:<{width}}  shape {shape_text(a.shape)} vs {shape_text(b.shape)}")
                differing += 1
                continue
            delta = np.abs(a - b)
            max_abs = float(np.max(delta)) if delta.size else 0.0
            if not np.all(np.isfinite(delta)):
                max_abs = float("inf")
            reference = max(l2_norm(a), l2_norm(b))
            rel = l2_norm(a - b) / reference if reference > 0 else (0.0 if max_abs == 0 else
                                                                    float("inf"))
            flag = ""
            if max_abs > args.tol:
                differing += 1
                flag = "  DIFFERS"
            worst = max(worst, max_abs)
            print(f"{path:<{width}}  {max_abs:12.4e}  {rel:13.4e}{flag}")
    print(f"{len(paths)} tensors compared, {differing} differ beyond tol {args.tol:g} "
          f"(largest max abs diff {worst:.4e})")
    return 1 if differing else 0


def main():
    parser = argparse.ArgumentParser(
        description="Print or compare hspmn_dist checkpoints (see io/checkpoint.h).")
    parser.add_argument("ckpt", nargs="?", help="checkpoint to print")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"),
                        help="compare two checkpoints tensor by tensor")
    parser.add_argument("--tol", type=float, default=0.0,
                        help="--diff: largest max abs difference that counts as equal "
                             "(default 0: bitwise equal values)")
    parser.add_argument("--model-only", action="store_true",
                        help="--diff: compare /model only (not /optim and /state)")
    parser.add_argument("--optim", action="store_true",
                        help="also list the AdamW moments under /optim")
    parser.add_argument("--filter", default="", help="only tensors whose path contains this")
    args = parser.parse_args()
    if args.diff:
        if args.ckpt:
            parser.error("give either CKPT or --diff A B, not both")
        if not args.tol >= 0:
            parser.error(f"--tol {args.tol}: must be a non-negative number")
        return diff(args)
    if not args.ckpt:
        parser.error("a checkpoint path is required (or --diff A B)")
    return inspect(args)


if __name__ == "__main__":
    sys.exit(main())
