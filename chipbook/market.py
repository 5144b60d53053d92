"""Compute accounting for training versus serving a language model (chapter "Market size").

Sources of the formulas:

* Training a dense transformer costs about 6 FLOP per parameter per token (2 forward, 4 backward) and
  a forward pass about 2 FLOP per parameter per token [kaplan2020scaling] (their Table 1 and
  section 2.1). For a mixture-of-experts model, ``params`` is the count of parameters *active* per
  token.
* Attention over a context adds, per layer and per token, a product of the query with every key
  (``2·context·d_attn`` FLOP) and of the attention weights with every value (the same again), so
  ``4·layers·d_attn·context`` forward. Over a causal sequence of length T the mean context is
  (T+1)/2, which gives Kaplan et al.'s ``2·n_layer·n_ctx·d_attn``; counting the full T, as PaLM's
  utilisation accounting does [chowdhery2022palm], gives ``12·L·H·Q·T`` for training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chipbook import _checks

SECONDS_PER_HOUR = 3600.0
FORWARD_FLOP_PER_PARAM = 2.0
TRAINING_FLOP_PER_PARAM = 6.0  # forward 2 + backward 4


@dataclass(frozen=True)
class Attention:
    """The shape that sets attention's cost: ``layers`` layers, each of width ``d_attn``
    (heads × head dimension), each token attending to ``context`` tokens on average."""

    layers: int
    d_attn: int
    context: float

    def __post_init__(self) -> None:
        _checks.count("layers", self.layers)
        _checks.count("d_attn", self.d_attn)
        _checks.positive("context", self.context)

    @classmethod
    def causal(cls, layers: int, d_attn: int, seq_len: int) -> Attention:
        """Attention over full causal sequences of ``seq_len`` tokens: mean context (seq_len+1)/2."""
        _checks.count("seq_len", seq_len)
        return cls(layers, d_attn, (seq_len + 1) / 2)

    def forward_flop_per_token(self) -> float:
        """Forward FLOP per token of the two context products, Q·Kᵀ and A·V."""
        return 4.0 * self.layers * self.d_attn * self.context


def _shape(model: Mapping[str, float]) -> tuple[int, int] | None:
    """(layers, attention width) of a row of data/models.csv, or None where not published."""
    values = [model[k] for k in ("layers", "heads", "head_dim")]
    if any(v is None or np.isnan(v) for v in values):
        return None
    layers, heads, head_dim = (int(v) for v in values)
    return layers, heads * head_dim


def training_attention(model: Mapping[str, float]) -> Attention | None:
    """Attention of training ``model`` (a row of data/models.csv) on causal sequences of its
    pre-training context; None where its shape or context is not published."""
    shape = _shape(model)
    if shape is None or model["context"] is None or np.isnan(model["context"]):
        return None
    return Attention.causal(*shape, int(model["context"]))


def serving_attention(model: Mapping[str, float], context: float) -> Attention | None:
    """Attention of serving ``model`` (a row of data/models.csv) with each token attending to
    ``context`` tokens on average; None where its shape is not published."""
    shape = _shape(model)
    return None if shape is None else Attention(*shape, context)


def _per_token(params: float, flop_per_param: float, attention: Attention | None, passes: float):
    params = _checks.positive("params", params)
    extra = 0.0 if attention is None else passes * attention.forward_flop_per_token()
    return flop_per_param * params + extra


def training_flops(params: float, tokens: float, attention: Attention | None = None) -> float:
    """FLOP to train a model of ``params`` (active) parameters on ``tokens`` tokens: ≈ 6·N·D,
    plus three times the forward attention FLOP when ``attention`` is given."""
    tokens = _checks.positive("tokens", tokens)
    return _per_token(params, TRAINING_FLOP_PER_PARAM, attention, 3.0) * tokens


def inference_flops(params: float, tokens: float, attention: Attention | None = None) -> float:
    """FLOP to process ``tokens`` tokens in inference: ≈ 2·N per token, plus the attention FLOP of
    a token that attends to ``attention.context`` tokens when ``attention`` is given."""
    tokens = _checks.non_negative("tokens", tokens)
    return _per_token(params, FORWARD_FLOP_PER_PARAM, attention, 1.0) * tokens


def breakeven_tokens(
    train_tokens: float,
    params: float | None = None,
    *,
    train_attention: Attention | None = None,
    serve_attention: Attention | None = None,
) -> float:
    """Tokens a model must serve before its inference FLOP equal its training FLOP.

    Without attention terms this is exactly 3·D whatever the model's size (6·N·D = 2·N·T); with
    them, ``params`` is needed.
    """
    train_tokens = _checks.positive("train_tokens", train_tokens)
    if params is None:
        if train_attention is not None or serve_attention is not None:
            raise ValueError("params is required when an attention term is given")
        return TRAINING_FLOP_PER_PARAM / FORWARD_FLOP_PER_PARAM * train_tokens
    return training_flops(params, train_tokens, train_attention) / inference_flops(
        params, 1.0, serve_attention
    )


def gpu_hours(flop: float, peak_flop_s: float, utilisation: float) -> float:
    """Accelerator-hours to execute ``flop`` FLOP on chips of peak ``peak_flop_s`` FLOP/s that
    sustain the fraction ``utilisation`` of that peak."""
    flop = _checks.non_negative("flop", flop)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    utilisation = _checks.fraction("utilisation", utilisation)
    return flop / (peak_flop_s * utilisation) / SECONDS_PER_HOUR


def decode_utilisation(batch: float, peak_flop_s: float, bandwidth_b_s: float, bytes_per_param: float):
    """Roofline bound on the fraction of peak FLOP/s that batched decoding can use.

    One decode step of a batch of B sequences does 2·N·B FLOP and must read the N weights
    (N·bytes_per_param bytes) once; the step takes at least the longer of the two times, so the
    utilisation is at most min(1, 2·B·bandwidth / (bytes_per_param·peak)). KV-cache reads and
    overheads only lower it [pope2022efficiently].
    """
    batch = _checks.positive("batch", batch)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    bandwidth_b_s = _checks.positive("bandwidth_b_s", bandwidth_b_s)
    bytes_per_param = _checks.positive("bytes_per_param", bytes_per_param)
    return np.minimum(1.0, FORWARD_FLOP_PER_PARAM * batch * bandwidth_b_s / (bytes_per_param * peak_flop_s))


def crossover_days(
    params: float,
    train_tokens: float,
    tokens_per_day: float,
    *,
    train_utilisation: float = 1.0,
    serve_utilisation: float = 1.0,
) -> float:
    """Days of serving ``tokens_per_day`` after which cumulative inference equals training.

    With both utilisations 1 this compares FLOP (3·D / T per day); with measured utilisations it
    compares accelerator-hours on the same chips: serving at a lower utilisation than training
    crosses over sooner by the factor train_utilisation / serve_utilisation.
    """
    params = _checks.positive("params", params)  # it cancels, but None must not pass silently
    tokens_per_day = _checks.positive("tokens_per_day", tokens_per_day)
    train_utilisation = _checks.fraction("train_utilisation", train_utilisation)
    serve_utilisation = _checks.fraction("serve_utilisation", serve_utilisation)
    flop_days = breakeven_tokens(train_tokens, params) / tokens_per_day
    return flop_days * serve_utilisation / train_utilisation


def spend_ratio(
    served_tokens: float,
    params: float,
    train_tokens: float,
    *,
    train_utilisation: float,
    serve_utilisation: float,
    price_ratio: float = 1.0,
    train_overhead: float = 1.0,
    serve_attention: Attention | None = None,
    train_attention: Attention | None = None,
) -> float:
    """Inference spend over training spend for one model over its life.

    Spend is accelerator-hours times price: FLOP / (peak · utilisation) · price. The peak cancels
    when both run on chips of the same peak; ``price_ratio`` is the price of an inference
    accelerator-hour over a training one. ``train_overhead`` multiplies the final run's training
    compute to count the experiments, ablations and failed runs that led to it (≥ 1).
    """
    served_tokens = _checks.non_negative("served_tokens", served_tokens)
    train_tokens = _checks.positive("train_tokens", train_tokens)  # named here, not as "tokens"
    price_ratio = _checks.positive("price_ratio", price_ratio)
    train_overhead = _checks.positive("train_overhead", train_overhead)
    if train_overhead < 1:
        raise ValueError(f"train_overhead must be >= 1, got {train_overhead!r}")
    train = train_overhead * training_flops(params, train_tokens, train_attention) / _checks.fraction(
        "train_utilisation", train_utilisation
    )
    serve = inference_flops(params, served_tokens, serve_attention) / _checks.fraction(
        "serve_utilisation", serve_utilisation
    )
    return serve * price_ratio / train


def served_tokens_for_ratio(target: float, params: float, train_tokens: float, **spend) -> float:
    """Tokens a model must serve over its life for inference spend to be ``target`` times its
    training spend (``spend`` takes the keyword arguments of :func:`spend_ratio`). The ratio is
    linear in the tokens served, so this inverts it exactly."""
    target = _checks.positive("target", target)
    return target / spend_ratio(1.0, params, train_tokens, **spend)


def inference_share(ratio: float) -> float:
    """Share of the total that goes to inference when inference is ``ratio`` times training."""
    ratio = _checks.non_negative("ratio", ratio)
    return ratio / (1.0 + ratio)


def sensitivity(
    f: Callable[..., float], base: Mapping[str, float], ranges: Mapping[str, tuple[float, float]]
) -> pd.DataFrame:
    """One-at-a-time sensitivity of ``f(**base)`` to each assumption (the data of a tornado chart).

    For each name in ``ranges`` the output is recomputed with that input at its low and at its high
    value, the others at ``base``. Rows are sorted by the width of the swing, widest first.
    """
    unknown = set(ranges) - set(base)
    if unknown:
        raise ValueError(f"ranges names inputs not in base: {sorted(unknown)}")
    centre = f(**base)
    rows = []
    for name, (low, high) in ranges.items():
        out_low = f(**{**base, name: low})
        out_high = f(**{**base, name: high})
        rows.append({"input": name, "low": low, "high": high, "base": base[name],
                     "at_low": out_low, "at_high": out_high, "swing": abs(out_high - out_low)})
    table = pd.DataFrame(rows).sort_values("swing", ascending=False, ignore_index=True)
    table.attrs["centre"] = centre
    return table


def _range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    return _checks.positive(name, low), _checks.positive(name, high)


@dataclass(frozen=True)
class Population:
    """One Monte Carlo run over populations of models (see :func:`simulate_population`)."""

    ratio: np.ndarray            # (draws,) inference FLOP / training FLOP of the whole population
    breakeven_share: np.ndarray  # (draws,) share of models whose own inference passes their training
    params: np.ndarray           # (models,) active parameters of the first draw's models
    train_flop: np.ndarray       # (models,) their training FLOP
    serve_flop: np.ndarray       # (models,) their inference FLOP


def simulate_population(
    n_models: int,
    concentration: float,
    *,
    served_tokens: float,
    draws: int = 200,
    seed: int = 0,
    params_range: tuple[float, float] = (1e9, 5e11),
    train_tokens_range: tuple[float, float] = (1e12, 3e13),
    size_usage_correlation: float = 0.5,
) -> Population:
    """Seeded Monte Carlo: the inference-to-training compute ratio of a population of models.

    Each draw makes ``n_models`` models with active parameters and training tokens drawn
    log-uniformly from the given ranges. Their users ask for ``served_tokens`` tokens in all, shared
    by a Zipf law: the model ranked r gets a share ∝ r^(−concentration) (0: every model used alike;
    larger: usage piles onto the top models). Models are ranked by a score whose correlation with
    their standardised log size is ``size_usage_correlation`` (0: usage unrelated to size; 1: the
    biggest model is always the most used).

    The default ranges are round illustrative values; the book's chapter passes the ranges of the
    real models in data/models.csv.
    """
    n_models = _checks.count("n_models", n_models)
    draws = _checks.count("draws", draws)
    concentration = _checks.non_negative("concentration", concentration)
    served_tokens = _checks.positive("served_tokens", served_tokens)
    rho = _checks.non_negative("size_usage_correlation", size_usage_correlation)
    if rho > 1:
        raise ValueError(f"size_usage_correlation must be in [0, 1], got {size_usage_correlation!r}")
    seed = _checks.count("seed", seed, minimum=0)
    lo_n, hi_n = _range("params_range", params_range)
    lo_d, hi_d = _range("train_tokens_range", train_tokens_range)
    if lo_n > hi_n or lo_d > hi_d:
        raise ValueError("params_range and train_tokens_range must be (low, high) with low <= high")

    rng = np.random.default_rng(seed)
    shape = (draws, n_models)
    log_n = rng.uniform(np.log(lo_n), np.log(hi_n), shape)
    params = np.exp(log_n)
    tokens = np.exp(rng.uniform(np.log(lo_d), np.log(hi_d), shape))
    spread = (np.log(hi_n) - np.log(lo_n)) / np.sqrt(12)  # std of a uniform on the log range
    size_z = (log_n - (np.log(lo_n) + np.log(hi_n)) / 2) / spread if spread > 0 else np.zeros(shape)
    score = rho * size_z + np.sqrt(1 - rho**2) * rng.standard_normal(shape)
    order = np.argsort(-score, axis=1)  # order[d, r] = the model ranked r + 1 in draw d
    rank = np.empty(shape, dtype=np.int64)
    np.put_along_axis(rank, order, np.arange(1, n_models + 1)[None, :], axis=1)  # 1 = most used
    weight = rank.astype(float) ** -concentration
    usage = served_tokens * weight / weight.sum(axis=1, keepdims=True)

    train = TRAINING_FLOP_PER_PARAM * params * tokens
    serve = FORWARD_FLOP_PER_PARAM * params * usage
    return Population(
        ratio=serve.sum(axis=1) / train.sum(axis=1),
        breakeven_share=(serve > train).mean(axis=1),
        params=params[0],
        train_flop=train[0],
        serve_flop=serve[0],
    )
