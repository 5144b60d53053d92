"""The tensors one transformer layer's forward pass leaves for its backward pass, measured in PyTorch
(chapter "Memory hierarchy"): a GPT layer as Korthikanti et al. count it and a Llama layer, each at a
few shapes, 16-bit (bf16) on the CPU.

Each grid point builds one layer with seeded weights, runs its forward pass on an input that requires
a gradient (as the output of the layer before it does), and records every tensor autograd saves for
the backward pass: ``torch.autograd.graph.saved_tensors_hooks`` sees each one as it is saved, and a walk
of the autograd graph names the operations that saved it. Tensors are deduplicated by the storage they
live in (a view saved twice is counted once, with its whole storage), and each storage is one row:
the operations that saved it, its number format, its shape and its bytes, and whether it is a weight
of the layer (which the activation models do not count). Nothing is timed: the bytes are exact.

The layers (``variant``):

* ``gpt``: pre-LayerNorm GPT layer with biases, multi-head attention written out (scores, causal mask,
  softmax, dropout on the probabilities, product with the values), dropout after the attention and
  the MLP blocks, GeLU MLP of width 4h: the layer of [korthikanti2022reducing]'s s·b·h·(34 + 5·a·s/h).
* ``gpt-sdpa``: the same layer with attention run by ``scaled_dot_product_attention`` without dropout
  on the probabilities (PyTorch's CPU FlashAttention kernel): what their "selective" 34·s·b·h assumes.
* ``llama``: Llama layer written with PyTorch's built-ins: ``rms_norm``, separate q, k, v projections
  with grouped-query attention (``kv_heads`` key-value heads) by ``scaled_dot_product_attention``,
  SwiGLU MLP of width ``ffn`` (``silu(x·W1) * (x·W3)``), no biases, no dropout, no rotary embedding.
* ``llama-fused``: the same layer with a fused RMSNorm and a fused SwiGLU, written here as autograd
  functions that save what the frameworks' kernels save: Apex's fused RMSNorm its input, its weight
  and one fp32 reciprocal root mean square per token [nvidia2024apexrmsnorm], Megatron-LM's fused
  SwiGLU its input, the gate and up projections, recomputing the SiLU [nvidia2024megatronswiglu].
  What these two save agrees with :func:`chipbook.memory.llama_activation_bytes` by construction; the
  rest of the layer (projections, attention, residual path) is measured.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from chipbook import _checks

if TYPE_CHECKING:  # torch is imported when a point runs, not when the book reads the results
    import torch

VARIANTS = ("gpt", "gpt-sdpa", "llama", "llama-fused")
#: dropout probability of the GPT layers (attention probabilities and the two residual branches)
DROPOUT = 0.1
#: (seq, batch, hidden, heads): six shapes, heads of 32 to 64 values, a·s/h of 2, 4, 8 and 16, so that
#: the s·b·h terms and the a·s²·b terms are told apart
SHAPES = [[128, 2, 256, 8], [256, 1, 256, 4], [256, 2, 512, 8], [512, 1, 512, 16], [128, 2, 512, 8],
          [256, 1, 256, 8]]
#: Llama shapes (seq, batch, hidden, heads, kv_heads, ffn) whose SwiGLU width is not 3h and whose heads
#: share their key-value heads differently (multi-head; 8 query heads per KV head, as Llama 3; one KV
#: head), so that the Llama model's terms in h, in the KV heads and in f are told apart
LLAMA_SHAPES = [[256, 2, 512, 8, 8, 1792], [256, 1, 512, 16, 2, 1664], [128, 2, 256, 8, 1, 1024]]


def llama_ffn(hidden: int) -> int:
    """Llama's SwiGLU width for a layer of width ``hidden``: 8h/3 rounded up to a multiple of 256, as
    Llama 2's released code sets it (``multiple_of=256``; the paper does not state the rule)."""
    return 256 * math.ceil(8 * _checks.count("hidden", hidden) / 3 / 256)


def _point(variant: str, seq: int, batch: int, hidden: int, heads: int, kv_heads: int | None = None,
           ffn: int | None = None) -> dict:
    if not variant.startswith("llama"):  # GPT: multi-head attention, a GeLU MLP of width 4h
        kv_heads, ffn = heads, 4 * hidden
    return {"variant": variant, "seq": seq, "batch": batch, "hidden": hidden, "heads": heads,
            "kv_heads": kv_heads or max(1, heads // 4), "ffn": ffn or llama_ffn(hidden)}


CONFIG = {
    "seed": 0,
    "dtype": "bfloat16",
    "dropout": DROPOUT,
    "grid": [*(_point(v, *shape) for v in VARIANTS for shape in SHAPES),
             *(_point(v, *shape) for v in VARIANTS[2:] for shape in LLAMA_SHAPES)],
}

COLUMNS = {"variant": "text", "seq": "int", "batch": "int", "hidden": "int", "heads": "int",
           "kv_heads": "int", "ffn": "int", "saved_by": "text", "dtype": "text", "shape": "text",
           "weight": "text", "bytes": "int"}


# --- the layers ------------------------------------------------------------------------------------


def _fused_ops():
    """The two fused kernels as autograd functions: what they save is what a fused kernel keeps."""
    import torch

    class FusedRMSNorm(torch.autograd.Function):
        """y = x · r · w with r = 1/sqrt(mean(x²) + eps) per token, computed in fp32; saves x and r."""

        @staticmethod
        def forward(ctx, x, weight, eps):
            r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
            ctx.save_for_backward(x, weight, r)
            return (x.float() * r).to(x.dtype) * weight

        @staticmethod
        def backward(ctx, grad):
            x, weight, r = ctx.saved_tensors
            xf, g = x.float(), grad.float()
            n = xf * r
            gw = (g * n).sum(dim=tuple(range(g.dim() - 1))).to(weight.dtype)
            gn = g * weight.float()
            gx = r * (gn - n * (gn * n).mean(-1, keepdim=True))
            return gx.to(x.dtype), gw, None

    class FusedSwiGLU(torch.autograd.Function):
        """silu(gate) · up; saves gate and up, recomputes the SiLU in the backward pass."""

        @staticmethod
        def forward(ctx, gate, up):
            ctx.save_for_backward(gate, up)
            return torch.nn.functional.silu(gate) * up

        @staticmethod
        def backward(ctx, grad):
            gate, up = ctx.saved_tensors
            sig = torch.sigmoid(gate.float())
            silu = gate.float() * sig
            g = grad.float()
            dgate = g * up.float() * sig * (1 + gate.float() * (1 - sig))
            return dgate.to(gate.dtype), (g * silu).to(up.dtype)

    return FusedRMSNorm, FusedSwiGLU


def _weights(point: dict, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    import torch

    h, f = point["hidden"], point["ffn"]
    kv = h // point["heads"] * point["kv_heads"]
    gen = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> torch.Tensor:
        scale = 1 / math.sqrt(shape[-1])
        return (torch.randn(*shape, generator=gen) * scale).to(dtype).requires_grad_()

    def ones(n: int) -> torch.Tensor:
        return torch.ones(n, dtype=dtype, requires_grad=True)

    if point["variant"].startswith("gpt"):
        return {"ln1_w": ones(h), "ln1_b": ones(h), "qkv_w": w(3 * h, h), "qkv_b": ones(3 * h),
                "proj_w": w(h, h), "proj_b": ones(h), "ln2_w": ones(h), "ln2_b": ones(h),
                "fc1_w": w(f, h), "fc1_b": ones(f), "fc2_w": w(h, f), "fc2_b": ones(h)}
    return {"norm1": ones(h), "wq": w(h, h), "wk": w(kv, h), "wv": w(kv, h), "wo": w(h, h),
            "norm2": ones(h), "w1": w(f, h), "w3": w(f, h), "w2": w(h, f)}


def _gpt_layer(x: torch.Tensor, p: dict, heads: int, dropout: float, sdpa: bool) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    b, s, h = x.shape
    d = h // heads
    y = F.layer_norm(x, (h,), p["ln1_w"], p["ln1_b"])
    q, k, v = F.linear(y, p["qkv_w"], p["qkv_b"]).view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
    if sdpa:
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        probs = F.softmax(scores.masked_fill(~causal, -math.inf), dim=-1)
        attn = F.dropout(probs, dropout, training=True) @ v
    attn = attn.transpose(1, 2).reshape(b, s, h)
    x = x + F.dropout(F.linear(attn, p["proj_w"], p["proj_b"]), dropout, training=True)
    y = F.layer_norm(x, (h,), p["ln2_w"], p["ln2_b"])
    y = F.linear(F.gelu(F.linear(y, p["fc1_w"], p["fc1_b"])), p["fc2_w"], p["fc2_b"])
    return x + F.dropout(y, dropout, training=True)


def _llama_layer(x: torch.Tensor, p: dict, heads: int, kv_heads: int, fused: bool) -> torch.Tensor:
    import torch.nn.functional as F

    b, s, h = x.shape
    d = h // heads
    eps = 1e-5
    if fused:
        rms, swiglu = _fused_ops()

        def norm(t, w):
            return rms.apply(t, w, eps)

        def mlp(t):
            return swiglu.apply(F.linear(t, p["w1"]), F.linear(t, p["w3"]))
    else:
        def norm(t, w):
            return F.rms_norm(t, (h,), w, eps)

        def mlp(t):
            return F.silu(F.linear(t, p["w1"])) * F.linear(t, p["w3"])

    y = norm(x, p["norm1"])
    q = F.linear(y, p["wq"]).view(b, s, heads, d).transpose(1, 2)
    k = F.linear(y, p["wk"]).view(b, s, kv_heads, d).transpose(1, 2)
    v = F.linear(y, p["wv"]).view(b, s, kv_heads, d).transpose(1, 2)
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != heads)
    x = x + F.linear(attn.transpose(1, 2).reshape(b, s, h), p["wo"])
    return x + F.linear(mlp(norm(x, p["norm2"])), p["w2"])


# --- counting what autograd saves ------------------------------------------------------------------


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def _savers(output: torch.Tensor) -> dict[int, set[str]]:
    """For each storage that a node of ``output``'s autograd graph saved, the names of those nodes
    (without their trailing ``Backward0``)."""
    import torch

    out: dict[int, set[str]] = {}
    todo, seen = [output.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__.removesuffix("Backward").removesuffix("Backward0")
        tensors = list(getattr(node, "saved_tensors", ()) or ())  # a Python autograd function's
        for attribute in dir(node):
            if attribute.startswith("_saved_"):
                value = getattr(node, attribute)
                if isinstance(value, torch.Tensor):
                    tensors.append(value)
        for t in tensors:
            out.setdefault(_storage(t)[0], set()).add(name)
        todo.extend(f for f, _ in node.next_functions)
    return out


def saved_storages(layer, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> list[dict]:
    """Run ``layer(x)`` and return one dict per storage autograd saved for the backward pass: the
    operations that saved it (``saved_by``, "+"-joined, sorted), its ``dtype``, the ``shape`` of the
    first tensor saved from it, ``weight`` ("yes" for a storage of one of ``weights``) and its
    ``bytes``, sorted by the order in which they were first saved."""
    import torch

    packed: dict[int, dict] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage(t)
        packed.setdefault(ptr, {"dtype": str(t.dtype).removeprefix("torch."),
                                "shape": "×".join(str(n) for n in t.shape) or "scalar", "bytes": nbytes})
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    savers = _savers(out)
    weight_ptrs = {_storage(w)[0] for w in weights.values()}
    return [{"saved_by": "+".join(sorted(savers.get(ptr, {"unattributed"}))), **info,
             "weight": "yes" if ptr in weight_ptrs else "no"} for ptr, info in packed.items()]


def run_one(point: dict, shared: dict) -> list[dict]:
    """The storages one layer's forward pass saves, at grid point ``point``."""
    import torch

    variant = _checks.choice("variant", point["variant"], VARIANTS)
    dtype = getattr(torch, shared["dtype"])
    torch.manual_seed(shared["seed"])  # the dropout masks (their values; their bytes do not depend on them)
    weights = _weights(point, shared["seed"], dtype)
    gen = torch.Generator().manual_seed(shared["seed"] + 1)
    x = torch.randn(point["batch"], point["seq"], point["hidden"], generator=gen).to(dtype).requires_grad_()
    if variant.startswith("gpt"):
        def layer(t):
            return _gpt_layer(t, weights, point["heads"], shared["dropout"], sdpa=variant == "gpt-sdpa")
    else:
        def layer(t):
            return _llama_layer(t, weights, point["heads"], point["kv_heads"], fused=variant == "llama-fused")
    keys = ("variant", "seq", "batch", "hidden", "heads", "kv_heads", "ffn")
    return [{**{k: point[k] for k in keys}, **row} for row in saved_storages(layer, x, weights)]


# --- what the activation models leave out ------------------------------------------------------------

#: the terms a measured layer keeps beyond its activation model: dropout masks at 2 bytes a value (PyTorch's
#: CPU dropout multiplies by a mask of the input's type; the model counts 1), the s×s causal mask, the
#: normalisations' per-token statistics, FlashAttention's fp32 softmax statistic (which the selective
#: 34·s·b·h predates), the built-in RMSNorm's two fp32 copies of its input in place of the bf16 input,
#: and the SiLU's output, which an unfused SwiGLU keeps beside the gate
UNMODELLED = ("dropout masks", "causal mask", "norm statistics", "softmax statistics", "fp32 RMSNorm",
              "SiLU output")


def unmodelled(rows) -> dict[str, int]:
    """The bytes that one grid point's measured activations (``rows``: its rows of the result table,
    weights included) hold beyond the activation model of its layer, term by term (the keys of
    :data:`UNMODELLED`), found in the rows by the operations that saved them: the model is
    :func:`chipbook.memory.activation_bytes` for ``gpt`` (nothing recomputed) and for ``gpt-sdpa``
    (its "selective" count, attention's s×s tensors not kept), and
    :func:`chipbook.memory.llama_activation_bytes` for ``llama`` and ``llama-fused``."""
    (variant,) = set(rows["variant"])
    (tokens,) = set(rows["seq"] * rows["batch"])
    (hidden,) = set(rows["hidden"])
    act = rows[rows["weight"] == "no"]
    fp32 = act["dtype"] == "float32"

    def total(mask) -> int:
        return int(act.loc[mask, "bytes"].sum())

    out = dict.fromkeys(UNMODELLED, 0)
    if variant.startswith("gpt"):
        out["dropout masks"] = total(act["saved_by"] == "Mul") // 2
        out["causal mask"] = total(act["saved_by"] == "MaskedFill")
        stats = act["shape"].str.endswith("×1")
        out["norm statistics"] = total((act["saved_by"] == "NativeLayerNorm") & stats)
        out["softmax statistics"] = total(fp32 & act["saved_by"].str.contains("ScaledDotProduct"))
    elif variant == "llama":
        norms = act["saved_by"] == "Mul+Pow"
        out["norm statistics"] = total(act["saved_by"] == "Mul+Rsqrt")
        bf16_inputs = int(norms.sum()) * tokens * hidden * 2  # what the model counts: each norm's input
        out["fp32 RMSNorm"] = total((norms | (act["saved_by"] == "Mul")) & fp32) - bf16_inputs
        # the SiLU's output is kept by the product's Mul, beside the up projection, and cannot be told
        # from it by the operation that saved it; the SiLU's own input (the gate) has its size
        out["SiLU output"] = total(act["saved_by"] == "Silu")
    else:
        out["norm statistics"] = total((act["saved_by"] == "FusedRMSNorm") & fp32)
    return out
