"""h5py readers of our HDF5 files, as a user's analysis script would read them.

    h5py_check.py ckpt PATH        checkpoint schema: MODEL.md paths, global shapes, config
    h5py_check.py swmr PATH PID    follow metrics.h5 while process PID still appends to it
"""
import math
import os
import sys
import time

import h5py
import numpy as np


def tiny_shapes():
    """MODEL.md paths and global shapes of model_config_tiny (V50 H32 L2 nh4 nkv2 S64 R8)."""
    V, H, L, nkv, hd, Kc, m, S, R = 50, 32, 2, 2, 8, 4, 2, 64, 8
    shapes = {"/model/embed/weight": (V, H), "/model/norm_f/weight": (H,),
              "/model/lm_head/weight": (V, H)}
    for l in range(L):
        p = f"/model/layers/{l:02d}/"
        shapes.update({
            p + "norm_a/weight": (H,), p + "conv/weight": (H, Kc), p + "conv/bias": (H,),
            p + "mlp/w1": (m * H, H), p + "mlp/b1": (m * H,),
            p + "mlp/w2": (H, m * H), p + "mlp/b2": (H,),
            p + "router/weight": (H,), p + "router/bias": (),
            p + "attn/wq": (H, H), p + "attn/wk": (nkv * hd, H), p + "attn/wv": (nkv * hd, H),
            p + "attn/wo": (H, H), p + "norm_m/weight": (H,),
            p + "memory/compressor/weight": (R, H), p + "memory/compressor/bias": (R,),
            p + "memory/keys": (S, R), p + "memory/values": (S, H),
        })
    return shapes


def check_ckpt(path):
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 1, dict(f.attrs)
        shapes = tiny_shapes()
        for name, shape in shapes.items():
            for prefix in ("", "/optim/m", "/optim/v"):
                d = f[prefix + name]
                assert d.shape == shape, (prefix + name, d.shape, shape)
                assert d.dtype == np.float32, (prefix + name, d.dtype)
                assert np.all(np.isfinite(d[()])), prefix + name
            # prog_ckpt stores v = x^2 >= 0, params of either sign
            assert np.all(f["/optim/v" + name][()] >= 0), name
        n_model = sum(1 for _ in walk(f["/model"]))
        assert n_model == len(shapes), (n_model, len(shapes))
        # the slot tables are whole, not one rank's shard: no row is all zero
        keys = f["/model/layers/01/memory/keys"][()]
        assert np.all(np.abs(keys).sum(axis=1) > 0), "a keys row was not written"
        cfg = f["/config"].attrs
        assert attr_str(cfg["d_model"]) == "32", cfg["d_model"]
        assert attr_str(cfg["n_slots"]) == "64", cfg["n_slots"]
        assert attr_str(cfg["lr"]) == "0.001", cfg["lr"]
        assert "lr" in cfg and "batch_size" in cfg
        assert f["/state/step"][()] == 30 and f["/optim/step"][()] == 30
        assert f["/state/data_cursor"][()] == 30 * 16
        assert f["/state/seed"][()] == 42
    print(f"h5py ckpt: {len(shapes)} tensors x 3 at MODEL.md paths with global shapes")


def attr_str(value):
    """Fixed-length string attributes come back as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def walk(group):
    for item in group.values():
        if isinstance(item, h5py.Dataset):
            yield item
        else:
            yield from walk(item)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a finished child not yet reaped by the shell is a zombie: not alive for us
    try:
        with open(f"/proc/{pid}/stat") as s:
            return s.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def check_swmr(path, pid):
    deadline = time.time() + 30
    f = None
    while f is None:
        try:
            f = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    step, loss, routed = f["step"], f["loss"], f["routed_fraction"]
    seen_while_writing = []
    while alive(pid) and time.time() < deadline:
        for d in (step, loss, routed):
            d.refresh()
        n = min(step.shape[0], loss.shape[0], routed.shape[0])
        if n > 0:
            s = step[:n]
            assert np.array_equal(s, np.arange(1, n + 1)), s
            assert np.allclose(loss[:n], 1.0 / s), "loss != 1/step"
            assert np.allclose(routed[:n, 2], s + 0.2), "per-layer values wrong"
            seen_while_writing.append(n)
        time.sleep(0.05)
    distinct = sorted(set(seen_while_writing))
    assert len(distinct) >= 3, f"saw too few growing snapshots while the writer ran: {distinct}"
    f.close()
    with h5py.File(path, "r") as f:
        n = f["step"].shape[0]
        acc = f["eval_acc_mqar"][()]
        assert f["routed_fraction"].shape == (n, 3), f["routed_fraction"].shape
        # eval_acc_mqar was logged every 5th step: NaN in the other rows
        assert all(math.isnan(a) == ((i + 1) % 5 != 0) for i, a in enumerate(acc)), acc
    print(f"h5py swmr: followed the writer through {len(distinct)} sizes up to {distinct[-1]} rows; "
          f"final {n} rows")


if __name__ == "__main__":
    if sys.argv[1] == "ckpt":
        check_ckpt(sys.argv[2])
    elif sys.argv[1] == "swmr":
        check_swmr(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
