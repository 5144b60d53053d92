"""What training and inference must keep in memory, and where it can live (chapter "Memory hierarchy").

Sources of the formulas:

* Bytes per parameter of weights, gradients and optimizer state: mixed-precision Adam keeps 16-bit
  weights and gradients and an fp32 master copy with two fp32 moments, 2 + 2 + 12 = 16 bytes, and
  ZeRO stages 1, 2 and 3 shard the optimizer state, then the gradients, then the weights over the
  data-parallel chips [rajbhandari2020zero] (section 3 and Figure 1). Mixed precision with fp32
  master weights is from [micikevicius2018mixed]; 8-bit Adam keeps each moment in one byte
  [dettmers2022optimizers]; DeepSeek-V3's FP8 recipe keeps fp32 master weights and gradients and
  BF16 moments [deepseekai2024deepseekv3].
* Activations of one transformer layer, 16-bit, no parallelism: s·b·h·(34 + 5·a·s/h) bytes; 34·s·b·h
  with selective recomputation of attention; 2·s·b·h (the layer's input) with full recomputation
  [korthikanti2022reducing] (section 4, equations 1 and 2).
* KV cache: a key and a value vector per layer, KV head and token [pope2022efficiently].
* Decode bound: :func:`chipbook.market.decode_utilisation` (one formula, reused here).
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from chipbook import _checks, market

KIB = 1024

#: Bytes per value of each number format.
FORMATS: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class Recipe:
    """Bytes per parameter that a training recipe keeps: the working ``weights`` the matrix
    products read, the ``grads``, and the optimizer's ``master`` weights and ``moments``."""

    label: str
    weights: float
    grads: float
    master: float
    moments: float

    @property
    def optimizer(self) -> float:
        return self.master + self.moments

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer


RECIPES: dict[str, Recipe] = {
    "fp32-adam": Recipe("fp32 Adam", 4, 4, 0, 8),
    "mixed-adam": Recipe("mixed-precision Adam (ZeRO's 2+2+12)", 2, 2, 4, 8),
    "mixed-adam-fp32-grads": Recipe("mixed Adam, fp32 gradients", 2, 4, 4, 8),
    "mixed-adam-8bit": Recipe("mixed Adam, 8-bit moments", 2, 2, 4, 2),
    "bf16-adam": Recipe("bf16 Adam, no master weights", 2, 2, 0, 4),
    "fp8-deepseek": Recipe("FP8, DeepSeek-V3 style", 1, 4, 4, 4),
    "sgd-momentum": Recipe("fp32 SGD with momentum", 4, 4, 0, 4),
}

#: ZeRO stage -> which parts are sharded over the data-parallel chips.
_ZERO_SHARDS = {0: (), 1: ("optimizer",), 2: ("optimizer", "grads"), 3: ("optimizer", "grads", "weights")}


def fmt_bytes(fmt: str) -> float:
    """Bytes of one value in number format ``fmt``."""
    return FORMATS[_checks.choice("fmt", fmt, FORMATS)]


def recipe(name: str) -> Recipe:
    """The training recipe called ``name`` (one of :data:`RECIPES`)."""
    return RECIPES[_checks.choice("recipe", name, RECIPES)]


def training_state_bytes(params: float, recipe_name: str, *, zero_stage: int = 0, chips: int = 1) -> float:
    """Bytes of weights, gradients and optimizer state per chip for ``params`` parameters trained
    with ``recipe_name``, with ZeRO stage ``zero_stage`` (0 = none) sharding over ``chips`` chips
    [rajbhandari2020zero]."""
    params = _checks.positive("params", params)
    r = recipe(recipe_name)
    stage = _checks.choice("zero_stage", zero_stage, _ZERO_SHARDS)
    chips = _checks.count("chips", chips)
    parts = {"weights": r.weights, "grads": r.grads, "optimizer": r.optimizer}
    return params * sum(b / chips if part in _ZERO_SHARDS[stage] else b for part, b in parts.items())


def inference_weight_bytes(params: float, fmt: str) -> float:
    """Bytes of ``params`` weights stored in number format ``fmt``."""
    return _checks.positive("params", params) * fmt_bytes(fmt)


_RECOMPUTE = ("none", "selective", "full")


def activation_bytes(seq: int, batch: int, hidden: int, heads: int, layers: int, *,
                     recompute: str = "none") -> float:
    """Bytes of activations a transformer keeps for its backward pass, 16-bit, no parallelism
    [korthikanti2022reducing]: per layer s·b·h·(34 + 5·a·s/h) with no recomputation, 34·s·b·h when
    attention's s×s tensors are recomputed ("selective"), 2·s·b·h when only each layer's input is
    kept and the rest recomputed ("full")."""
    s = _checks.count("seq", seq)
    b = _checks.count("batch", batch)
    h = _checks.count("hidden", hidden)
    a = _checks.count("heads", heads)
    n = _checks.count("layers", layers)
    mode = _checks.choice("recompute", recompute, _RECOMPUTE)
    per_token = {"none": 34 + 5 * a * s / h, "selective": 34.0, "full": 2.0}[mode]
    return float(n * s * b * h * per_token)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, seq: int, batch: int, fmt: str) -> float:
    """Bytes of the KV cache: 2 (K and V) · layers · kv_heads · head_dim · seq · batch · bytes."""
    values = (2 * _checks.count("layers", layers) * _checks.count("kv_heads", kv_heads)
              * _checks.count("head_dim", head_dim) * _checks.count("seq", seq, minimum=0)
              * _checks.count("batch", batch))
    return values * fmt_bytes(fmt)


# --- chips and their memory tiers ------------------------------------------------------------------

TIERS = ("SRAM", "HBM", "DDR")
_CAPACITY = {"SRAM": ("sram_mb", 1e6), "HBM": ("hbm_gb", 1e9), "DDR": ("ddr_gb", 1e9)}
_BANDWIDTH = {"SRAM": "sram_bandwidth_gb_s", "HBM": "hbm_bandwidth_gb_s", "DDR": "ddr_bandwidth_gb_s"}


def _number(chip: Mapping, column: str) -> float:
    """The cell ``column`` of a chip's row as a float; NaN where it is blank."""
    value = chip[column]
    return math.nan if value is None else float(value)


def tier_bytes(chip: Mapping, tier: str) -> float:
    """Capacity in bytes of one memory ``tier`` of ``chip`` (a row of data/chips.csv); 0 where the
    chip has no such tier or its size is not published."""
    column, scale = _CAPACITY[_checks.choice("tier", tier, TIERS)]
    return float(np.nan_to_num(_number(chip, column))) * scale


def tier_bandwidth(chip: Mapping, tier: str) -> float:
    """Bandwidth in byte/s of one memory ``tier`` of ``chip``; NaN where not published, so that a
    time computed from it is NaN rather than a number."""
    return _number(chip, _BANDWIDTH[_checks.choice("tier", tier, TIERS)]) * 1e9


def chips_needed(need_bytes: float, chip: Mapping, tiers: tuple[str, ...]) -> float:
    """Fewest chips whose ``tiers`` together hold ``need_bytes``, split perfectly across chips
    (a lower bound: no replication, no fragmentation); inf where those tiers hold nothing."""
    need_bytes = _checks.positive("need_bytes", need_bytes)
    if not tiers:
        raise ValueError("tiers must name at least one of " + ", ".join(TIERS))
    per_chip = sum(tier_bytes(chip, t) for t in tiers)
    return math.inf if per_chip == 0 else float(math.ceil(need_bytes / per_chip))


def weight_tier(chip: Mapping) -> str:
    """The tier a chip serves its weights from: HBM where it has HBM, else on-die SRAM."""
    return "HBM" if tier_bytes(chip, "HBM") > 0 else "SRAM"


# --- bandwidth -----------------------------------------------------------------------------------


def decode_tokens_per_s(params: float, bytes_per_param: float, batch: float, *, bandwidth_b_s: float,
                        peak_flop_s: float, kv_bytes_per_seq: float = 0.0) -> float:
    """Upper bound on the tokens per second a batch of ``batch`` sequences decodes: each step reads
    every weight and each sequence's KV cache once and does 2·N·B FLOP, so tokens/s ≤
    min(peak / 2N, B · bandwidth / bytes read per step). The roofline is
    :func:`chipbook.market.decode_utilisation`, with the KV bytes added to the bytes per parameter."""
    params = _checks.positive("params", params)
    batch = _checks.positive("batch", batch)
    kv = _checks.non_negative("kv_bytes_per_seq", kv_bytes_per_seq)
    per_param = _checks.positive("bytes_per_param", bytes_per_param) + batch * kv / params
    use = market.decode_utilisation(batch, peak_flop_s, bandwidth_b_s, per_param)
    return use * peak_flop_s / (market.FORWARD_FLOP_PER_PARAM * params)


def matmul_intensity(m: float, k: float, n: float, bytes_per_value: float) -> float:
    """Arithmetic intensity (FLOP per byte moved) of an (m×k)·(k×n) product that reads both inputs
    and writes the output once: 2·m·k·n / ((m·k + k·n + m·n)·bytes)."""
    m, k, n = (_checks.positive(name, v) for name, v in (("m", m), ("k", k), ("n", n)))
    b = _checks.positive("bytes_per_value", bytes_per_value)
    return 2 * m * k * n / ((m * k + k * n + m * n) * b)


def step_traffic_bytes(params: float, recipe_name: str) -> float:
    """Bytes one training step moves to and from the memory that holds the training state: the
    forward and backward passes read the weights (twice), the backward pass writes the gradients,
    and the optimizer reads the gradients, reads and writes the master weights and moments, and
    writes the new working weights: N·(3·w + 2·g + 2·optimizer)."""
    params = _checks.positive("params", params)
    r = recipe(recipe_name)
    return params * (3 * r.weights + 2 * r.grads + 2 * r.optimizer)


def step_time_bound(params: float, recipe_name: str, tokens: float, *, bandwidth_b_s: float,
                    peak_flop_s: float) -> float:
    """Lower bound on the seconds of one training step of ``tokens`` tokens on one chip: the longer
    of 6·N·tokens / peak and the state traffic / bandwidth (the two overlap at best)."""
    tokens = _checks.positive("tokens", tokens)
    bandwidth_b_s = _checks.positive("bandwidth_b_s", bandwidth_b_s)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    compute = market.training_flops(params, tokens) / peak_flop_s
    return max(compute, step_traffic_bytes(params, recipe_name) / bandwidth_b_s)


# --- a small network in numpy, measured with tracemalloc -------------------------------------------


def mlp_weights(depth: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``depth`` float32 weight matrices of ``width`` × ``width``, seeded."""
    depth = _checks.count("depth", depth)
    width = _checks.count("width", width)
    rng = np.random.default_rng(_checks.count("seed", seed, minimum=0))
    return [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(depth)]


def _forward(weights: list[np.ndarray], x: np.ndarray, keep: bool):
    kept = []
    for w in weights:
        z = x @ w
        if keep:
            kept.append((x, z))
        x = np.maximum(z, 0)
    return x, kept


def train_step(weights: list[np.ndarray], x: np.ndarray, target: np.ndarray, lr: float = 1e-3) -> float:
    """One step of SGD on the mean-squared error of a ReLU MLP: the forward pass keeps each layer's
    input and pre-activation for the backward pass. Updates ``weights`` in place; returns the loss."""
    out, kept = _forward(weights, x, keep=True)
    diff = out - target
    loss = float(np.mean(diff * diff))
    grad = diff * (2 / diff.size)
    grads = []
    for (inp, z), w in zip(reversed(kept), reversed(weights), strict=True):
        grad = grad * (z > 0)
        grads.append(inp.T @ grad)
        grad = grad @ w.T
    for w, g in zip(weights, reversed(grads), strict=True):
        w -= lr * g
    return loss


def infer(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP's forward pass, keeping nothing: each activation is freed once the next exists."""
    return _forward(weights, x, keep=False)[0]


def peak_bytes(depth: int, width: int, batch: int, *, training: bool, seed: int = 0) -> int:
    """Peak bytes that tracemalloc sees allocated during one training step (or one forward pass) of
    a seeded MLP, above what was allocated before the step (the weights and the input), rounded to
    whole KiB: tracemalloc also counts Python's own small objects, a few dozen bytes that vary from
    process to process (with hash randomisation), while numpy's buffers are tens of KiB."""
    weights = mlp_weights(depth, width, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((_checks.count("batch", batch), width)).astype(np.float32)
    target = rng.standard_normal((batch, width)).astype(np.float32)
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        peak = 0
        for _ in range(2):  # the first pass may also allocate numpy's one-off internals
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            if training:
                train_step(weights, x, target)
            else:
                infer(weights, x)
            peak = tracemalloc.get_traced_memory()[1] - base
        return KIB * round(peak / KIB)
    finally:
        if not started:
            tracemalloc.stop()


def mlp_model_bytes(depth: int, width: int, batch: int, *, training: bool, itemsize: int = 4) -> float:
    """The chapter's model of :func:`peak_bytes`: training keeps, per layer, the input and the
    pre-activation (2·B·W values) and a gradient (W² values); at its peak the backward pass also
    holds the incoming and outgoing gradients (2·B·W) and one weight-sized temporary while it
    updates the weights; inference holds at most three activations at a time (a layer's
    input, its pre-activation and its output), the first of which existed before the pass."""
    depth = _checks.count("depth", depth)
    width = _checks.count("width", width)
    batch = _checks.count("batch", batch)
    if training:
        return float(itemsize * (depth * (2 * batch * width + width * width) + width * width
                                 + 2 * batch * width))
    return float(itemsize * batch * width * min(2 * depth, 3))
