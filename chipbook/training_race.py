"""What it would take to win training: the memory, networking and numerics chapters' models composed.

Nothing here re-implements a per-chip figure: the chips needed to hold a run and to compute it come
from :mod:`chipbook.memory` (``chips_needed``, ``chips_for_compute``, ``layout_bytes_per_chip``), the
traffic of each tier of a parallel layout and the step's efficiency from :mod:`chipbook.network`
(``layout_traffic``, ``TierTraffic.efficiency``), the decode bound from
:func:`chipbook.memory.decode_tokens_per_s`. New here: the search for a layout that fits, the rule
that names what binds, and the break-even of a switch of training hardware
(:func:`required_speedup`), a net-present-value-free payback rule written for this book.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chipbook import _checks, data, market, memory, network

#: What can bind a training run on a system, in the order the rule tests them.
BINDS = ("numerics", "peak not published", "network not published", "batch", "capacity", "compute",
         "scale-up bandwidth", "scale-out bandwidth")
#: A step that spends less than this fraction computing (more time waiting on a link than computing)
#: is said to be bound by its network.
NETWORK_BOUND_BELOW = 0.5
#: Tensor parallelism is kept inside the scale-up domain and at most this wide (Megatron's practice,
#: Llama 3's TP8 [dubey2024llama]).
MAX_TENSOR = 8
#: Pipelines are at most this deep (Llama 3 405B's PP16 [dubey2024llama]): pipeline bubbles are not
#: modelled, so without a cap the search would favour ever deeper pipelines for free.
MAX_PIPELINE = 16
#: The gradient all-reduce hides behind the backward pass, two thirds of the compute [li2020pytorch].
OVERLAP = 2 / 3
RECIPE = "mixed-adam"


@dataclass(frozen=True)
class Run:
    """A reference training run: ``flop`` FLOP on a dense Llama-shaped model (``params`` parameters,
    ``layers`` layers of width ``d_model``, ``heads``/``kv_heads`` attention heads, SwiGLU width
    ``ffn``, vocabulary ``vocab``) trained on sequences of ``seq`` tokens, ``tokens_per_step`` a step."""

    name: str
    flop: float
    params: float
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    seq: int
    tokens_per_step: float

    def __post_init__(self) -> None:
        for name in ("flop", "params", "tokens_per_step"):
            _checks.positive(name, getattr(self, name))
        for name in ("layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "seq"):
            _checks.count(name, getattr(self, name))

    def activations(self, tensor: int, recompute: str = "none") -> float:
        """Bytes of activations one micro-batch of one sequence keeps on one chip of a tensor group
        of ``tensor`` chips, with the fp32 logits (:func:`chipbook.memory.llama_activation_bytes`
        with ``recompute`` "none" or "full", :func:`chipbook.memory.logits_bytes`)."""
        return (memory.llama_activation_bytes(self.seq, 1, self.d_model, self.heads, self.kv_heads, self.ffn,
                                              self.layers, recompute=recompute, tensor_parallel=tensor)
                + memory.logits_bytes(self.seq, 1, self.vocab, tensor_parallel=tensor))

    def state(self) -> tuple[float, float]:
        """(fast, slow) bytes of the whole run with one sequence in flight: weights, gradients and
        activations, which every pass reads, and the optimizer state, touched once a step."""
        r = memory.recipe(RECIPE)
        return self.params * (r.weights + r.grads) + self.activations(1), self.params * r.optimizer


@dataclass(frozen=True)
class System:
    """A training system: a chip (a row of data/chips.csv), the link of its scale-up domain and the
    link of its scale-out network (rows of data/links.csv, or None where it has none), and the
    16-bit (or narrower) format it trains in (``"none published"`` where it has none)."""

    name: str
    chip: Mapping
    scale_up: Mapping | None
    scale_out: Mapping | None
    training_format: str


def _row(table: pd.DataFrame, key) -> dict | None:
    """Row ``key`` of ``table`` (indexed by its first column) as a dict, blanks as None; None for a
    blank key."""
    if key is None or pd.isna(key) or key == "":
        return None
    if key not in table.index:
        raise ValueError(f"{table.index.name} must be one of {', '.join(table.index)}, got {key!r}")
    row = {table.index.name: key, **table.loc[key].to_dict()}
    return {k: None if not isinstance(v, str) and pd.isna(v) else v for k, v in row.items()}


#: The columns of a chip row (data/chips.csv) that a challenger's row (data/challengers.csv) carries.
_CHIP_COLUMNS = ("chip", "vendor", "bf16_dense_tflop_s", "hbm_gb", "hbm_bandwidth_gb_s", "sram_mb",
                 "sram_bandwidth_gb_s", "ddr_gb", "ddr_bandwidth_gb_s")


def _challenger_chip(row: Mapping) -> dict:
    """A chip row in data/chips.csv's columns from a row of data/challengers.csv (blank where the
    challengers' file has no such column)."""
    return {c: None if row.get(c) is None or (not isinstance(row.get(c), str) and pd.isna(row.get(c)))
            else row.get(c) for c in _CHIP_COLUMNS}


def systems() -> dict[str, System]:
    """The systems of data/training_systems.csv with their chips' and links' rows, then the newer
    ones of data/challengers.csv (which all train in BF16)."""
    chips = data.load("chips").set_index("chip")
    links = data.load("links").set_index("link")
    out = {s.system: System(s.system, _row(chips, s.chip), _row(links, s.scale_up_link),
                            _row(links, s.scale_out_link), s.training_format)
           for s in data.load("training_systems").itertuples()}
    for row in data.load("challengers").to_dict("records"):
        out[row["system"]] = System(row["system"], _challenger_chip(row), _row(links, row["scale_up_link"]),
                                    _row(links, row["scale_out_link"]), "bf16")
    return out


def _bandwidth(link: Mapping | None) -> float:
    """Per-direction bytes/s of a link row, the vendor's peak; NaN where it has none or none is
    published. The measured bandwidths of data/links.csv (``effective_gb_s``) exist for NVIDIA's links
    only, so using them would compare NVIDIA measured with the others' peaks; the calibration of
    :func:`calibrated_utilisation` absorbs the H100's gap between peak and measured instead."""
    if link is None:
        return math.nan
    value = link["gb_s_per_direction"]
    return math.nan if value is None else float(value) * 1e9


def _domain(link: Mapping | None) -> float:
    """Chips in a link's domain; inf where the row gives none (a switched or direct network)."""
    if link is None or link["domain_chips"] is None or math.isnan(float(link["domain_chips"])):
        return math.inf
    return float(link["domain_chips"])


def peak_flop_s(chip: Mapping) -> float:
    """Dense 16-bit peak of a chip row in FLOP/s; NaN where not published."""
    value = chip["bf16_dense_tflop_s"]
    return math.nan if value is None else float(value) * 1e12


@dataclass(frozen=True)
class Outcome:
    """What :func:`train` finds for one run on one system. Times in days; NaN where not computed."""

    system: str
    chips_to_hold: float
    chips_for_compute: float
    chips: float
    layout: str
    bytes_per_chip: float
    tensor_break_even: float
    data_break_even: float
    efficiency: float
    days: float
    binds: str


def share_bytes(run: Run, layout: memory.Layout, recompute: str = "none") -> dict[str, float]:
    """Bytes of each part of the run one chip of ``layout`` holds (weights, gradients, optimizer
    state, activations: :func:`chipbook.memory.layout_bytes_per_chip`), the activations those of the
    fullest pipeline stage with Llama 3's uneven split (:func:`chipbook.memory.first_stage_share`), of no
    more micro-batches than the fullest replica has (one sequence each; the step's sequences rounded up
    over the replicas)."""
    act = run.activations(layout.tensor, recompute) * memory.first_stage_share(run.layers, layout.pipeline,
                                                                              layout.chunks)
    return memory.layout_bytes_per_chip(run.params, RECIPE, layout, activations_per_microbatch=act,
                                        microbatches=math.ceil(run.tokens_per_step / (layout.data * run.seq)))


def _fits(run: Run, chip: Mapping, layout: memory.Layout, recompute: str,
          headroom: float = 1.0) -> tuple[bool, float]:
    """Whether one chip of ``layout`` holds its share in ``headroom`` of each tier, and that share in
    bytes: weights, gradients and activations in the fast tiers, the optimizer state anywhere."""
    parts = share_bytes(run, layout, recompute)
    fast = headroom * sum(memory.tier_bytes(chip, t) for t in memory.FAST_TIERS)
    total = headroom * sum(memory.tier_bytes(chip, t) for t in memory.TIERS)
    need_fast = parts["weights"] + parts["gradients"] + parts["activations"]
    need = need_fast + parts["optimizer state"]
    return need_fast <= fast and need <= total, need


def _candidates(run: Run, chips: float, tensor: int):
    """Layouts of ``chips`` chips: tensor × pipeline × data, pipelines of powers of two up to the
    layer count and :data:`MAX_PIPELINE`, at least one sequence per data-parallel replica, ZeRO
    stage 1 then 3."""
    pipeline = 1
    while pipeline <= min(run.layers, MAX_PIPELINE):
        data = int(chips // (tensor * pipeline))
        if data >= 1 and run.tokens_per_step / data >= run.seq:
            for zero in (1, 3):
                yield memory.Layout(tensor=tensor, pipeline=pipeline, data=data, zero_stage=zero,
                                    in_flight=pipeline)
        pipeline *= 2


#: Activation recomputation, tried in this order: none, then full recomputation (the forward pass
#: twice) [korthikanti2022reducing]. Selective recomputation is not tried: the memory chapter's Llama
#: activation count (:func:`chipbook.memory.llama_activation_bytes`) has no selective mode.
RECOMPUTE = ("none", "full")


def multislice_bandwidth(dp: int, dp_per_slice: int, *, slice_b_s: float, network_b_s: float) -> float:
    """Effective per-direction bandwidth (bytes/s) of a data-parallel all-reduce over ``dp`` replicas
    done hierarchically, as multislice TPU training does it: reduce-scatter and all-gather inside each
    slice of ``dp_per_slice`` replicas over the slice's links (``slice_b_s``), and an all-reduce of
    the 1/``dp_per_slice`` shard across the k = dp/dp_per_slice slices over the data-centre network
    (``network_b_s``). Per chip that sends 2(d−1)/d·S over the slice links and 2(k−1)/k·S/d over the
    network, against the 2(dp−1)/dp·S a flat all-reduce counts, so the flat bytes over this bandwidth
    take the hierarchical time (the two phases are not overlapped)."""
    dp = _checks.count("dp", dp)
    inner = min(_checks.count("dp_per_slice", dp_per_slice), dp)
    slice_b_s = _checks.positive("slice_b_s", slice_b_s)
    network_b_s = _checks.positive("network_b_s", network_b_s)
    if dp == 1:
        return slice_b_s
    slices = dp / inner
    seconds = (inner - 1) / inner / slice_b_s + (slices - 1) / slices / inner / network_b_s
    return (dp - 1) / dp / seconds


def train(run: Run, system: System, *, days: float, utilisation: float, overlap: float = OVERLAP,
          headroom: float = 1.0) -> Outcome:
    """Time to train ``run`` on ``system`` and what binds it.

    1. Chips to hold the run (:func:`chipbook.memory.chips_needed`, every tier) and chips to compute
       it in ``days`` at ``utilisation`` (a compute-only utilisation: the network's cost is added in
       step 4) of the dense 16-bit peak (:func:`chipbook.memory.chips_for_compute`); the run gets the
       larger count (a system with no scale-out network in the book's data cannot grow beyond one
       scale-up domain, and is not timed if it would need to).
    2. Tensor parallelism inside the scale-up domain, at most :data:`MAX_TENSOR` wide; of the layouts
       of :func:`_candidates` whose share (:func:`share_bytes`) fits ``headroom`` of each chip's
       memory, with each mode of
       :data:`RECOMPUTE` (full recomputation costs 8·N FLOP a token instead of 6·N,
       :func:`chipbook.memory.training_flop_per_token`, so the useful FLOP run at 6/8 of
       ``utilisation``; the forward all-reduces it repeats are not counted), the one with the fastest
       step.
    3. Each tier's traffic (:func:`chipbook.network.layout_traffic`, ZeRO stage 3's gathers once per
       one-sequence micro-batch): the tensor all-reduces on the scale-up link, pipeline
       sends and the gradient's all-reduce on the scale-out link (the scale-up link where the system
       has no other; hierarchically, :func:`multislice_bandwidth`, where the scale-up fabric is a
       torus of slices joined by a data-centre network).
    4. Step efficiency :meth:`chipbook.network.TierTraffic.efficiency` (the gradient hidden behind
       ``overlap`` of the compute), and days = F / (chips · peak · u · efficiency · 86 400).

    It binds, in this order: ``numerics`` (no training format published), ``peak not published``,
    ``network not published`` (a link bandwidth blank, or more chips than one domain and no
    scale-out network), ``batch`` (more chips than tensor × pipeline × one sequence per replica:
    the global batch cannot be split further), ``capacity`` (no layout fits, more chips to hold
    than to compute, or a fit only with full recomputation), a bandwidth (efficiency below
    :data:`NETWORK_BOUND_BELOW`: the tier whose exposed seconds are largest) or ``compute``.
    """
    days = _checks.positive("days", days)
    utilisation = _checks.fraction("utilisation", utilisation)
    overlap = _checks.fraction("overlap", overlap)
    headroom = _checks.fraction("headroom", headroom)
    nan = math.nan
    blank = dict(chips_to_hold=nan, chips_for_compute=nan, chips=nan, layout="", bytes_per_chip=nan,
                 tensor_break_even=nan, data_break_even=nan, efficiency=nan, days=nan)
    if system.training_format == "none published":
        return Outcome(system.name, binds="numerics", **blank)
    peak = peak_flop_s(system.chip)
    if math.isnan(peak):
        return Outcome(system.name, binds="peak not published", **blank)
    fast, slow = run.state()
    hold = memory.chips_needed(fast / headroom, system.chip, memory.TIERS, slow_bytes=slow / headroom)
    compute = memory.chips_for_compute(run.flop, peak, utilisation, days)
    counts = dict(chips_to_hold=hold, chips_for_compute=compute)
    up, out = _bandwidth(system.scale_up), _bandwidth(system.scale_out)
    if system.scale_out is None:
        out = up
    if math.isnan(out) or (system.scale_up is not None and math.isnan(up)):
        return Outcome(system.name, binds="network not published", **{**blank, **counts})
    domain = _domain(system.scale_up)
    chips = max(hold, compute)
    if system.scale_out is None and chips > domain:
        # more chips than one scale-up domain and no data-centre network in the book's data
        return Outcome(system.name, binds="network not published", **{**blank, **counts})
    tensor = 1 if system.scale_up is None else int(min(MAX_TENSOR, domain))
    sliced = (system.scale_up is not None and system.scale_up.get("fabric") == "torus"
              and system.scale_out is not None)
    layouts = list(_candidates(run, chips, tensor))
    if not layouts:
        # more chips than tensor × pipeline × one sequence per replica: the global batch is too small
        return Outcome(system.name, binds="batch", **{**blank, **counts})
    best = None
    for recompute, layout in ((r, lay) for r in RECOMPUTE for lay in layouts):
        fits, need = _fits(run, system.chip, layout, recompute, headroom)
        if not fits:
            continue
        lay = network.Layout(tp=layout.tensor, cp=1, pp=layout.pipeline, dp=layout.data)
        # recomputation runs the forward pass twice: the step's useful FLOP run at a lower utilisation
        u = utilisation * memory.training_flop_per_token(1.0) / memory.training_flop_per_token(1.0, recompute)
        tiers = network.layout_traffic(run.params, run.layers, run.d_model, run.tokens_per_step, lay,
                                       peak_flop_s=peak, utilisation=u, zero_stage=layout.zero_stage,
                                       microbatches=run.tokens_per_step / (layout.data * run.seq))
        pipe_bw = up if layout.tensor * layout.pipeline <= domain else out
        data_bw = out
        if sliced:
            per_slice = max(1, int(domain // (layout.tensor * layout.pipeline)))
            data_bw = multislice_bandwidth(layout.data, per_slice, slice_b_s=up, network_b_s=out)
        eff = tiers.efficiency(tensor_bandwidth=up if tensor > 1 else out, pipeline_bandwidth=pipe_bw,
                               data_bandwidth=data_bw, overlap=overlap)
        if best is None or eff * u > best[1] * best[5]:
            best = (layout, eff, tiers, need, pipe_bw, u, recompute, data_bw)
    if best is None:
        return Outcome(system.name, binds="capacity", **{**blank, **counts})
    layout, eff, tiers, need, pipe_bw, u, recompute, data_bw = best
    used = layout.chips
    took = run.flop / (used * peak * u * eff * memory.SECONDS_PER_DAY)
    exposed = {"scale-up bandwidth": tiers.tensor / up if tensor > 1 else 0.0,
               "scale-out bandwidth": (tiers.pipeline / pipe_bw
                                       + max(0.0, tiers.data / data_bw - overlap * tiers.compute))}
    if pipe_bw == up and system.scale_out is not None:
        exposed["scale-up bandwidth"] += tiers.pipeline / up
        exposed["scale-out bandwidth"] -= tiers.pipeline / up
    if eff < NETWORK_BOUND_BELOW:
        binds = max(exposed, key=exposed.get)
    else:
        binds = "capacity" if hold > compute or recompute == "full" else "compute"
    name = f"TP{layout.tensor} PP{layout.pipeline} DP{layout.data} ZeRO-{layout.zero_stage}"
    name += ", full recomputation" if recompute == "full" else ""
    return Outcome(system.name, chips_to_hold=hold, chips_for_compute=compute, chips=float(used), layout=name,
                   bytes_per_chip=need, tensor_break_even=tiers.break_even("tensor"),
                   data_break_even=tiers.break_even("data"), efficiency=eff, days=took, binds=binds)


def chip_days(outcome: Outcome) -> float:
    """Chip-days a run takes: chips × days, what a lab pays for at a price per chip-hour."""
    return outcome.chips * outcome.days


def utilisation_to_beat(run: Run, system: System, reference: Outcome, speedup: float, *,
                        days: float) -> float:
    """The lowest compute utilisation at which ``system`` trains ``run`` in ``speedup`` times fewer
    chip-days than ``reference`` (the same run on another system), found by bisection over
    :func:`train`; NaN where even a utilisation of 1 does not reach it or the system cannot train.
    This is what the software of a challenger must reach for the switch to pay."""
    speedup = _checks.positive("speedup", speedup)
    target = chip_days(reference) / speedup

    def beats(u: float) -> bool:
        took = chip_days(train(run, system, days=days, utilisation=u))
        return not math.isnan(took) and took <= target

    if not beats(1.0):
        return math.nan
    low, high = 1e-3, 1.0
    for _ in range(24):  # the bracket shrinks to 6e-8 of utilisation
        mid = (low + high) / 2
        low, high = (low, mid) if beats(mid) else (mid, high)
    return high


def designed_system(memory_like: Mapping, peak_tflop_s: float, link_gb_s: float, *,
                    domain_chips: int = 8, scale_out_gb_s: float = 50.0) -> System:
    """A chip for the "design a chip" explorable: the memory tiers of ``memory_like`` (a row of
    data/chips.csv: SRAM, HBM, DDR sizes and bandwidths), a dense 16-bit peak of ``peak_tflop_s``,
    and links of ``link_gb_s`` per direction in a scale-up domain of ``domain_chips`` chips, with a
    scale-out network of ``scale_out_gb_s`` per chip (InfiniBand NDR's 50 GB/s by default)."""
    peak = _checks.positive("peak_tflop_s", peak_tflop_s)
    chip = {**memory_like, "chip": "designed", "bf16_dense_tflop_s": peak}
    up = {"gb_s_per_direction": _checks.positive("link_gb_s", link_gb_s),
          "domain_chips": _checks.count("domain_chips", domain_chips)}
    out = {"gb_s_per_direction": _checks.positive("scale_out_gb_s", scale_out_gb_s), "domain_chips": None}
    return System("designed chip", chip, up, out, "bf16")


def calibrated_utilisation(run: Run, system: System, layout: network.Layout, mfu: float, *,
                           overlap: float = OVERLAP) -> float:
    """The compute-only utilisation u at which the modelled step of ``run`` on ``system`` in
    ``layout`` reaches a measured model-FLOPs utilisation ``mfu``: u · efficiency(u) = mfu, solved by
    fixed-point iteration (efficiency falls as u rises, so the iteration contracts). Calibrates
    :func:`train` against the one measured large run."""
    mfu = _checks.fraction("mfu", mfu)
    peak = peak_flop_s(system.chip)
    up, out = _bandwidth(system.scale_up), _bandwidth(system.scale_out)
    u = mfu
    for _ in range(50):
        tiers = network.layout_traffic(run.params, run.layers, run.d_model, run.tokens_per_step, layout,
                                       peak_flop_s=peak, utilisation=u)
        eff = tiers.efficiency(tensor_bandwidth=up, pipeline_bandwidth=out, data_bandwidth=out,
                               overlap=overlap)
        u = min(1.0, mfu / eff)
    return u


def energy_gwh(outcome: Outcome, tdp_w: float) -> float:
    """Energy the chips of ``outcome`` draw at their thermal design power ``tdp_w`` (watts) over the
    run: N · TDP · 24 · days, in GWh; NaN where the power or the time is unknown. A floor: hosts,
    networks and cooling are left out."""
    if tdp_w is None or math.isnan(tdp_w) or math.isnan(outcome.days):
        return math.nan
    return outcome.chips * _checks.positive("tdp_w", tdp_w) * 24 * outcome.days / 1e9


def serving(params: float, kv_bytes_per_seq: float, chip: Mapping, batch: int, *,
            bytes_per_param: float = 2.0) -> dict[str, float]:
    """Decode bounds of one model replica on ``chip`` (:func:`chipbook.memory.decode_tokens_per_s`,
    weights in the chip's weight tier, :func:`chipbook.memory.weight_tier`):

    * chips: the fewest whose weight tier holds the weights and ``batch`` sequences' KV caches;
    * tokens/s per user, pipeline: one sequence whose token passes through the chips in turn, each
      reading its share of the weights, so one chip's bandwidth over all the bytes;
    * tokens/s per user, tensor-parallel: the chips' bandwidths pooled, communication left out (the
      networking chapter prices it), an upper bound;
    * tokens/s per chip at ``batch``: the roofline of one chip's share, the same whether the
      replica is split in a pipeline or tensor-parallel (n chips have n times the bandwidth and peak).
    """
    batch = _checks.count("batch", batch)
    tier = memory.weight_tier(chip)
    bandwidth, peak = memory.tier_bandwidth(chip, tier), peak_flop_s(chip)
    need = params * _checks.positive("bytes_per_param", bytes_per_param) + batch * kv_bytes_per_seq
    n = memory.chips_needed(need, chip, (tier,))
    user = memory.decode_tokens_per_s(params, bytes_per_param, 1, bandwidth_b_s=bandwidth, peak_flop_s=peak,
                                      kv_bytes_per_seq=kv_bytes_per_seq)
    per_chip = memory.decode_tokens_per_s(params, bytes_per_param, batch, bandwidth_b_s=bandwidth,
                                          peak_flop_s=peak, kv_bytes_per_seq=kv_bytes_per_seq)
    return {"chips": n, "tokens/s per user, pipeline": user, "tokens/s per user, tensor-parallel": n * user,
            "tokens/s per chip": per_chip}


def required_speedup(yearly_spend, *, porting_cost: float, retune_share: float, failure_probability: float,
                     failure_share: float, years: float, utilisation_ratio: float = 1.0,
                     price_ratio: float = 1.0):
    """Speed-up per chip at equal utilisation (the ratio the model's chip-days give) that a challenger
    must offer for a lab that spends ``yearly_spend`` dollars a year on training compute to recover
    the cost of switching within ``years`` years. The switch costs a one-off ``porting_cost``
    (engineers, kernels, framework support), re-tuning runs worth ``retune_share`` of a year's spend,
    and the expected loss of a failed or degraded run, ``failure_probability`` × ``failure_share``
    of a year's spend. On the new chip the lab's software reaches ``utilisation_ratio`` (ρ) of the
    utilisation it reaches on NVIDIA's, and a chip-hour costs ``price_ratio`` (π) of NVIDIA's, so a
    chip s times faster at equal utilisation does the same work for π/(s·ρ) of the spend and saves
    spend · (1 − π/(sρ)) a year. The switch pays when years · spend · (1 − π/(sρ)) ≥ cost:

        s* = (π/ρ) / (1 − cost / (years · spend)),  infinite when cost ≥ years · spend.

    The book's own payback rule (no discounting), not a published model."""
    spend = np.asarray(_checks.positive("yearly_spend", yearly_spend), dtype=float)
    porting = _checks.non_negative("porting_cost", porting_cost)
    retune = _checks.non_negative("retune_share", retune_share)
    p = _checks.non_negative("failure_probability", failure_probability)
    if p > 1:
        raise ValueError(f"failure_probability must be in [0, 1], got {failure_probability!r}")
    f = _checks.non_negative("failure_share", failure_share)
    years = _checks.positive("years", years)
    rho = _checks.positive("utilisation_ratio", utilisation_ratio)
    price = _checks.positive("price_ratio", price_ratio)
    share = (porting / spend + retune + p * f) / years
    with np.errstate(divide="ignore"):
        out = np.where(share < 1, (price / rho) / (1 - np.minimum(share, 1 - 1e-300)), np.inf)
    return float(out) if out.ndim == 0 else out


def sensitivities(model: Callable[..., float], base: Mapping[str, float],
                  ranges: Mapping[str, tuple[float, float]]) -> pd.DataFrame:
    """One-at-a-time sensitivities of ``model(**inputs)``: for each input of ``ranges``, the output
    with that input at the low and at the high end of its range and every other at ``base``, and the
    swing between them; rows sorted by swing, largest first (a tornado table)."""
    if not ranges:
        raise ValueError("ranges must name at least one input")
    unknown = set(ranges) - set(base)
    if unknown:
        raise ValueError(f"ranges must name inputs of base ({', '.join(base)}), "
                         f"got {', '.join(sorted(unknown))}")
    rows = {}
    for name, (low, high) in ranges.items():
        at_low, at_high = model(**{**base, name: low}), model(**{**base, name: high})
        rows[name] = {"low": low, "high": high, "output at low": at_low, "output at high": at_high,
                      "swing": abs(at_high - at_low)}
    table = pd.DataFrame(rows).T.astype(float)
    return table.sort_values("swing", ascending=False, kind="stable")


def run_cost(outcome: Outcome, usd_per_chip_hour: float) -> float:
    """Dollars a run costs at a rental price per chip-hour: chips × 24 · days × price; NaN where the
    run was not timed."""
    return chip_days(outcome) * 24 * _checks.positive("usd_per_chip_hour", usd_per_chip_hour)


def usd_per_million_tokens(usd_per_chip_hour: float, tokens_per_s_per_chip: float) -> float:
    """Dollars per million tokens of a chip rented at ``usd_per_chip_hour`` that serves
    ``tokens_per_s_per_chip`` tokens a second for the whole hour: price / (3,600 · rate) × 10⁶. A
    cost floor at that rate, not a price: no service is busy all hour at its bound, and a price
    includes margin."""
    price = _checks.positive("usd_per_chip_hour", usd_per_chip_hour)
    rate = _checks.positive("tokens_per_s_per_chip", tokens_per_s_per_chip)
    return price / (market.SECONDS_PER_HOUR * rate) * 1e6
