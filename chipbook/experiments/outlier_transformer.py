"""A small transformer language model with outlier channels, trained with its matrix products' inputs
cast to FP8 (or int8) under one scale per tensor against MX block scaling, beside fp32 and bf16.

The data are a seeded order-2 Markov chain over a small vocabulary (:func:`markov_table`,
:func:`sample`), so that the best possible held-out loss is known: the true chain's own cross-entropy
(:func:`floor_loss`). The model is a pre-LayerNorm decoder (two layers, causal softmax attention,
learned positions; :class:`Transformer`), trained with AdamW from fp32 master weights.

Outlier channels. Trained transformers grow a few hidden dimensions whose activations, at the inputs
of the matrix products that follow a LayerNorm, are orders of magnitude larger than the rest
[dettmers2022llmint8, xiao2023smoothquant, sun2024massive]; they trace to large LayerNorm gains
[kovaleva2021bert, wei2022outlier]. A network this small trained this briefly does not grow them (the
run measures it: metric ``outlier_ratio``), so they are induced with the smoothing transform of
SmoothQuant run backwards [xiao2023smoothquant]: after each LayerNorm that feeds a matrix product, a
fixed gain multiplies a few channels by M (a power of two), and the product's weight rows of those
channels are divided by M. In exact arithmetic (and in fp32, since M is a power of two) the network
and its training are the same for every M; only the low-precision casts see a difference: the
product's input has channels M times larger than the rest, its weight rows M times smaller.

Casts (:func:`cast`, checked bit for bit against :func:`chipbook.numerics.quantize_scaled`): the
forward product's two inputs in fp8 E4M3 (or int8), and the output gradient of every product in fp8
E5M2 with one scale per tensor (for the int8 recipe too), as Transformer Engine's HYBRID recipe casts
gradients [micikevicius2022fp8]; each product accumulates in fp32. ``"tensor"`` scaling puts each
tensor's current largest magnitude on the format's largest value (current scaling); ``"delayed"``
takes the largest magnitude from a history of the earlier training steps' (:class:`AmaxHistory`,
Transformer Engine's delayed-scaling recipe [nvidia2024te], here for the forward casts only), so that
values larger than any in the history are clamped; ``"mx"`` gives each block of 32 consecutive
elements along the *forward* product's reduction axis a power-of-two scale, the OCP MX rule
[ocp2023mx]. The backward products reuse the forward's cast inputs, so "MXFP8" is MX in the forward
pass only, with per-tensor E5M2 gradients: MX hardware casts each product's operands along that
product's own reduction axis, backward included, which with channel outliers favours MX further; this
emulation is a conservative bound for MX. Attention's two products (scores and their weighted sum), the
softmax, the LayerNorms, the embeddings and the output head stay in fp32, as DeepSeek-V3 keeps its
embedding, head and attention out of FP8 [deepseekai2024deepseekv3]. Losses are measured through the
recipe's casts.

Growing outliers. Published FP8 failures come from outliers that grow during training
[fishman2025scaling]. A point with ``"grow": [start, end]`` raises the gain by powers of two from 1
at step ``start`` to 2^k at step ``end`` (:func:`gain_log2`), exact in fp32 as the fixed gain is.
"""

from __future__ import annotations

import math

import numpy as np

from chipbook import _checks

#: OCP MX v1.0: 32 elements share one E8M0 scale, whose exponents run from -127 to 127 [ocp2023mx].
#: The casts take the formats' parameters from torch and these constants rather than from
#: chipbook.numerics, so that this experiment's result does not go stale with every edit there; the
#: tests check the casts bit for bit against chipbook.numerics.quantize_scaled.
MX_BLOCK = 32
E8M0_RANGE = (-127, 127)

#: each run's forward casts: (format of the products' inputs, scaling); None for no cast
RECIPES = {"fp32": (None, "none"), "bf16": ("bf16", "none"),
           "fp8, per-tensor scaling": ("fp8_e4m3", "tensor"), "MXFP8": ("fp8_e4m3", "mx"),
           "fp8, delayed scaling": ("fp8_e4m3", "delayed"),
           "int8, per-tensor scaling": ("int8", "tensor")}
#: the outlier channels' gain 2^k: none, then from well inside E4M3's normal range (2^6, 2^13) to past it
OUTLIER_LOG2 = [0, 6, 13, 15, 17]
#: Transformer Engine's DelayedScaling defaults: an amax history of 1,024 steps, its maximum used, no
#: margin; the scale starts at 1 [nvidia2024te]
AMAX_HISTORY = 1024
#: the steps over which a growing outlier gain climbs from 1 to 2^k (after the warm-up, ending 50 steps
#: before the run does)
GROW = [100, 250]

CONFIG = {
    "vocab": 16, "alpha": 0.1, "task_seed": 0,
    "seq": 64, "batch": 32, "d_model": 128, "heads": 4, "layers": 2, "mlp": 256,
    "outlier_channels": [5, 77], "steps": 300, "warmup": 30, "lr": 1e-2, "weight_decay": 0.0,
    "eval_every": 50, "eval_sequences": 64, "seeds": [0, 1, 2],
    "grid": [{"recipe": "fp32", "outlier_log2": 0}, {"recipe": "bf16", "outlier_log2": 0},
             *[{"recipe": r, "outlier_log2": k} for k in OUTLIER_LOG2
               for r in ("fp8, per-tensor scaling", "MXFP8")],
             # int8 with one scale per tensor, which LLM.int8() found outliers break [dettmers2022llmint8]
             *[{"recipe": "int8, per-tensor scaling", "outlier_log2": k} for k in OUTLIER_LOG2[:2]],
             # delayed scaling at fixed gains, then the three FP8 recipes with gains that grow
             *[{"recipe": "fp8, delayed scaling", "outlier_log2": k} for k in (0, 13, 15)],
             *[{"recipe": r, "outlier_log2": k, "grow": GROW} for k in (13, 15)
               for r in ("fp8, per-tensor scaling", "fp8, delayed scaling")],
             {"recipe": "MXFP8", "outlier_log2": 15, "grow": GROW}],
}

#: settings under which a grid point is quick to compute again: the warm-up only, one seed; its
#: held-out loss at the end of the warm-up must equal the stored row (the schedule until then does not
#: depend on the number of steps)
QUICK = {"steps": 30, "seeds": [0]}

COLUMNS = {"recipe": "text", "outlier_log2": "int", "outliers": "text", "seed": "int", "metric": "text",
           "step": "int", "value": "float"}


# --- the data: an order-2 Markov chain ---------------------------------------------------------------


def markov_table(vocab: int, alpha: float, seed: int) -> np.ndarray:
    """The transition table P[a, b, c] = P(next = c | the two before are a, b), each row drawn from a
    symmetric Dirichlet(``alpha``) (small alpha: few likely successors), seeded."""
    vocab = _checks.count("vocab", vocab, minimum=2)
    alpha = _checks.positive("alpha", alpha)
    return np.random.default_rng(seed).dirichlet(np.full(vocab, alpha), size=(vocab, vocab))


def sample(table: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sequences of ``length`` tokens from the chain ``table``, the first two uniform (int64)."""
    n, length = _checks.count("n", n), _checks.count("length", length, minimum=3)
    vocab = table.shape[0]
    cdf = np.cumsum(table, axis=-1)
    out = np.empty((n, length), dtype=np.int64)
    out[:, :2] = rng.integers(0, vocab, size=(n, 2))
    for t in range(2, length):
        u = rng.random((n, 1))
        out[:, t] = np.minimum((u > cdf[out[:, t - 2], out[:, t - 1]]).sum(axis=-1), vocab - 1)
    return out


def floor_loss(table: np.ndarray, tokens: np.ndarray) -> float:
    """The true chain's cross-entropy (nats per token) on ``tokens`` over the predicted positions
    2, 3, …: the lowest held-out loss any model can expect."""
    p = table[tokens[:, :-2], tokens[:, 1:-1], tokens[:, 2:]]
    return float(-np.log(p).mean())


# --- casts -------------------------------------------------------------------------------------------

_TORCH_DTYPE = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2", "bf16": "bfloat16"}


def _largest(fmt: str) -> float:
    """The largest finite value of ``fmt``: 127 for int8 (the symmetric grid), torch's finfo otherwise."""
    import torch

    return 127.0 if fmt == "int8" else float(torch.finfo(getattr(torch, _TORCH_DTYPE[fmt])).max)


def _round(x, fmt: str):
    """Round float32 tensor ``x`` (already within range) to ``fmt``, to nearest, ties to even."""
    import torch

    if fmt == "int8":
        return torch.round(x)
    return x.to(getattr(torch, _TORCH_DTYPE[fmt])).to(torch.float32)


def cast(x, fmt: str | None, scaling: str = "tensor", axis: int = -1):
    """``x`` (a float32 torch tensor) quantized to ``fmt`` and dequantized, as
    :func:`chipbook.numerics.quantize_scaled` does (the same operations in float32, saturating):
    ``"none"`` a plain cast; ``"tensor"`` one scale max/amax; ``"mx"`` a power-of-two scale
    2^(floor(log2 amax) − emax) per block of 32 along ``axis`` (whose length must be a multiple of 32).
    ``fmt=None`` returns ``x``."""
    import torch

    if fmt is None:
        return x
    _checks.choice("fmt", fmt, (*_TORCH_DTYPE, "int8"))
    _checks.choice("scaling", scaling, ("none", "tensor", "mx"))
    top = _largest(fmt)
    if scaling == "none":
        return _round(x.clamp(-top, top), fmt)
    if scaling == "tensor":
        amax = x.abs().max()
        scale = torch.where(amax > 0, torch.tensor(top, dtype=torch.float32) / amax, 1.0)
        return _round((x * scale).clamp(-top, top), fmt) / scale
    _checks.choice("fmt", fmt, ("fp8_e4m3", "fp8_e5m2"))
    moved = x.movedim(axis, -1)
    if moved.shape[-1] % MX_BLOCK:
        raise ValueError(f"axis must have a length that is a multiple of {MX_BLOCK}, "
                         f"got {moved.shape[-1]}")
    blocks = moved.reshape(*moved.shape[:-1], -1, MX_BLOCK)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    _, e = torch.frexp(torch.where(amax > 0, amax, 1.0))  # amax = m·2^e, m in [0.5, 1)
    emax = math.floor(math.log2(top))  # the exponent of the largest value: 8 for E4M3, 15 for E5M2
    scale = torch.ldexp(torch.ones_like(amax), (e - 1 - emax).clamp(*E8M0_RANGE))
    out = _round((blocks / scale).clamp(-top, top), fmt) * scale
    return out.reshape(moved.shape).movedim(-1, axis)


class AmaxHistory:
    """The amax history of one tensor under delayed scaling: the scale of a cast is the format's largest
    value over the largest amax of the last ``length`` training steps (1 before the first), and each
    training step's own amax joins the history after its cast, as Transformer Engine's DelayedScaling
    does with ``amax_compute_algo="max"`` and no margin [nvidia2024te]. ``clamped`` counts the casts whose
    tensor held a value larger than the history's largest (cast to the format's largest value)."""

    def __init__(self, length: int = AMAX_HISTORY):
        self.length = _checks.count("length", length)
        self.amaxes: list[float] = []
        self.clamped = 0

    def cast(self, x, fmt: str, record: bool):
        """``x`` (float32 torch tensor) cast to ``fmt`` under the history's scale; with ``record``
        (a training step) its amax then joins the history."""
        import torch

        top = _largest(fmt)
        past = max(self.amaxes, default=0.0)
        scale = torch.tensor(top, dtype=torch.float32) / past if past > 0 else torch.tensor(1.0)
        amax = float(x.abs().max())
        if record:
            self.clamped += amax * float(scale) > top
            self.amaxes = [*self.amaxes, amax][-self.length:]
        return _round((x * scale).clamp(-top, top), fmt) / scale


# --- the model ---------------------------------------------------------------------------------------


def _linear_function():
    import torch

    class CastLinear(torch.autograd.Function):
        """y = cast(x) @ cast(w) (reduction over x's last axis, w's first); the backward casts the
        output gradient to E5M2 (one scale per tensor) when the forward casts to a float8 or int8
        format, to the forward format otherwise, and reuses the forward's cast inputs."""

        @staticmethod
        def forward(ctx, x, w, fmt, scaling, histories=None, record=False):
            if scaling == "delayed":  # histories: the input's and the weight's AmaxHistory
                xq, wq = histories[0].cast(x, fmt, record), histories[1].cast(w, fmt, record)
            else:
                xq, wq = cast(x, fmt, scaling, axis=-1), cast(w, fmt, scaling, axis=0)
            ctx.save_for_backward(xq, wq)
            ctx.grad = (fmt, "none") if fmt in (None, "bf16") else ("fp8_e5m2", "tensor")
            return xq @ wq

        @staticmethod
        def backward(ctx, dy):
            xq, wq = ctx.saved_tensors
            dyq = cast(dy.contiguous(), *ctx.grad)
            dx = dyq @ wq.T
            dw = xq.reshape(-1, xq.shape[-1]).T @ dyq.reshape(-1, dyq.shape[-1])
            return dx, dw, None, None, None, None

    return CastLinear


def make_model(s: dict, outlier_log2: int, fmt: str | None, scaling: str, seed: int):
    """The transformer of settings ``s``, its outlier gain 2^``outlier_log2``, casting its products'
    inputs to ``fmt`` under ``scaling``; weights seeded by ``seed``."""
    import torch
    import torch.nn.functional as F

    linear = _linear_function()
    d, heads, vocab, seq = s["d_model"], s["heads"], s["vocab"], s["seq"]
    torch.manual_seed(seed)

    class Transformer(torch.nn.Module):
        """Pre-LayerNorm causal decoder; ``gain`` (fixed) multiplies the outlier channels of each
        LayerNorm output that feeds a product, and the product's weight rows are divided by it."""

        def __init__(self):
            super().__init__()
            def w(n_in, n_out):
                return torch.nn.Parameter(torch.randn(n_in, n_out) / math.sqrt(n_in))
            self.embed = torch.nn.Parameter(torch.randn(vocab, d) * 0.5)
            self.pos = torch.nn.Parameter(torch.randn(seq, d) * 0.5)
            self.blocks = torch.nn.ModuleList()
            for _ in range(s["layers"]):
                block = torch.nn.ParameterDict({
                    "ln1": torch.nn.Parameter(torch.ones(d)), "ln2": torch.nn.Parameter(torch.ones(d)),
                    "qkv": w(d, 3 * d), "out": w(d, d), "up": w(d, s["mlp"]), "down": w(s["mlp"], d)})
                self.blocks.append(block)
            self.ln_f = torch.nn.Parameter(torch.ones(d))
            self.head = w(d, vocab)
            gain = torch.ones(d)
            gain[s["outlier_channels"]] = 2.0 ** outlier_log2
            self.register_buffer("gain", gain)
            self.histories: dict[str, tuple[AmaxHistory, AmaxHistory]] = {}

        def set_gain(self, log2: int) -> None:
            """Set the outlier channels' gain to 2^``log2`` (exact: a power of two)."""
            with torch.no_grad():
                self.gain[s["outlier_channels"]] = 2.0 ** log2

        def mm(self, x, weight, site: str):
            histories = self.histories.setdefault(site, (AmaxHistory(), AmaxHistory()))
            return linear.apply(x, weight, fmt, scaling, histories, torch.is_grad_enabled())

        def normed(self, h, weight):
            return F.layer_norm(h, (d,), weight) * self.gain

        def forward(self, tokens, probe: list | None = None):
            n, t = tokens.shape
            h = self.embed[tokens] + self.pos[:t]
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            for i, b in enumerate(self.blocks):
                a = self.normed(h, b["ln1"])
                if probe is not None:
                    probe.append(a)
                q, k, v = self.mm(a, b["qkv"] / self.gain[:, None], f"{i}.qkv").split(d, dim=-1)
                q, k, v = (z.reshape(n, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads)
                att = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
                h = h + self.mm(att.transpose(1, 2).reshape(n, t, d), b["out"], f"{i}.out")
                m = self.normed(h, b["ln2"])
                up = self.mm(m, b["up"] / self.gain[:, None], f"{i}.up")
                h = h + self.mm(F.gelu(up), b["down"], f"{i}.down")
            return F.layer_norm(h, (d,), self.ln_f) @ self.head

    return Transformer()


# --- a run -------------------------------------------------------------------------------------------


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def gain_log2(step: int, k: int, grow: list | None) -> int:
    """The outlier gain's exponent at training step ``step``: ``k`` throughout without ``grow``; with
    ``grow = [start, end]``, 0 before ``start``, k from ``end`` on, and between them rising by whole
    powers of two, k·(step − start)/(end − start) rounded down."""
    if grow is None:
        return k
    start, end = grow
    if not 0 <= start < end:
        raise ValueError(f"grow must be [start, end] with 0 <= start < end, got {grow!r}")
    return min(k, max(0, (k * (step - start)) // (end - start)))


def outlier_ratio(activations) -> float:
    """Largest channel's root-mean-square over the median channel's, in a LayerNorm output
    (tokens × channels): about 1 without outlier channels, orders of magnitude with them."""
    rms = activations.reshape(-1, activations.shape[-1]).pow(2).mean(dim=0).sqrt()
    return float(rms.max() / rms.median())


def _loss(model, tokens):
    import torch.nn.functional as F

    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), tokens[:, 2:].reshape(-1))


def run_one(point: dict, shared: dict) -> list[dict]:
    """Train the point's recipe at its outlier gain, once per seed; rows: held-out loss at the end of
    the warm-up (where it does not depend on the number of steps), every ``eval_every`` steps and at
    the end, its excess over the chain's floor, the training loss at the
    end, the outlier ratio of the first LayerNorm output feeding a product (the gain divided out, so
    it measures what training grew), the relative error of the cast of that input on the channels
    that are not outliers, and for delayed scaling the number of casts that clamped a value larger
    than any in their history. With ``"grow"`` the gain rises during training (:func:`gain_log2`)."""
    import torch

    torch.set_num_threads(1)
    fmt, scaling = RECIPES[_checks.choice("recipe", point["recipe"], RECIPES)]
    k = _checks.count("outlier_log2", point["outlier_log2"], minimum=0)
    grow = point.get("grow")
    s = shared
    table = markov_table(s["vocab"], s["alpha"], s["task_seed"])
    held_out = sample(table, s["eval_sequences"], s["seq"] + 1, np.random.default_rng([s["task_seed"], 1]))
    floor = floor_loss(table, held_out)
    held = torch.from_numpy(held_out)
    rows = []

    def row(seed, metric, step, value):
        rows.append({"recipe": point["recipe"], "outlier_log2": k,
                     "outliers": "fixed" if grow is None else "growing", "seed": seed, "metric": metric,
                     "step": step, "value": float(value)})

    for seed in s["seeds"]:
        model = make_model(s, gain_log2(0, k, grow), fmt, scaling, seed)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        data_rng = np.random.default_rng([s["task_seed"], 2, seed])
        for step in range(s["steps"]):
            for group in opt.param_groups:
                group["lr"] = s["lr"] * lr_factor(step, s["steps"], s["warmup"])
            model.set_gain(gain_log2(step, k, grow))
            batch = torch.from_numpy(sample(table, s["batch"], s["seq"] + 1, data_rng))
            loss = _loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) in (s["warmup"], s["steps"]) or (step + 1) % s["eval_every"] == 0:
                with torch.no_grad():
                    last = float(_loss(model, held))
                row(seed, "held_out_loss", step + 1, last)
        row(seed, "train_loss", s["steps"], loss.detach())
        row(seed, "excess_loss", s["steps"], last - floor)
        with torch.no_grad():
            probe: list = []
            model(held[:, :-1], probe)
            a = probe[0]
            row(seed, "outlier_ratio", s["steps"], outlier_ratio(a / model.gain))
            inliers = torch.ones(a.shape[-1], dtype=torch.bool)
            inliers[s["outlier_channels"]] = False
            if scaling == "delayed":  # the first product's input, under its history's scale
                cast_a = model.histories["0.qkv"][0].cast(a, fmt, record=False)
            else:
                cast_a = cast(a, fmt, scaling)
            error = (cast_a - a)[..., inliers].norm() / a[..., inliers].norm()
            row(seed, "cast_error", s["steps"], error)
        if scaling == "delayed":
            row(seed, "clamped_casts", s["steps"], sum(h.clamped for pair in model.histories.values()
                                                       for h in pair))
    return rows
