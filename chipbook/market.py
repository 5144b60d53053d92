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
* Serving has two phases [deepseekai2025inference]: prefill reads the prompt in large matrix
  products; decode generates one token per sequence per step and is bound by memory bandwidth
  (the roofline of [pope2022efficiently]); both do 2·N FLOP a token, so their hours add.
* A mixture-of-experts decode step reads every expert some token of the batch is routed to.
* Research compute behind final runs [epoch2026finalruns] enters as an overhead on training.
* Joint uncertainty: first-order variance shares of [saltelli2008global].
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


def decode_utilisation(batch: float, peak_flop_s: float, bandwidth_b_s: float, bytes_per_param: float,
                       *, read_ratio: float = 1.0):
    """Roofline bound on the fraction of peak FLOP/s that batched decoding can use.

    One decode step of a batch of B sequences does 2·N·B FLOP (N active parameters) and must read
    the weights it uses, ``read_ratio``·N of them at ``bytes_per_param`` bytes each, once; the step
    takes at least the longer of the two times, so the utilisation is at most
    min(1, 2·B·bandwidth / (read_ratio·bytes_per_param·peak)) [pope2022efficiently]. A dense model
    reads exactly its weights (``read_ratio`` 1); a mixture-of-experts model reads every expert that
    some token of the batch is routed to (:func:`moe_read_ratio`). KV-cache reads and overheads only
    lower it.
    """
    batch = _checks.positive("batch", batch)
    peak_flop_s = _checks.positive("peak_flop_s", peak_flop_s)
    bandwidth_b_s = _checks.positive("bandwidth_b_s", bandwidth_b_s)
    bytes_per_param = _checks.positive("bytes_per_param", bytes_per_param)
    read_ratio = _checks.positive("read_ratio", read_ratio)
    if np.any(np.asarray(read_ratio) < 1):
        raise ValueError(f"read_ratio must be >= 1 (a step reads the active weights), got {read_ratio!r}")
    intensity = FORWARD_FLOP_PER_PARAM * batch * bandwidth_b_s
    return np.minimum(1.0, intensity / (read_ratio * bytes_per_param * peak_flop_s))


def expert_params(model: Mapping[str, float]) -> float:
    """Parameters in the routed experts of a mixture-of-experts row of data/models.csv: each of the
    ``experts`` experts of each of the ``moe_layers`` layers is a gated (SwiGLU) feed-forward block
    of three d_model × expert_ffn matrices [deepseekai2024deepseekv3]. 0 for a dense model."""
    names = ("moe_layers", "experts", "expert_ffn", "d_model")
    if any(model[k] is None or np.isnan(model[k]) for k in names[:3]):
        return 0.0
    moe_layers, experts, ffn, d_model = (_checks.positive(k, model[k]) for k in names)
    return 3.0 * d_model * ffn * experts * moe_layers


def moe_read_ratio(model: Mapping[str, float], batch: float):
    """Weights one decode step reads over the active weights, for a batch of ``batch`` tokens.

    With E routed experts per layer of which k serve each token, and tokens routed independently
    and evenly, an expert is idle for the whole batch with probability (1 − k/E)^B, so the step
    reads the always-active weights plus the fraction 1 − (1 − k/E)^B of all expert weights. Real
    routers are uneven and correlated, so this is the most a batch can touch. 1 for a dense model.
    """
    batch = _checks.positive("batch", batch)
    experts = expert_params(model)
    active = _checks.positive("active_params", model["active_params"])
    if experts == 0:
        return np.ones_like(np.asarray(batch, dtype=float)) if np.ndim(batch) else 1.0
    share = model["experts_active"] / model["experts"]
    always = active - experts * share
    return (always + experts * (1.0 - (1.0 - share) ** np.asarray(batch, dtype=float))) / active


def implied_utilisation(flop: float, accelerator_hours: float, peak_flop_s: float) -> float:
    """Whole-run utilisation: ``flop`` useful FLOP over what ``accelerator_hours`` hours of chips of
    peak ``peak_flop_s`` could have done. Unlike a measured MFU it counts restarts, failures and
    every stage the hours include."""
    flop = _checks.positive("flop", flop)
    hours = _checks.positive("accelerator_hours", accelerator_hours)
    peak = _checks.positive("peak_flop_s", peak_flop_s)
    return flop / (hours * SECONDS_PER_HOUR * peak)


def serving_utilisation(input_per_output: float, prefill_utilisation: float, decode_utilisation: float):
    """Utilisation of serving per token counted, when each output token comes with
    ``input_per_output`` input tokens: prefill (reading the input, many tokens per pass, a
    compute-bound matrix product) runs at ``prefill_utilisation`` and decode (one token per sequence
    per step, bound by memory) at ``decode_utilisation``. Both phases do 2·N FLOP a token, so the
    hours are the sum of each phase's FLOP over its utilisation and the blend is a harmonic mean:
    (r + 1) / (r / u_prefill + 1 / u_decode)."""
    r = _checks.non_negative("input_per_output", input_per_output)
    u_p = _checks.fraction("prefill_utilisation", prefill_utilisation)
    u_d = _checks.fraction("decode_utilisation", decode_utilisation)
    return (r + 1.0) / (r / u_p + 1.0 / u_d)


def hours_ratio(flop_ratio: float, *, train_utilisation: float, serve_utilisation: float,
                train_overhead: float = 1.0):
    """Inference accelerator-hours over training accelerator-hours, on chips of one peak, from the
    ratio of their FLOP: serving runs at ``serve_utilisation``, training at ``train_utilisation``,
    and ``train_overhead`` (≥ 1) multiplies the final runs to count the experiments behind them."""
    flop_ratio = _checks.non_negative("flop_ratio", flop_ratio)
    u_t = _checks.fraction("train_utilisation", train_utilisation)
    u_s = _checks.fraction("serve_utilisation", serve_utilisation)
    o = _overhead(train_overhead)
    return flop_ratio * u_t / (o * u_s)


def _overhead(train_overhead: float):
    train_overhead = _checks.positive("train_overhead", train_overhead)
    if np.any(np.asarray(train_overhead) < 1):
        raise ValueError(f"train_overhead must be >= 1, got {train_overhead!r}")
    return train_overhead


def crossover_days(
    params: float,
    train_tokens: float,
    tokens_per_day: float,
    *,
    train_utilisation: float = 1.0,
    serve_utilisation: float = 1.0,
    train_overhead: float = 1.0,
) -> float:
    """Days of serving ``tokens_per_day`` after which cumulative inference equals training.

    With both utilisations 1 this compares FLOP (3·D / T per day); with measured utilisations it
    compares accelerator-hours on the same chips: serving at a lower utilisation than training
    crosses over sooner by the factor train_utilisation / serve_utilisation. ``train_overhead``
    (≥ 1) multiplies the final run to count the research compute behind it.
    """
    params = _checks.positive("params", params)  # it cancels, but None must not pass silently
    tokens_per_day = _checks.positive("tokens_per_day", tokens_per_day)
    train_utilisation = _checks.fraction("train_utilisation", train_utilisation)
    serve_utilisation = _checks.fraction("serve_utilisation", serve_utilisation)
    train_overhead = _overhead(train_overhead)
    flop_days = breakeven_tokens(train_tokens, params) / tokens_per_day
    return train_overhead * flop_days * serve_utilisation / train_utilisation


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
    train_overhead = _overhead(train_overhead)
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


def inference_shaped_share(hours_ratio: float, rollout_share: float):
    """Share of all accelerator-hours that runs inference-shaped work (forward passes that generate
    tokens) when serving takes ``hours_ratio`` times the training hours and the fraction
    ``rollout_share`` of the training hours is reinforcement-learning rollouts, which generate
    tokens as serving does: (ratio + rollout_share) / (ratio + 1)."""
    ratio = _checks.non_negative("hours_ratio", hours_ratio)
    f = _checks.non_negative("rollout_share", rollout_share)
    if np.any(np.asarray(f) > 1):
        raise ValueError(f"rollout_share must be in [0, 1], got {rollout_share!r}")
    return (ratio + f) / (ratio + 1.0)


def inference_share(ratio: float) -> float:
    """Share of the total that goes to inference when inference is ``ratio`` times training."""
    ratio = _checks.non_negative("ratio", ratio)
    return ratio / (1.0 + ratio)


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
    served_tokens: float         # tokens the population serves in the year
    train_total: np.ndarray      # (draws,) training FLOP of the whole population
    serve_total: np.ndarray      # (draws,) inference FLOP of the whole population
    params: np.ndarray           # (models,) active parameters of the first draw's models
    train_flop: np.ndarray       # (models,) their training FLOP
    serve_flop: np.ndarray       # (models,) their inference FLOP


def _log_uniform_moment(low: float, high: float, power: float) -> float:
    """E[X^power] for X log-uniform on [low, high]."""
    if high == low:
        return low**power
    span = np.log(high / low)
    return (high**power - low**power) / (power * span) if power else 1.0


def population_demand(n_models: int, served_tokens: float, *, demand_elasticity: float = 0.0,
                      reference_models: float | None = None) -> float:
    """Tokens a population of ``n_models`` models serves in a year: ``served_tokens`` at
    ``reference_models`` models, scaled by (n_models / reference_models)^demand_elasticity.

    Elasticity 0 is a fixed demand shared by however many models are trained (each new model
    takes users from the others); 1 is demand that grows with the models, as when each bespoke
    model serves users who would not otherwise have used one."""
    n_models = _checks.count("n_models", n_models)
    served_tokens = _checks.positive("served_tokens", served_tokens)
    theta = _checks.non_negative("demand_elasticity", demand_elasticity)
    if theta > 1:
        raise ValueError(f"demand_elasticity must be in [0, 1], got {demand_elasticity!r}")
    if theta == 0:
        return served_tokens
    if reference_models is None:
        raise ValueError("reference_models is required when demand_elasticity is not 0")
    reference_models = _checks.positive("reference_models", reference_models)
    return served_tokens * (n_models / reference_models) ** theta


def models_in_range(count_above: float, threshold_flop: float,
                    train_flop_range: tuple[float, float]) -> float:
    """Models a year in ``train_flop_range`` when ``count_above`` of them lie above ``threshold_flop``
    and training compute is log-uniform over the range: the count divided by the share of the log
    range above the threshold."""
    count_above = _checks.positive("count_above", count_above)
    low, high = _ordered("train_flop_range", train_flop_range)
    threshold = _checks.positive("threshold_flop", threshold_flop)
    if not low <= threshold < high:
        raise ValueError(f"threshold_flop must lie in train_flop_range [low, high), got {threshold_flop!r}")
    return count_above * np.log(high / low) / np.log(high / threshold)


def expected_population_ratio(n_models: int, served_tokens: float, *,
                              train_flop_range: tuple[float, float],
                              tokens_per_param_range: tuple[float, float]) -> float:
    """Closed form of :func:`simulate_population` when usage is unrelated to size (correlation 0):
    the ratio of expectations 2·U·E[N] / (K·E[C]).

    Training compute C and tokens per parameter r = D/N are log-uniform and independent, so
    N = (C / 6r)^½ and E[N] = E[C^½]·E[r^−½]/√6. The ratio falls as 1/K because the total demand
    U is held fixed: that is the assumption, not a finding."""
    n_models = _checks.count("n_models", n_models)
    served_tokens = _checks.positive("served_tokens", served_tokens)
    lo_c, hi_c = _ordered("train_flop_range", train_flop_range)
    lo_r, hi_r = _ordered("tokens_per_param_range", tokens_per_param_range)
    mean_n = (_log_uniform_moment(lo_c, hi_c, 0.5) * _log_uniform_moment(lo_r, hi_r, -0.5)
              / np.sqrt(TRAINING_FLOP_PER_PARAM))
    return FORWARD_FLOP_PER_PARAM * served_tokens * mean_n / (n_models * _log_uniform_moment(lo_c, hi_c, 1.0))


def _ordered(name: str, value: tuple[float, float]) -> tuple[float, float]:
    low, high = _range(name, value)
    if low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return low, high


def simulate_population(
    n_models: int,
    concentration: float,
    *,
    served_tokens: float,
    train_flop_range: tuple[float, float],
    tokens_per_param_range: tuple[float, float],
    size_usage_correlation: float = 0.0,
    demand_elasticity: float = 0.0,
    reference_models: float | None = None,
    draws: int = 200,
    seed: int = 0,
) -> Population:
    """Seeded Monte Carlo: the inference-to-training FLOP ratio of a year's population of models.

    Each draw trains ``n_models`` models. Each model's training compute C is drawn log-uniformly
    from ``train_flop_range`` and its tokens per parameter r = D/N from ``tokens_per_param_range``
    (how far past compute-optimal it is trained); then N = (C/6r)^½ active parameters and D = r·N
    tokens. The year's demand (:func:`population_demand`) is shared by a Zipf law: the model ranked
    r gets a share ∝ r^(−concentration). Models are ranked by a score whose correlation with their
    standardised log size is ``size_usage_correlation`` in [−1, 1] (1: the biggest model is the most
    used; −1: the smallest is).
    """
    n_models = _checks.count("n_models", n_models)
    draws = _checks.count("draws", draws)
    concentration = _checks.non_negative("concentration", concentration)
    rho = _checks.finite("size_usage_correlation", size_usage_correlation)
    if abs(rho) > 1:
        raise ValueError(f"size_usage_correlation must be in [-1, 1], got {size_usage_correlation!r}")
    seed = _checks.count("seed", seed, minimum=0)
    lo_c, hi_c = _ordered("train_flop_range", train_flop_range)
    lo_r, hi_r = _ordered("tokens_per_param_range", tokens_per_param_range)
    demand = population_demand(n_models, served_tokens, demand_elasticity=demand_elasticity,
                               reference_models=reference_models)

    rng = np.random.default_rng(seed)
    shape = (draws, n_models)
    log_c = rng.uniform(np.log(lo_c), np.log(hi_c), shape)
    log_r = rng.uniform(np.log(lo_r), np.log(hi_r), shape)
    log_n = 0.5 * (log_c - log_r - np.log(TRAINING_FLOP_PER_PARAM))
    params = np.exp(log_n)
    train = np.exp(log_c)
    # log N is half the difference of two independent uniforms: its mean and spread are known
    mean = 0.5 * ((np.log(lo_c) + np.log(hi_c)) / 2 - (np.log(lo_r) + np.log(hi_r)) / 2
                  - np.log(TRAINING_FLOP_PER_PARAM))
    spread = 0.5 * np.sqrt((np.log(hi_c / lo_c) ** 2 + np.log(hi_r / lo_r) ** 2) / 12)
    size_z = (log_n - mean) / spread if spread > 0 else np.zeros(shape)
    score = rho * size_z + np.sqrt(1 - rho**2) * rng.standard_normal(shape)
    order = np.argsort(-score, axis=1, kind="stable")  # order[d, r] = the model ranked r + 1 in draw d
    rank = np.empty(shape, dtype=np.int64)
    np.put_along_axis(rank, order, np.arange(1, n_models + 1)[None, :], axis=1)  # 1 = most used
    weight = rank.astype(float) ** -concentration
    usage = demand * weight / weight.sum(axis=1, keepdims=True)

    serve = FORWARD_FLOP_PER_PARAM * params * usage
    train_total, serve_total = train.sum(axis=1), serve.sum(axis=1)
    return Population(
        ratio=serve_total / train_total,
        breakeven_share=(serve > train).mean(axis=1),
        served_tokens=float(demand),
        train_total=train_total,
        serve_total=serve_total,
        params=params[0],
        train_flop=train[0],
        serve_flop=serve[0],
    )


def joint_sample(f: Callable[..., np.ndarray], ranges: Mapping[str, tuple[float, float]], *,
                 draws: int = 20000, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw every input of ``f`` together, each log-uniformly and independently from its
    (low, high) range in ``ranges``, and evaluate ``f`` (vectorised) on the draws. Returns the
    inputs and the outputs."""
    draws = _checks.count("draws", draws)
    seed = _checks.count("seed", seed, minimum=0)
    if not ranges:
        raise ValueError("ranges must name at least one input")
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, value in ranges.items():
        low, high = _ordered(name, value)
        inputs[name] = np.exp(rng.uniform(np.log(low), np.log(high), draws))
    return inputs, np.asarray(f(**inputs), dtype=float)


def variance_shares(inputs: Mapping[str, np.ndarray], output: np.ndarray, *, bins: int = 20) -> pd.Series:
    """Each input's first-order share of the variance of log(output) [saltelli2008global]:
    Var(E[log y | x_i]) / Var(log y), with the conditional mean estimated in ``bins`` bins of equal
    count of x_i. The shares sum to 1 when the inputs act additively on log y and to less when they
    interact. Sorted, largest first."""
    bins = _checks.count("bins", bins, minimum=2)
    log_y = np.log(_checks.positive("output", np.asarray(output, dtype=float)))
    if bins > log_y.size:
        raise ValueError(f"bins must be at most the number of draws ({log_y.size}), got {bins}")
    total = log_y.var()
    if total == 0:
        raise ValueError("output does not vary: no variance to share")
    shares = {}
    for name, x in inputs.items():
        x = np.asarray(x, dtype=float)
        if x.shape != log_y.shape:
            raise ValueError(f"input {name!r} has {x.size} draws, output has {log_y.size}")
        rank = np.argsort(np.argsort(x, kind="stable"), kind="stable")
        which = np.minimum(rank * bins // x.size, bins - 1)
        means = np.bincount(which, weights=log_y, minlength=bins) / np.bincount(which, minlength=bins)
        shares[name] = float(means[which].var() / total)
    return pd.Series(shares, name="variance share").sort_values(ascending=False, kind="stable")
