#!/usr/bin/env python3
"""A straightforward PyTorch implementation of HSPMN-SM, to compare hspmn_dist against.

Issue 6 measures our trainer against "a straightforward PyTorch implementation of the same
model (bf16 autocast, torch.compile, fused AdamW, SDPA; it materialises the [tokens, S]
score matrix and gathers values)". This file is that implementation, written from
MODEL.md (docs/MODEL.md, /work/shared/MODEL.md) with no attempt at being clever:

  bench (default)   time training steps on random tokens; print tokens/s, step ms and the
                    peak GPU memory (torch.cuda.max_memory_allocated / _reserved)
  --check CKPT.h5   load the weights of one of our checkpoints and print the eval-mode
                    loss (no Gumbel noise: z = r) of a token batch, to compare with
                    `hspmn_dist eval` on the same sequences

How it follows MODEL.md, per block (x [B, T, H]):
  u = RMSNorm(x; norm_a)                         eps 1e-6
  c = causal depthwise conv of u (Kc taps, the last tap is the current token) + bias
  f = w2 GELU_tanh(w1 c + b1) + b2
  r = router.weight . u + router.bias            one logit per token
  z = r + Gumbel noise (training) | r (eval)     Gumbel from torch's RNG, NOT the C code's
                                                 Philox counters: same distribution
                                                 (u = (24 random bits + 0.5) 2^-24,
                                                 G = -log(-log u)), different numbers
  sel = the n_sel largest z per sequence (ties: lower position first; a stable sort),
        ascending; n_sel = ceil(rho T - 1e-6) clamped to [1, T]
  k = RoPE(wk u, t), v = wv u for every t; q = RoPE(wq u_sel, qpos) for the selected tokens
  o = SDPA(q, k, v) with GQA (kv heads repeated) and the boolean mask key s <= qpos[i]
  h = x + f, plus sigmoid(r_sel) (wo o) added at the selected rows
  p = compressor(RMSNorm(h; norm_m))
  scores = p . keys^T / sqrt(R)                  MATERIALISED, [B, T, S]
  top K of the scores, w = softmax over the K, y = h + sum_K w values[top_i]
then logits = lm_head RMSNorm(y_L; norm_f) and
  loss = CE mean over tokens
       + route_loss * sum_l [ BCEwithLogits(r, 1[t in sel]) mean over tokens
                              + mean over sequences of (mean_t sigmoid(r_t) - rho)^2 ]
       + entropy_loss * sum_l mean over tokens of -sum_K w log w
The route loss's second term is taken per sequence and averaged over sequences, as the C
code does (model/block_mix.c). The selection (top-n_sel, top-K) passes no gradient; here
the gradient of the K chosen scores flows back through torch.topk into the dense
[B, T, S] score matrix (zero elsewhere), so only the K chosen keys get gradient.
The variants attn=dense (every token a query, no router, gate 1), ffn=dense (H -> 4H -> H
GELU MLP) and gate_fixed=1 (gate 1) are supported; route=threshold (generation) is not.

The optimizer is the trainer's: AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the
dense matrices (embed, lm_head, mlp, attention, compressor, dense ffn) and none on norms,
biases, conv, router and the slot tables; the global gradient norm is clipped at 1. The
learning rate is constant (--lr): the schedule does not change the cost of a step.
"""

import argparse
import math
import os
import shlex
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as exc:  # tests/tools/test_torch_reference.sh skips on this
    sys.stderr.write(f"hspmn_torch_reference: needs PyTorch ({exc})\n")
    sys.exit(3)

# MODEL.md configuration entries with the seed defaults, in MODEL.md order.
MODEL_DEFAULTS = [
    ("vocab_size", int, 50257), ("d_model", int, 512), ("n_layers", int, 8),
    ("n_heads", int, 8), ("n_kv_heads", int, 2), ("seq_len", int, 4096),
    ("conv_kernel", int, 4), ("mlp_mult", int, 2), ("capacity", float, 0.2),
    ("n_slots", int, 65536), ("ptr_dim", int, 32), ("top_k", int, 8),
    ("rope_theta", float, 10000.0), ("route_loss", float, 0.01),
    ("entropy_loss", float, 0.001), ("attn", str, "sparse"), ("ffn", str, "memory"),
    ("route", str, "topn"), ("gate_fixed", int, 0),
]
RMS_EPS = 1e-6
INIT_STD = 0.02


def fail(message):
    sys.stderr.write(f"hspmn_torch_reference: {message}\n")
    sys.exit(2)


def n_selected(cfg):
    """MODEL.md: n_sel = ceil(rho T - 1e-6) in double precision, clamped to [1, T]."""
    T = cfg["seq_len"]
    if cfg["attn"] == "dense":
        return T
    return min(max(math.ceil(cfg["capacity"] * T - 1e-6), 1), T)


def validate(cfg):
    H, nh, nkv = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    checks = [
        (H % nh == 0, f"d_model={H} must be a multiple of n_heads={nh}"),
        (nh % nkv == 0, f"n_heads={nh} must be a multiple of n_kv_heads={nkv}"),
        ((H // nh) % 2 == 0, f"head_dim={H // nh} must be even (RoPE pairs)"),
        (cfg["top_k"] <= cfg["n_slots"], f"top_k={cfg['top_k']} exceeds n_slots={cfg['n_slots']}"),
        (0 < cfg["capacity"] <= 1, f"capacity={cfg['capacity']} must lie in (0, 1]"),
        (cfg["attn"] in ("sparse", "dense"), f"attn={cfg['attn']}: sparse|dense"),
        (cfg["ffn"] in ("memory", "dense"), f"ffn={cfg['ffn']}: memory|dense"),
        (cfg["route"] == "topn",
         f"route={cfg['route']}: the reference routes by top-n only (threshold is for generation)"),
    ]
    for ok, message in checks:
        if not ok:
            fail(f"invalid model configuration: {message}")


# ---- the model -------------------------------------------------------------------------


def rmsnorm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * weight


def rope(x, positions, theta):
    """GPT-NeoX RoPE: x [B, n, heads, hd], positions [B, n] or [n]; pair (i, i + hd/2) rotated
    by position * theta^(-2i/hd)."""
    hd = x.shape[-1]
    half = hd // 2
    inv_freq = theta ** (-2.0 * torch.arange(half, device=x.device, dtype=torch.float64) / hd)
    angle = positions.to(torch.float64).unsqueeze(-1) * inv_freq  # [..., n, half]
    cos = angle.cos().to(torch.float32).unsqueeze(-2)  # [..., n, 1, half]
    sin = angle.sin().to(torch.float32).unsqueeze(-2)
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def normal(shape, std):
    return nn.Parameter(torch.randn(*shape) * std)


class Block(nn.Module):
    """One HSPMN-SM block; parameters named after their MODEL.md paths (CKPT_NAMES)."""

    def __init__(self, cfg):
        super().__init__()
        H, L, Kc = cfg["d_model"], cfg["n_layers"], cfg["conv_kernel"]
        mH, R, S = cfg["mlp_mult"] * H, cfg["ptr_dim"], cfg["n_slots"]
        kv = cfg["n_kv_heads"] * (H // cfg["n_heads"])
        std_out = INIT_STD / math.sqrt(2 * L)  # outputs into the residual stream
        self.cfg = cfg
        self.norm_a = nn.Parameter(torch.ones(H))
        conv = torch.zeros(H, Kc)
        conv[:, Kc - 1] = 1.0  # identity at init: the current token's tap
        self.conv_w = nn.Parameter(conv)
        self.conv_b = nn.Parameter(torch.zeros(H))
        self.mlp_w1, self.mlp_b1 = normal((mH, H), INIT_STD), nn.Parameter(torch.zeros(mH))
        self.mlp_w2, self.mlp_b2 = normal((H, mH), std_out), nn.Parameter(torch.zeros(H))
        self.router_w, self.router_b = normal((H,), INIT_STD), nn.Parameter(torch.zeros(()))
        self.wq, self.wk, self.wv = normal((H, H), INIT_STD), normal((kv, H), INIT_STD), normal(
            (kv, H), INIT_STD)
        self.wo = normal((H, H), std_out)
        self.norm_m = nn.Parameter(torch.ones(H))
        if cfg["ffn"] == "memory":
            self.comp_w, self.comp_b = normal((R, H), INIT_STD), nn.Parameter(torch.zeros(R))
            self.keys, self.values = normal((S, R), INIT_STD), normal((S, H), INIT_STD)
        else:
            self.ffn_w1, self.ffn_b1 = normal((4 * H, H), INIT_STD), nn.Parameter(
                torch.zeros(4 * H))
            self.ffn_w2, self.ffn_b2 = normal((H, 4 * H), std_out), nn.Parameter(torch.zeros(H))

    # Attribute -> checkpoint path under /model/layers/{l}/.
    CKPT_NAMES = {
        "norm_a": "norm_a/weight", "conv_w": "conv/weight", "conv_b": "conv/bias",
        "mlp_w1": "mlp/w1", "mlp_b1": "mlp/b1", "mlp_w2": "mlp/w2", "mlp_b2": "mlp/b2",
        "router_w": "router/weight", "router_b": "router/bias",
        "wq": "attn/wq", "wk": "attn/wk", "wv": "attn/wv", "wo": "attn/wo",
        "norm_m": "norm_m/weight", "comp_w": "memory/compressor/weight",
        "comp_b": "memory/compressor/bias", "keys": "memory/keys", "values": "memory/values",
        "ffn_w1": "ffn/w1", "ffn_b1": "ffn/b1", "ffn_w2": "ffn/w2", "ffn_b2": "ffn/b2",
    }
    # Weight decay applies to these (the trainer's GROUP_DECAY), none to the rest.
    DECAYED = {"mlp_w1", "mlp_w2", "wq", "wk", "wv", "wo", "comp_w", "ffn_w1", "ffn_w2"}

    def reflexive(self, u):
        """f = w2 GELU(w1 conv(u) + b1) + b2, conv causal depthwise: u [B, T, H]."""
        Kc = self.cfg["conv_kernel"]
        padded = F.pad(u.transpose(1, 2), (Kc - 1, 0))  # [B, H, Kc - 1 + T], zeros before t=0
        c = F.conv1d(padded, self.conv_w.unsqueeze(1), self.conv_b, groups=u.shape[-1])
        c = c.transpose(1, 2)  # [B, T, H]: c_t = b + sum_j w[:, j] u_{t-Kc+1+j}
        hidden = F.gelu(F.linear(c, self.mlp_w1, self.mlp_b1), approximate="tanh")
        return F.linear(hidden, self.mlp_w2, self.mlp_b2)

    def select(self, r, training):
        """qpos [B, n_sel]: per sequence the n_sel positions of largest z, ascending."""
        B, T = r.shape
        z = r.detach().float()
        if training:
            bits = torch.randint(0, 1 << 24, (B, T), device=r.device)
            uniform = (bits.float() + 0.5) * (2.0 ** -24)
            z = z - torch.log(-torch.log(uniform))
        # A stable descending sort ranks equal z by position, lower first (MODEL.md).
        order = torch.sort(z, dim=1, descending=True, stable=True).indices
        return torch.sort(order[:, :n_selected(self.cfg)], dim=1).values

    def attention(self, u, r, qpos):
        """The gated attention output of the selected tokens a_sel [B, n, H]."""
        cfg = self.cfg
        B, T, H = u.shape
        nh, nkv = cfg["n_heads"], cfg["n_kv_heads"]
        hd, n, theta = H // nh, qpos.shape[1], cfg["rope_theta"]
        positions = torch.arange(T, device=u.device)
        k = rope(F.linear(u, self.wk).view(B, T, nkv, hd), positions, theta)
        v = F.linear(u, self.wv).view(B, T, nkv, hd)
        u_sel = torch.gather(u, 1, qpos.unsqueeze(-1).expand(B, n, H))  # [B, n, H]
        q = rope(F.linear(u_sel, self.wq).view(B, n, nh, hd), qpos, theta)
        # GQA: query head h reads kv head h / (nh / nkv).
        k = k.repeat_interleave(nh // nkv, dim=2)
        v = v.repeat_interleave(nh // nkv, dim=2)
        # Query i sees key s iff s <= qpos[i] (causal in positions, not in query order).
        visible = positions.view(1, 1, 1, T) <= qpos.view(B, 1, n, 1)  # [B, 1, n, T]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=visible)
        ao = F.linear(o.transpose(1, 2).reshape(B, n, H), self.wo)
        if cfg["attn"] == "dense" or cfg["gate_fixed"]:
            return ao
        return torch.sigmoid(torch.gather(r, 1, qpos)).unsqueeze(-1) * ao

    def route_loss(self, r, qpos):
        """BCE(r, 1[t in sel]) mean over tokens + mean over sequences (mean sig(r) - rho)^2."""
        target = torch.zeros_like(r).scatter_(1, qpos, 1.0)
        bce = F.binary_cross_entropy_with_logits(r, target)
        gap = torch.sigmoid(r).mean(dim=1) - self.cfg["capacity"]
        return bce + gap.pow(2).mean()

    def slot_memory(self, h):
        """y = h + sum over the top K slots of softmax(scores) values; the routing entropy."""
        R, K = self.cfg["ptr_dim"], self.cfg["top_k"]
        p = F.linear(rmsnorm(h, self.norm_m), self.comp_w, self.comp_b)  # [B, T, R]
        scores = torch.matmul(p, self.keys.t()) / math.sqrt(R)  # [B, T, S]: materialised
        top_s, top_i = torch.topk(scores, K, dim=-1)  # [B, T, K]
        log_w = F.log_softmax(top_s.float(), dim=-1)
        w = log_w.exp()
        rows = F.embedding(top_i, self.values)  # [B, T, K, H]: gathered value rows
        y = h + torch.einsum("btk,btkh->bth", w.to(rows.dtype), rows)
        entropy = -(w * log_w).sum(-1).mean()
        return y, entropy

    def dense_ffn(self, h):
        hn = rmsnorm(h, self.norm_m)
        hidden = F.gelu(F.linear(hn, self.ffn_w1, self.ffn_b1), approximate="tanh")
        return h + F.linear(hidden, self.ffn_w2, self.ffn_b2)

    def forward(self, x, training):
        """x [B, T, H] -> (y [B, T, H], route loss, entropy loss), losses unweighted."""
        cfg = self.cfg
        u = rmsnorm(x, self.norm_a)
        h = x + self.reflexive(u)
        zero = x.new_zeros((), dtype=torch.float32)
        route = zero
        r = None
        if cfg["attn"] == "sparse":
            r = (F.linear(u, self.router_w.unsqueeze(0)).squeeze(-1) + self.router_b).float()
            qpos = self.select(r, training)
        else:  # attn=dense: every token is a query
            B, T = x.shape[:2]
            qpos = torch.arange(T, device=x.device).expand(B, T)
        a_sel = self.attention(u, r, qpos)
        index = qpos.unsqueeze(-1).expand_as(a_sel)
        h = h.scatter_add(1, index, a_sel.to(h.dtype))
        if cfg["attn"] == "sparse":
            route = self.route_loss(r, qpos)
        if cfg["ffn"] == "memory":
            y, entropy = self.slot_memory(h)
        else:
            y, entropy = self.dense_ffn(h), zero
        return y, route, entropy


class HspmnSM(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        V, H = cfg["vocab_size"], cfg["d_model"]
        self.cfg = cfg
        self.embed = normal((V, H), INIT_STD)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layers"]))
        self.norm_f = nn.Parameter(torch.ones(H))
        self.lm_head = normal((V, H), INIT_STD)

    def forward(self, tokens, targets, training=True):
        """tokens, targets [B, T] -> (total, ce, route, entropy); targets < 0 are ignored."""
        cfg = self.cfg
        x = F.embedding(tokens, self.embed)
        route = entropy = x.new_zeros((), dtype=torch.float32)
        for block in self.layers:
            x, block_route, block_entropy = block(x, training)
            route = route + block_route
            entropy = entropy + block_entropy
        logits = F.linear(rmsnorm(x, self.norm_f), self.lm_head)  # [B, T, V]
        ce = F.cross_entropy(logits.float().view(-1, cfg["vocab_size"]), targets.reshape(-1),
                             ignore_index=-1)
        route = cfg["route_loss"] * route
        entropy = cfg["entropy_loss"] * entropy
        return ce + route + entropy, ce, route, entropy

    def checkpoint_params(self):
        """(MODEL.md checkpoint path, parameter) for every parameter."""
        out = [("/model/embed/weight", self.embed)]
        for l, block in enumerate(self.layers):
            for attr, path in Block.CKPT_NAMES.items():
                if hasattr(block, attr):
                    out.append((f"/model/layers/{l:02d}/{path}", getattr(block, attr)))
        out += [("/model/norm_f/weight", self.norm_f), ("/model/lm_head/weight", self.lm_head)]
        return out

    def param_groups(self, weight_decay):
        decayed, plain = [self.embed, self.lm_head], [self.norm_f]
        for block in self.layers:
            for attr in Block.CKPT_NAMES:
                if hasattr(block, attr):
                    (decayed if attr in Block.DECAYED else plain).append(getattr(block, attr))
        return [{"params": decayed, "weight_decay": weight_decay},
                {"params": plain, "weight_decay": 0.0}]


# ---- bench -----------------------------------------------------------------------------


def make_optimizer(model, args, device):
    fused = args.fused_adamw and device.type == "cuda"
    kwargs = {"lr": args.lr, "betas": (0.9, 0.95), "eps": 1e-8}
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(model.param_groups(args.weight_decay), **kwargs), fused


def autocast_context(args, device):
    enabled = args.dtype == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class Trainer:
    """One training step, compiled or eager; falls back to eager if compilation fails."""

    def __init__(self, model, optimizer, args, device):
        self.model, self.optimizer, self.args, self.device = model, optimizer, args, device
        self.loss_fn = model
        self.compile_note = "off"
        if args.compile:
            self.loss_fn = torch.compile(model)
            self.compile_note = "on"
        self.params = [p for p in model.parameters()]

    def step(self, tokens, targets):
        try:
            return self._step(tokens, targets)
        except Exception as exc:  # noqa: BLE001 - any compile failure: say so, go eager
            if self.loss_fn is self.model:
                raise
            print(f"torch.compile failed, falling back to eager: {type(exc).__name__}: {exc}",
                  flush=True)
            self.loss_fn = self.model
            self.compile_note = f"FAILED ({type(exc).__name__}), ran eager"
            self.optimizer.zero_grad(set_to_none=True)
            return self._step(tokens, targets)

    def _step(self, tokens, targets):
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.args, self.device):
            total, ce, route, entropy = self.loss_fn(tokens, targets, True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.args.grad_clip)
        self.optimizer.step()
        return total.detach()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_peak_rss_mib():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return float("nan")


def bench(args, cfg, device):
    torch.manual_seed(args.seed)
    model = HspmnSM(cfg).to(device)
    optimizer, fused = make_optimizer(model, args, device)
    trainer = Trainer(model, optimizer, args, device)
    B, T, V = args.micro_batch, cfg["seq_len"], cfg["vocab_size"]
    n_params = sum(p.numel() for p in model.parameters())
    n_slots = sum(b.keys.numel() + b.values.numel() for b in model.layers if hasattr(b, "keys"))

    print("hspmn torch reference: bench")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"  device        {device.type} ({name}), torch {torch.__version__}")
    print(f"  dtype         {args.dtype}{' (torch.autocast bf16)' if args.dtype == 'bf16' else ''}"
          f", fused AdamW {'on' if fused else 'off'}")
    print("  config        " + " ".join(f"{k}={cfg[k]}" for k, _, _ in MODEL_DEFAULTS))
    print(f"  batch         micro_batch {B} x seq_len {T} = {B * T} tokens/step, "
          f"n_sel {n_selected(cfg)} queries/sequence")
    print(f"  params        {n_params / 1e6:.3f} M ({(n_params - n_slots) / 1e6:.3f} M dense, "
          f"{n_slots / 1e6:.3f} M slot tables)", flush=True)

    generator = torch.Generator(device="cpu").manual_seed(args.seed + 1)

    def batch():
        seq = torch.randint(0, V, (B, T + 1), generator=generator)
        return seq[:, :T].to(device), seq[:, 1:].to(device)

    losses = []
    for _ in range(args.warmup):
        tokens, targets = batch()
        losses.append(float(trainer.step(tokens, targets)))
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = []
    for _ in range(args.steps):
        tokens, targets = batch()
        sync(device)
        start = time.perf_counter()
        loss = trainer.step(tokens, targets)
        sync(device)
        step_ms.append((time.perf_counter() - start) * 1e3)
        losses.append(float(loss))

    mean_ms = statistics.fmean(step_ms)
    print("result")
    print(f"  compile       {trainer.compile_note}")
    print(f"  steps         {args.steps} timed after {args.warmup} warmup")
    print(f"  step ms       median {statistics.median(step_ms):.3f} mean {mean_ms:.3f}")
    print(f"  tokens/s      {B * T / (mean_ms * 1e-3):.1f}")
    print(f"  loss          first {losses[0]:.6f} last {losses[-1]:.6f}")
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2 ** 20
        reserved = torch.cuda.max_memory_reserved(device) / 2 ** 20
        print(f"  peak MiB      allocated {allocated:.1f} reserved {reserved:.1f} "
              "(timed steps; torch.cuda.max_memory_*)")
    else:
        print(f"  peak MiB      process RSS {cpu_peak_rss_mib():.1f} (cpu: no device memory)")
    print("reproduce: " + " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    if not all(math.isfinite(x) for x in losses):
        fail(f"a training loss was not finite: {losses}")


# ---- check against a checkpoint ---------------------------------------------------------


def attr_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "shape") and value.shape == ():
        return attr_text(value[()])
    return str(value)


def read_checkpoint(path):
    """(config dict, {path: numpy array}) of one of our checkpoints."""
    try:
        import h5py
        import numpy as np
    except ImportError as exc:
        fail(f"--check needs h5py ({exc})")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        fail(f"cannot open checkpoint {path}: {exc}")
    with f:
        if "config" not in f:
            fail(f"checkpoint {path} has no /config group")
        attrs = {k: attr_text(v) for k, v in f["config"].attrs.items()}
        cfg = {}
        for key, kind, _ in MODEL_DEFAULTS:
            if key not in attrs:
                fail(f"checkpoint {path}: /config has no attribute {key}")
            cfg[key] = kind(float(attrs[key])) if kind is int else kind(attrs[key])
        tensors = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith("model/"):
                tensors["/" + name] = np.asarray(obj[()])

        f.visititems(visit)
    return cfg, tensors


def read_tokens(path, T, V):
    """[B, T + 1] int64 token sequences from a .npy file (inputs [:, :T], targets [:, 1:])."""
    import numpy as np
    try:
        seqs = np.load(path)
    except (OSError, ValueError) as exc:
        fail(f"cannot read --check_tokens {path}: {exc}")
    if seqs.ndim != 2 or seqs.shape[1] != T + 1 or not np.issubdtype(seqs.dtype, np.integer):
        fail(f"--check_tokens {path}: expected integer [B, T + 1 = {T + 1}], got "
             f"{seqs.dtype} {list(seqs.shape)}")
    if seqs.size and (seqs.min() < 0 or seqs.max() >= V):
        fail(f"--check_tokens {path}: tokens must lie in [0, vocab_size = {V})")
    return torch.from_numpy(seqs.astype(np.int64))


def check(args, device):
    cfg, tensors = read_checkpoint(args.check)
    validate(cfg)
    model = HspmnSM(cfg)
    loaded = 0
    for path, param in model.checkpoint_params():
        if path not in tensors:
            fail(f"checkpoint {args.check} has no {path}")
        value = torch.from_numpy(tensors[path]).float()
        if tuple(value.shape) != tuple(param.shape):
            fail(f"checkpoint {args.check}: {path} has shape {list(value.shape)}, the model "
                 f"wants {list(param.shape)}")
        with torch.no_grad():
            param.copy_(value)
        loaded += 1
    model.to(device).eval()
    T, V = cfg["seq_len"], cfg["vocab_size"]
    if args.check_tokens:
        seqs = read_tokens(args.check_tokens, T, V)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        seqs = torch.randint(0, V, (args.micro_batch, T + 1), generator=generator)
    seqs = seqs.to(device)
    training = args.check_mode == "train"
    with torch.set_grad_enabled(training):
        total, ce, route, entropy = model(seqs[:, :T], seqs[:, 1:], training=training)
    if training:
        total.backward()
        total, ce, route, entropy = (t.detach() for t in (total, ce, route, entropy))
        grad_sq = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()
                      if p.grad is not None)
        print("hspmn torch reference: check (training mode: Gumbel noise from torch's RNG, "
              "fp32)")
    else:
        print("hspmn torch reference: check (eval mode, z = r, fp32)")
    print(f"  checkpoint    {args.check} ({loaded} tensors)")
    print("  config        " + " ".join(f"{k}={cfg[k]}" for k, _, _ in MODEL_DEFAULTS))
    print(f"  tokens        {seqs.shape[0]} sequences x {T} "
          f"({args.check_tokens or f'random, seed {args.seed}'})")
    print(f"  loss          {float(total):.6f}")
    print(f"  ce            {float(ce):.6f}")
    print(f"  route         {float(route):.6f}")
    print(f"  entropy       {float(entropy):.6f}")
    if training:
        print(f"  grad_norm     {math.sqrt(grad_sq):.6f} (all parameters, before clipping)")


# ---- command line ----------------------------------------------------------------------


def parse_args(argv):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(
        description="HSPMN-SM in plain PyTorch: bench (default) or --check a checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = p.add_argument_group("model (MODEL.md entries, seed defaults)")
    for key, kind, default in MODEL_DEFAULTS:
        model.add_argument(f"--{key}", type=kind, default=default)
    run = p.add_argument_group("run")
    run.add_argument("--micro_batch", type=int, default=4, help="sequences per step")
    run.add_argument("--steps", type=int, default=10, help="timed training steps")
    run.add_argument("--warmup", type=int, default=3,
                     help="untimed steps first (compilation happens here)")
    run.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    run.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"],
                     help="bf16: torch.autocast bf16 (fp32 weights and optimizer state)")
    run.add_argument("--compile", type=int, default=None, choices=[0, 1],
                     help="torch.compile the model (default 1 on cuda, 0 on cpu)")
    run.add_argument("--fused_adamw", type=int, default=1 if cuda else 0, choices=[0, 1],
                     help="AdamW(fused=True); cuda only")
    run.add_argument("--lr", type=float, default=3e-3)
    run.add_argument("--weight_decay", type=float, default=0.1)
    run.add_argument("--grad_clip", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=1234)
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    chk = p.add_argument_group("check (instead of bench)")
    chk.add_argument("--check", metavar="CKPT.h5",
                     help="load one of our checkpoints (config from its /config) and print "
                     "the eval-mode loss of a token batch")
    chk.add_argument("--check_tokens", metavar="FILE.npy",
                     help="integer [B, seq_len + 1] sequences (default: --micro_batch random "
                     "ones)")
    chk.add_argument("--check_mode", default="eval", choices=["eval", "train"],
                     help="train: the training-mode loss (Gumbel noise; identical selections "
                     "to the C code only at capacity 1) and the gradient norm")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = 1 if args.device == "cuda" else 0
    if args.device == "cuda" and not cuda:
        fail("--device cuda: torch sees no CUDA device")
    for name in ("micro_batch", "steps"):
        if getattr(args, name) < 1:
            fail(f"--{name}={getattr(args, name)} must be >= 1")
    if args.warmup < 0:
        fail(f"--warmup={args.warmup} must be >= 0")
    return args


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.check:
        check(args, device)
        return 0
    cfg = {key: getattr(args, key) for key, _, _ in MODEL_DEFAULTS}
    validate(cfg)
    bench(args, cfg, device)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
