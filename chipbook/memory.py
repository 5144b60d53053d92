"""What training and inference must keep in memory, and where it can live (chapter "Memory hierarchy").

Sources of the formulas:

* Bytes per parameter of weights, gradients and optimizer state: mixed-precision Adam keeps 16-bit
  weights and gradients and an fp32 master copy with two fp32 moments, 2 + 2 + 12 = 16 bytes, and
  ZeRO stages 1, 2 and 3 shard the optimizer state, then the gradients, then the weights over the
  data-parallel chips [rajbhandari2020zero] (section 3 and Figure 1). Mixed precision with fp32
  master weights is from [micikevicius2018mixed]; 8-bit Adam keeps each moment in one byte
  [dettmers2022optimizers]; DeepSeek-V3's report states fp32 master weights and gradients and BF16
  moments [deepseekai2024deepseekv3]; that its working copy of the weights is FP8 is our assumption.
* Activations of one GPT-style transformer layer, 16-bit: s·b·h·(34 + 5·a·s/h) bytes with nothing
  recomputed; 34·s·b·h when attention's s×s tensors are recomputed ("selective"); 2·s·b·h (the
  layer's input) with full recomputation; with tensor parallelism t and sequence parallelism every
  term divides by t, s·b·h·(34/t + 5·a·s/(h·t)) [korthikanti2022reducing] (section 4, equations 1-5).
  The cross-entropy's fp32 logits add 4·s·b·v/t bytes (their section 4.3).
* A Llama-style layer (RMSNorm, grouped-query attention run by FlashAttention, SwiGLU, no dropout):
  the same tensor-by-tensor count applied to its tensors (see :func:`llama_activation_bytes`);
  FlashAttention keeps no s×s tensor, only its output and one fp32 softmax statistic per head and
  token (FlashAttention-2's log-sum-exp [dao2023flashattention2]; the first version kept two
  [dao2022flashattention]).
* KV cache: a key and a value vector per layer, KV head and token [pope2022efficiently]; multi-head
  latent attention caches one compressed latent and one shared rotary key per layer and token
  [deepseekai2024deepseekv3].
* Decode and training-step bounds: the roofline [williams2009roofline], with the decode utilisation of
  :func:`chipbook.market.decode_utilisation` when the KV cache is left out.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from chipbook import _checks, market

KIB = 1024
SECONDS_PER_DAY = 86_400.0

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
    "fp8-deepseek": Recipe("FP8 working weights (assumed), DeepSeek-V3's fp32 master, grads", 1, 4, 4, 4),
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


# --- activations ----------------------------------------------------------------------------------

_RECOMPUTE = ("none", "selective", "full")


def activation_bytes(seq: int, batch: int, hidden: int, heads: int, layers: int, *,
                     recompute: str = "none", tensor_parallel: int = 1) -> float:
    """Bytes of activations a GPT-style transformer (LayerNorm, dropout, GeLU, multi-head attention
    whose s×s scores are stored) keeps for its backward pass, 16-bit [korthikanti2022reducing]: per
    layer s·b·h·(34 + 5·a·s/h) with no recomputation, 34·s·b·h when attention's s×s tensors are
    recomputed ("selective"), 2·s·b·h when only each layer's input is kept ("full"). With tensor
    parallelism over ``tensor_parallel`` chips and sequence parallelism (Megatron's practice), every
    term is divided by t: these are the bytes on one chip of the tensor-parallel group."""
    s = _checks.count("seq", seq)
    b = _checks.count("batch", batch)
    h = _checks.count("hidden", hidden)
    a = _checks.count("heads", heads)
    n = _checks.count("layers", layers)
    t = _checks.count("tensor_parallel", tensor_parallel)
    mode = _checks.choice("recompute", recompute, _RECOMPUTE)
    per_token = {"none": 34 + 5 * a * s / h, "selective": 34.0, "full": 2.0}[mode]
    return float(n * s * b * h * per_token / t)


def llama_activation_bytes(seq: int, batch: int, hidden: int, heads: int, kv_heads: int, ffn: int,
                           layers: int, *, recompute: str = "none", tensor_parallel: int = 1) -> float:
    """Bytes of activations a Llama-style layer keeps for its backward pass, 16-bit values, on one
    chip of a tensor- and sequence-parallel group of ``tensor_parallel`` chips.

    The tensors, counted as Korthikanti et al. count GPT's [korthikanti2022reducing], per token:
    the two RMSNorm inputs and outputs (4·h values), the query (h), the keys and values
    (2·h·kv_heads/heads: grouped-query attention), FlashAttention's output, which is also the output
    projection's input (h) [dao2023flashattention2], and SwiGLU's gate and up projections and their
    product, the down projection's input (3·ffn, as a fused SwiGLU kernel keeps them; unfused
    autograd also keeps the SiLU's output), all 2 bytes; plus one fp32 softmax statistic per
    head (4·heads bytes). No dropout, no s×s tensor. Full recomputation keeps only each layer's
    input, 2·h bytes per token. Every term divides by t (sequence parallelism shards the norms, and
    Megatron keeps the norms' outputs sharded, all-gathering them again in the backward pass), except
    the keys and values, which divide by at most ``kv_heads``: tensor parallelism splits attention by
    heads, Megatron-LM requires t to divide the KV heads, and beyond them the keys and values are
    replicated (as serving engines do). t may not exceed ``heads``."""
    s = _checks.count("seq", seq)
    b = _checks.count("batch", batch)
    h = _checks.count("hidden", hidden)
    a = _checks.count("heads", heads)
    kv = _checks.count("kv_heads", kv_heads)
    f = _checks.count("ffn", ffn)
    n = _checks.count("layers", layers)
    t = _checks.count("tensor_parallel", tensor_parallel)
    mode = _checks.choice("recompute", recompute, ("none", "full"))
    if kv > a:
        raise ValueError(f"kv_heads must be <= heads ({a}), got {kv}")
    if t > a:
        raise ValueError(f"tensor_parallel must be <= heads ({a}), which it splits, got {t}")
    if mode == "full":
        return float(n * s * b * 2.0 * h / t)
    per_token = (2.0 * (6 * h + 3 * f) + 4.0 * a) / t + 2.0 * 2 * h * kv / a / min(t, kv)
    return float(n * s * b * per_token)


def logits_bytes(seq: int, batch: int, vocab: int, *, tensor_parallel: int = 1) -> float:
    """Bytes of the fp32 logits the cross-entropy keeps, 4·s·b·v/t [korthikanti2022reducing]: for a
    large vocabulary, as much as a layer's activations."""
    return float(4 * _checks.count("seq", seq) * _checks.count("batch", batch) * _checks.count("vocab", vocab)
                 / _checks.count("tensor_parallel", tensor_parallel))


def training_flop_per_token(params: float, recompute: str = "none") -> float:
    """FLOP per token of a training step: 6·N (2 forward, 4 backward) [kaplan2020scaling], and 8·N
    with full recomputation, which runs the forward pass twice [korthikanti2022reducing]; selective
    recomputation adds only attention's s×s products, which 6·N does not count."""
    params = _checks.positive("params", params)
    mode = _checks.choice("recompute", recompute, _RECOMPUTE)
    extra = market.FORWARD_FLOP_PER_PARAM if mode == "full" else 0.0
    return (market.TRAINING_FLOP_PER_PARAM + extra) * params


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, seq: int, batch: int, fmt: str) -> float:
    """Bytes of the KV cache: 2 (K and V) · layers · kv_heads · head_dim · seq · batch · bytes."""
    values = (2 * _checks.count("layers", layers) * _checks.count("kv_heads", kv_heads)
              * _checks.count("head_dim", head_dim) * _checks.count("seq", seq, minimum=0)
              * _checks.count("batch", batch))
    return values * fmt_bytes(fmt)


def latent_kv_cache_bytes(layers: int, latent_dim: int, seq: int, batch: int, fmt: str) -> float:
    """Bytes of a multi-head latent attention cache: ``latent_dim`` values per layer and token (the
    compressed key-value latent and the shared rotary key, 512 + 64 for DeepSeek-V3)
    [deepseekai2024deepseekv3]: layers · latent_dim · seq · batch · bytes."""
    values = (_checks.count("layers", layers) * _checks.count("latent_dim", latent_dim)
              * _checks.count("seq", seq, minimum=0) * _checks.count("batch", batch))
    return values * fmt_bytes(fmt)


# --- chips and their memory tiers ------------------------------------------------------------------

TIERS = ("SRAM", "HBM", "DDR")
#: Tiers fast enough for what every pass reads (weights, gradients, activations, KV cache).
FAST_TIERS = ("SRAM", "HBM")
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


def _ceil(ratio: float) -> float:
    # ratios such as 1.0000000000000002 from binary fractions are whole numbers
    return float(math.ceil(ratio - 1e-9 * ratio))


def chips_needed(fast_bytes: float, chip: Mapping, tiers: tuple[str, ...], *,
                 slow_bytes: float = 0.0) -> float:
    """Fewest chips whose ``tiers`` hold ``fast_bytes`` (what every pass reads: weights, gradients,
    activations, KV cache) in their fast tiers (SRAM, HBM) and ``slow_bytes`` (what is touched once
    a step, such as optimizer state) anywhere, split perfectly across chips (a lower bound: no
    replication, no fragmentation); inf where those tiers cannot hold them."""
    fast_bytes = _checks.positive("fast_bytes", fast_bytes)
    slow_bytes = _checks.non_negative("slow_bytes", slow_bytes)
    if not tiers:
        raise ValueError("tiers must name at least one of " + ", ".join(TIERS))
    capacity = {t: tier_bytes(chip, t) for t in tiers}
    fast = sum(c for t, c in capacity.items() if t in FAST_TIERS)
    if fast == 0:
        return math.inf
    return max(_ceil(fast_bytes / fast), _ceil((fast_bytes + slow_bytes) / sum(capacity.values())))


def weight_tier(chip: Mapping) -> str:
    """The tier a chip serves its weights from: HBM where it has HBM, else on-die SRAM."""
    return "HBM" if tier_bytes(chip, "HBM") > 0 else "SRAM"


def chips_for_compute(train_flop: float, peak_flop_s: float, utilisation: float, days: float) -> float:
    """Fewest chips that execute ``train_flop`` FLOP within ``days`` days when each sustains the
    fraction ``utilisation`` of its peak ``peak_flop_s``: ⌈F / (P · u · 86 400 · days)⌉."""
    train_flop = _checks.positive("train_flop", train_flop)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    days = _checks.positive("days", days)
    return _ceil(train_flop / (peak_flop_s * utilisation * SECONDS_PER_DAY * days))


@dataclass(frozen=True)
class Layout:
    """A training run's parallel layout: ``tensor`` × ``context`` × ``pipeline`` × ``data`` chips,
    optimizer state sharded over the data-parallel chips by ZeRO stage ``zero_stage``, and
    ``in_flight`` micro-batches whose activations a pipeline stage keeps at once (a 1F1B schedule's
    first stage keeps as many as there are stages). ``chunks`` is the number of model chunks each
    chip holds in an interleaved pipeline schedule (1: plain 1F1B); interleaving makes the first stage
    keep 1 + (p − 1)/(p·v) times the activations of plain 1F1B [korthikanti2022reducing], the
    penalty Megatron-LM's memory estimate applies."""

    tensor: int
    pipeline: int
    data: int
    context: int = 1
    zero_stage: int = 1
    in_flight: int = 1
    chunks: int = 1

    def __post_init__(self) -> None:
        for name in ("tensor", "pipeline", "data", "context", "in_flight", "chunks"):
            _checks.count(name, getattr(self, name))
        _checks.choice("zero_stage", self.zero_stage, _ZERO_SHARDS)

    @property
    def chips(self) -> int:
        return self.tensor * self.context * self.pipeline * self.data

    @property
    def interleave_factor(self) -> float:
        """Activations of an interleaved schedule's first stage over plain 1F1B's: 1 + (p − 1)/(p·v)
        with v = ``chunks`` ≥ 2 model chunks per chip, 1 for plain 1F1B (v = 1)."""
        if self.chunks == 1:
            return 1.0
        return 1 + (self.pipeline - 1) / (self.pipeline * self.chunks)


def layout_bytes_per_chip(params: float, recipe_name: str, layout: Layout, *,
                          activations_per_microbatch: float,
                          microbatches: float | None = None) -> dict[str, float]:
    """Bytes one chip holds in ``layout``: its share of the weights, gradients and optimizer state
    (the model split over tensor × pipeline chips, then ZeRO over the data-parallel ones), and the
    activations of ``layout.in_flight`` micro-batches of its pipeline stage, where
    ``activations_per_microbatch`` is the whole model's activations for one micro-batch on one
    chip of the tensor group (e.g. :func:`llama_activation_bytes` with ``tensor_parallel``), so it is
    divided by the pipeline stages and the context-parallel chips here, and multiplied by the
    layout's :attr:`Layout.interleave_factor`. Gradients are sharded only from ZeRO stage 2: with
    stage 1 each chip keeps a whole gradient buffer for its share of the parameters (accumulated over
    the micro-batches, reduce-scattered once a step); with stage 2 the gradients are reduce-scattered
    as they are produced, every micro-batch. With ``microbatches`` (the replica's micro-batches a step)
    a stage keeps at most that many micro-batches' activations, whatever the schedule: the
    interleaved factor assumes more micro-batches than the pipeline's warm-up holds, and no schedule
    keeps activations of micro-batches the step does not have."""
    share = _checks.positive("params", params) / (layout.tensor * layout.pipeline)
    r = recipe(recipe_name)
    act = _checks.non_negative("activations_per_microbatch", activations_per_microbatch)
    sharded = _ZERO_SHARDS[layout.zero_stage]
    part = {"weights": r.weights, "gradients": r.grads, "optimizer state": r.optimizer}
    key = {"weights": "weights", "gradients": "grads", "optimizer state": "optimizer"}
    out = {k: share * b / (layout.data if key[k] in sharded else 1) for k, b in part.items()}
    kept = layout.in_flight * layout.interleave_factor
    if microbatches is not None:
        kept = min(kept, _checks.positive("microbatches", microbatches))
    out["activations"] = act / (layout.pipeline * layout.context) * kept
    return out


def first_stage_share(layers: int, pipeline: int, chunks: int = 1) -> float:
    """Share of one micro-batch's whole-model activations that the fullest stage of a pipeline keeps
    when, as Llama 3 did, the first and last stages get one layer fewer than the others
    [dubey2024llama, section 3.3.2], against the L/pp layers of an even split (which
    :func:`layout_bytes_per_chip` counts). Under 1F1B (``chunks`` = 1) stage i keeps (pp − i)
    micro-batches of its layers, the inner stages m = (L + 2)/pp layers each, so the fullest holds
    max(pp·(m − 1), (pp − 1)·m) layer-passes against L. An interleaved schedule (``chunks`` > 1) keeps
    about as many micro-batches on every stage (all of them, once :func:`layout_bytes_per_chip` caps
    them at the step's), so the fullest is an inner stage: (L + 2)/L."""
    layers = _checks.count("layers", layers)
    pipeline = _checks.count("pipeline", pipeline)
    chunks = _checks.count("chunks", chunks)
    if pipeline < 3:
        return 1.0  # no inner stage to take the layers the end stages give up
    if chunks > 1:
        return (layers + 2) / layers
    inner = (layers + 2) / pipeline
    return min(1.0, max(pipeline * (inner - 1), (pipeline - 1) * inner) / layers)


def working_set_bytes(layer_weight_bytes: float, layer_activation_bytes: float, *,
                      layer_grad_bytes: float = 0.0, tensor_parallel: int = 1) -> float:
    """Bytes a chip must hold *while it computes one layer*, whatever is sharded between layers: the
    layer's gathered weights (ZeRO stage 3 or FSDP gathers them before use [rajbhandari2020zero]),
    its gradient before the reduce-scatter, and the activations that layer's backward pass needs,
    all divided over ``tensor_parallel`` chips that split the layer (tensor and sequence
    parallelism [korthikanti2022reducing]). A lower bound: no prefetch buffer for the next layer."""
    total = (_checks.positive("layer_weight_bytes", layer_weight_bytes)
             + _checks.non_negative("layer_grad_bytes", layer_grad_bytes)
             + _checks.non_negative("layer_activation_bytes", layer_activation_bytes))
    return total / _checks.count("tensor_parallel", tensor_parallel)


def min_split(working_bytes: float, free_bytes: float) -> float:
    """Fewest chips over which a working set of ``working_bytes`` must be split so that each chip's
    part fits in its ``free_bytes`` (the fast memory left after its share of the stored state, which
    may be negative where that share does not fit): ⌈working / free⌉; inf where nothing is free."""
    working_bytes = _checks.positive("working_bytes", working_bytes)
    free_bytes = float(free_bytes)
    if math.isnan(free_bytes):
        raise ValueError("free_bytes must be a number, got NaN")
    return math.inf if free_bytes <= 0 else _ceil(working_bytes / free_bytes)


# --- bandwidth -----------------------------------------------------------------------------------


def decode_intensity(params: float, bytes_per_param: float, batch: float,
                     kv_bytes_per_seq: float = 0.0) -> float:
    """FLOP per byte read of one decode step of ``batch`` sequences: 2·N·B FLOP over the weights
    (N·b bytes) and each sequence's KV cache (B·M_KV bytes), 2NB / (Nb + B·M_KV). It grows with B
    towards 2N/M_KV, so with a KV cache decode may never reach a chip's ridge point. Attention's
    own FLOP over the cache (2 per cached value for each query head that reads it) are left out:
    for multi-head and grouped-query attention they raise the intensity a little, not its order;
    not for multi-head latent attention with absorbed weights, where 128 query heads read each
    cached latent, so the limit 2N/M_KV does not apply to it."""
    params = _checks.positive("params", params)
    b = _checks.positive("bytes_per_param", bytes_per_param)
    batch = _checks.positive("batch", batch)
    kv = _checks.non_negative("kv_bytes_per_seq", kv_bytes_per_seq)
    return market.FORWARD_FLOP_PER_PARAM * params * batch / (params * b + batch * kv)


def decode_tokens_per_s(params: float, bytes_per_param: float, batch: float, *, bandwidth_b_s: float,
                        peak_flop_s: float, kv_bytes_per_seq: float = 0.0) -> float:
    """Upper bound on the tokens per second a batch of ``batch`` sequences decodes: each step reads
    every weight and each sequence's KV cache once and does 2·N·B FLOP, so tokens/s ≤
    min(peak, intensity · bandwidth) / 2N (the roofline of :func:`decode_intensity`). Without a KV
    cache this is :func:`chipbook.market.decode_utilisation` times peak / 2N."""
    bandwidth_b_s = _checks.positive("bandwidth_b_s", bandwidth_b_s)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    intensity = decode_intensity(params, bytes_per_param, batch, kv_bytes_per_seq)
    return min(peak_flop_s, intensity * bandwidth_b_s) / (market.FORWARD_FLOP_PER_PARAM * params)


def prefill_seconds(params: float, prompt_tokens: int, *, peak_flop_s: float, utilisation: float,
                    attention: market.Attention | None = None) -> float:
    """Lower bound on the time to first token of one prompt of ``prompt_tokens`` tokens: prefill
    runs all the prompt's tokens through the forward pass at once, in matrix products large enough
    to be bound by compute, not memory [deepseekai2025inference]. It takes the prompt's forward FLOP
    (:func:`chipbook.market.inference_flops`: 2·N a token [kaplan2020scaling], plus attention over
    the prompt when ``attention`` is given) over ``utilisation`` × ``peak_flop_s``, the dense peak of
    all the chips that share the prompt. Queueing, the network and the first decode step are left
    out."""
    prompt_tokens = _checks.count("prompt_tokens", prompt_tokens)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    return market.inference_flops(params, prompt_tokens, attention) / (utilisation * peak_flop_s)


def matmul_intensity(m: float, k: float, n: float, bytes_per_value: float) -> float:
    """Arithmetic intensity (FLOP per byte moved) of an (m×k)·(k×n) product that reads both inputs
    and writes the output once: 2·m·k·n / ((m·k + k·n + m·n)·bytes)."""
    m, k, n = (_checks.positive(name, v) for name, v in (("m", m), ("k", k), ("n", n)))
    b = _checks.positive("bytes_per_value", bytes_per_value)
    return 2 * m * k * n / ((m * k + k * n + m * n) * b)


def step_traffic_bytes(params: float, recipe_name: str, *, micro_batches: int = 1) -> float:
    """Bytes one optimizer step moves to and from memory when it accumulates gradients over
    ``micro_batches`` micro-batches: each micro-batch reads the weights twice (forward and backward)
    and adds into the gradients (written once, then read and written), and the optimizer reads the
    gradients, reads and writes the master weights and moments, and writes the new working weights:
    N·((2k+1)·w + 2k·g + 2·optimizer)."""
    params = _checks.positive("params", params)
    r = recipe(recipe_name)
    k = _checks.count("micro_batches", micro_batches)
    return params * ((2 * k + 1) * r.weights + 2 * k * r.grads + 2 * r.optimizer)


def optimizer_traffic_bytes(params: float, recipe_name: str) -> float:
    """The part of :func:`step_traffic_bytes` that touches only the optimizer state (master weights
    and moments, read and written once a step): 2·N·optimizer. It is all a slow tier must carry
    when weights and gradients stay in the fast ones."""
    return _checks.positive("params", params) * 2 * recipe(recipe_name).optimizer


def step_time_bound(params: float, recipe_name: str, tokens: float, *, peak_flop_s: float,
                    fast_b_s: float, slow_b_s: float | None = None, micro_batches: int = 1) -> float:
    """Lower bound on the seconds of one optimizer step of ``tokens`` tokens on a chip holding
    ``params`` parameters: the longest of 6·N·tokens / peak, the fast tier's traffic / ``fast_b_s``
    and, where the optimizer state lives in a slow tier of bandwidth ``slow_b_s``, its traffic
    (:func:`optimizer_traffic_bytes`) / ``slow_b_s``. The three may overlap, at best fully."""
    tokens = _checks.positive("tokens", tokens)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    fast_b_s = _checks.positive("fast_b_s", fast_b_s)
    total = step_traffic_bytes(params, recipe_name, micro_batches=micro_batches)
    compute = training_flop_per_token(params) * tokens / peak_flop_s
    if slow_b_s is None:
        return max(compute, total / fast_b_s)
    slow_b_s = _checks.positive("slow_b_s", slow_b_s)
    slow = optimizer_traffic_bytes(params, recipe_name)
    return max(compute, (total - slow) / fast_b_s, slow / slow_b_s)


def crossover_tokens(traffic_bytes_per_param: float, peak_flop_s: float, bandwidth_b_s: float) -> float:
    """Tokens at which 6·N FLOP per token take as long as moving ``traffic_bytes_per_param``·N bytes
    at ``bandwidth_b_s``: traffic · peak / (6 · bandwidth), whatever N. Below it memory, above it
    arithmetic, sets the pace."""
    traffic = _checks.positive("traffic_bytes_per_param", traffic_bytes_per_param)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    bandwidth_b_s = _checks.positive("bandwidth_b_s", bandwidth_b_s)
    return traffic * peak_flop_s / (market.TRAINING_FLOP_PER_PARAM * bandwidth_b_s)


# --- a small network in numpy, trained with Adam, measured with tracemalloc ------------------------

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def mlp_weights(depth: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``depth`` float32 weight matrices of ``width`` × ``width``, seeded."""
    depth = _checks.count("depth", depth)
    width = _checks.count("width", width)
    rng = np.random.default_rng(_checks.count("seed", seed, minimum=0))
    return [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(depth)]


@dataclass
class AdamState:
    """Adam's two moments for each weight matrix, float32 (the fp32 recipe: 8 bytes per parameter),
    and the number of steps taken [kingma2015adam]."""

    m: list[np.ndarray]
    v: list[np.ndarray]
    step: int = 0

    @classmethod
    def zeros(cls, weights: list[np.ndarray]) -> AdamState:
        return cls([np.zeros_like(w) for w in weights], [np.zeros_like(w) for w in weights])


def _forward(weights: list[np.ndarray], x: np.ndarray, keep: bool):
    kept = []
    for w in weights:
        z = x @ w
        if keep:
            kept.append((x, z))
        x = np.maximum(z, 0)
    return x, kept


def _adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float) -> None:
    """One Adam update of ``w`` in place, through a single weight-sized scratch array."""
    b1, b2 = ADAM_BETAS
    scratch = np.multiply(g, 1 - b1)
    m *= b1
    m += scratch
    np.multiply(g, g, out=scratch)
    scratch *= 1 - b2
    v *= b2
    v += scratch
    np.sqrt(v, out=scratch)
    scratch /= math.sqrt(1 - b2**step)
    scratch += ADAM_EPS
    np.divide(m, scratch, out=scratch)
    scratch *= lr / (1 - b1**step)
    w -= scratch


def train_step(weights: list[np.ndarray], x: np.ndarray, target: np.ndarray, lr: float = 1e-3,
               adam: AdamState | None = None) -> float:
    """One step on the mean-squared error of a ReLU MLP: the forward pass keeps each layer's input
    and pre-activation for the backward pass; the update is Adam's when ``adam`` is given (its
    moments updated in place), plain SGD otherwise. Updates ``weights`` in place; returns the loss."""
    out, kept = _forward(weights, x, keep=True)
    diff = out - target
    loss = float(np.mean(diff * diff))
    grad = diff * (2 / diff.size)
    grads = []
    for (inp, z), w in zip(reversed(kept), reversed(weights), strict=True):
        grad = grad * (z > 0)
        grads.append(inp.T @ grad)
        grad = grad @ w.T
    if adam is not None:
        adam.step += 1
    for i, (w, g) in enumerate(zip(weights, reversed(grads), strict=True)):
        if adam is None:
            w -= lr * g
        else:
            _adam_update(w, g, adam.m[i], adam.v[i], adam.step, lr)
    return loss


def infer(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP's forward pass, keeping nothing: each activation is freed once the next exists."""
    return _forward(weights, x, keep=False)[0]


def peak_bytes(depth: int, width: int, batch: int, *, training: bool, seed: int = 0,
               resolution: int = 32 * KIB) -> int:
    """Peak bytes that tracemalloc sees allocated while a seeded MLP trains one Adam step (or runs
    one forward pass), counting everything the step needs: the weights, Adam's moments, the input
    (and the target), the kept activations, the gradients and the temporaries. The step is run
    twice and the second is measured (the first also allocates numpy's one-off internals and, for
    Adam, takes the first step). Rounded to whole multiples of ``resolution`` bytes: tracemalloc
    also counts Python's own objects (lists, tuples, array headers), a few KiB of which a few
    hundred bytes vary from run to run and process to process, while numpy's buffers in the
    chapter's runs are whole multiples of 32 KiB."""
    depth = _checks.count("depth", depth)
    width = _checks.count("width", width)
    batch = _checks.count("batch", batch)
    resolution = _checks.count("resolution", resolution)
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        weights = mlp_weights(depth, width, seed)
        rng = np.random.default_rng(seed + 1)
        x = rng.standard_normal((batch, width)).astype(np.float32)
        target = rng.standard_normal((batch, width)).astype(np.float32) if training else None
        adam = AdamState.zeros(weights) if training else None
        peak = 0
        for _ in range(2):
            tracemalloc.reset_peak()
            if training:
                train_step(weights, x, target, adam=adam)
            else:
                infer(weights, x)
            peak = tracemalloc.get_traced_memory()[1] - base
        return resolution * round(peak / resolution)
    finally:
        if not started:
            tracemalloc.stop()


def mlp_model_bytes(depth: int, width: int, batch: int, *, training: bool,
                    itemsize: int = 4) -> dict[str, float]:
    """The chapter's model of :func:`peak_bytes`, part by part, in bytes. Persistent: the weights
    (L·W² values) and, in training, Adam's two moments (2·L·W², the moments of
    :data:`RECIPES` "fp32-adam") and the input and target (2·B·W); inference, the input (B·W).
    At the training peak, during the last update: each layer's kept input and pre-activation
    (2·B·W per layer), every layer's gradient (L·W²), the update's scratch array (W²) and the two
    B×W gradients left from the backward pass. Inference holds, beside the input, at most three
    activations at a time (a layer's input, its pre-activation and its output) once L ≥ 2."""
    depth = _checks.count("depth", depth)
    width = _checks.count("width", width)
    batch = _checks.count("batch", batch)
    w2, bw = width * width, batch * width
    if training:
        r = recipe("fp32-adam")
        parts = {"weights": r.weights / itemsize * depth * w2,
                 "optimizer state": r.moments / itemsize * depth * w2,
                 "gradients": r.grads / itemsize * depth * w2, "activations": 2 * depth * bw,
                 "inputs and temporaries": 2 * bw + w2 + 2 * bw}
    else:
        parts = {"weights": depth * w2, "activations": min(2 * depth, 3) * bw, "inputs and temporaries": bw}
    return {k: float(itemsize * v) for k, v in parts.items()}
