"""Figures of the chapter "Memory hierarchy: what training has to remember"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chipbook import fmt, market, memory
from chipbook.figures.market import PLAIN, SI
from chipbook.style import PALETTE, SERVE, TRAIN, styled

TIER_SETS = {"SRAM only": ("SRAM",), "SRAM + HBM": ("SRAM", "HBM"),
             "SRAM + HBM + DDR": ("SRAM", "HBM", "DDR")}
TIER_COLOURS = {"SRAM only": PALETTE["orange"], "SRAM + HBM": PALETTE["blue"],
                "SRAM + HBM + DDR": PALETTE["green"]}
GB = 1e9


@styled
def plot_state_bytes(params: Mapping[str, float], recipes: Sequence[str],
                     inference_fmt: str = "bf16") -> Figure:
    """For each model (name -> parameter count), its inference weights in ``inference_fmt`` and its
    training state (weights, gradients, optimizer) under each of ``recipes``, in GB on a log axis."""
    names = list(params)
    bars = [(f"inference weights, {inference_fmt}", SERVE,
             [memory.inference_weight_bytes(params[n], inference_fmt) for n in names])]
    shades = [PALETTE["yellow"], PALETTE["orange"], TRAIN, PALETTE["purple"], PALETTE["black"]]
    for r, colour in zip(recipes, shades, strict=False):
        rec = memory.recipe(r)
        bars.append((f"{rec.label}: {rec.total:g} B/param", colour,
                     [memory.training_state_bytes(params[n], r) for n in names]))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(names) * len(bars) / 2 + 2.2))
    height = 0.8 / len(bars)
    y = np.arange(len(names))
    for i, (label, colour, values) in enumerate(bars):
        ax.barh(y + (i - (len(bars) - 1) / 2) * height, np.array(values) / GB, height=height, color=colour,
                label=label)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.set_xlabel("GB (10⁹ bytes), weights + gradients + optimizer state")
    ax.legend(loc="lower center", bbox_to_anchor=(0.45, 1.0), fontsize=9, frameon=False)
    return fig


@styled
def plot_measured(depths: Sequence[int], measured: Mapping[str, Sequence[float]],
                  modelled: Mapping[str, Sequence[float]], *, title: str) -> Figure:
    """Peak bytes measured (markers) and modelled (lines) against network depth, for training and
    inference (keys "training" and "inference"), in MiB."""
    fig, ax = plt.subplots()
    for key, colour in (("training", TRAIN), ("inference", SERVE)):
        ax.plot(depths, np.asarray(modelled[key]) / 2**20, color=colour, label=f"{key}, model")
        ax.plot(depths, np.asarray(measured[key]) / 2**20, ls="none", marker="o", ms=7, color=colour,
                markerfacecolor="white", markeredgewidth=2, label=f"{key}, measured")
    ax.set(xscale="log", xlabel="layers", ylabel="peak memory, weights included (MiB)", title=title)
    ax.set_xticks(list(depths))
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(PLAIN)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=10)
    return fig


@styled
def plot_chips_needed(counts: pd.DataFrame, *, title: str) -> Figure:
    """Fewest chips that hold the inference footprint (left) and the training footprint (right) of
    one model, with the chip's tiers used one set at a time. ``counts`` is indexed by chip, with
    columns (workload, tier set); inf (no such tier) is drawn as a cross at the axis's right end."""
    chips = list(counts.index)
    height = math.ceil((0.38 * len(chips) + 2.0) * 4) / 4  # whole quarter-inches: whole pixels
    fig, axes = plt.subplots(1, 2, figsize=(7.2, height), sharey=True, layout="none")
    fig.subplots_adjust(left=0.3, right=0.97, wspace=0.08, top=1 - 1.05 / height, bottom=0.7 / height)
    y = np.arange(len(chips))
    top = 10 ** np.ceil(np.log10(max(2.0, np.nanmax(counts.replace(np.inf, np.nan).to_numpy()))))
    for ax, workload in zip(axes, ("inference", "training"), strict=True):
        for i, (tiers, colour) in enumerate(TIER_COLOURS.items()):
            values = counts[(workload, tiers)].to_numpy(dtype=float)
            shown = np.where(np.isfinite(values), values, top)
            offset = (i - 1) * 0.22
            ax.scatter(shown[np.isfinite(values)], y[np.isfinite(values)] + offset, color=colour, s=40,
                       label=tiers, zorder=3)
            ax.scatter(shown[~np.isfinite(values)], y[~np.isfinite(values)] + offset, color=colour, s=40,
                       marker="x", zorder=3)
        ax.set(xscale="log", xlim=(0.7, top * 1.5), title=workload)
        ax.minorticks_off()
        ax.xaxis.set_major_formatter(SI)
    fig.supxlabel("chips needed (× = no such tier)", x=0.635, fontsize=12)
    axes[0].set_yticks(y, chips, fontsize=10)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower center", bbox_to_anchor=(1.04, 1.07), ncols=3, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12, x=0.635)
    return fig


@styled
def plot_roofline(peak_flop_s: float, bandwidth_b_s: float, batch: int, *, chip: str, tier: str,
                  params: float, bytes_per_param: float = 2.0, kv_bytes_per_seq: float = 0.0,
                  train_intensity: float | None = None) -> Figure:
    """Roofline of one chip: attainable FLOP/s = min(peak, intensity × bandwidth), with the decode
    step of a batch of ``batch`` sequences of a ``params``-parameter model, its weights and each
    sequence's KV cache read once (:func:`chipbook.memory.decode_intensity`), the same step without
    the KV cache (hollow), the limit 2N/M_KV that decode approaches as the batch grows (dashed) and,
    if given, a large training matrix product."""
    x = np.geomspace(0.1, 1e5, 200)
    roof = np.minimum(peak_flop_s, x * bandwidth_b_s)
    ridge = peak_flop_s / bandwidth_b_s
    fig, ax = plt.subplots()
    ax.plot(x, roof / 1e12, color=PALETTE["black"],
            label=f"roofline ({tier} {bandwidth_b_s / 1e12:g} TB/s)")
    decode = memory.decode_intensity(params, bytes_per_param, batch, kv_bytes_per_seq)
    attained = min(peak_flop_s, decode * bandwidth_b_s)
    ax.plot([decode], [attained / 1e12], marker="o", ms=10, color=SERVE, ls="none",
            label=f"decode, batch {batch}, with KV cache: {fmt.pct(attained / peak_flop_s, 2)} of peak")
    bare = memory.decode_intensity(params, bytes_per_param, batch)
    ax.plot([bare], [min(peak_flop_s, bare * bandwidth_b_s) / 1e12], marker="o", ms=10, ls="none",
            color=SERVE, markerfacecolor="white", markeredgewidth=2, label="same batch, KV cache left out")
    if kv_bytes_per_seq > 0:
        limit = market.FORWARD_FLOP_PER_PARAM * params / kv_bytes_per_seq
        ax.axvline(limit, color=SERVE, ls="--", lw=1.2,
                   label=f"decode's limit 2N/M_KV: {fmt.num(limit, 2)} FLOP/B")
    if train_intensity is not None:
        reached = min(peak_flop_s, train_intensity * bandwidth_b_s)
        ax.plot([train_intensity], [reached / 1e12], marker="s", ms=9, color=TRAIN, ls="none",
                label="training matrix product")
    ax.axvline(ridge, color=PALETTE["black"], ls=":", lw=1.2)
    ax.text(ridge * 1.15, peak_flop_s / 1e12 * 0.02, f"ridge {fmt.num(ridge, 2)} FLOP/B", fontsize=10)
    top = peak_flop_s / 1e12
    ax.set(xscale="log", yscale="log", xlim=(0.1, 1e5), ylim=(top * 1e-4, top * 3),
           xlabel="arithmetic intensity (FLOP per byte)", ylabel="attainable TFLOP/s", title=chip)
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.yaxis.set_major_formatter(SI)
    ax.legend(loc="lower right", fontsize=8)
    return fig


@styled
def plot_step_time(params: float, recipe_name: str, peak_flop_s: float, fast_b_s: float,
                   slow: Mapping[str, float | None], *, micro_batch_tokens: int, name: str,
                   mark: tuple[str, float] | None = None) -> Figure:
    """Lower bound on the time of one optimizer step against the tokens a model replica processes
    per step, for one chip holding ``params`` parameters (its share of the replica), micro-batches
    of ``micro_batch_tokens`` tokens accumulated into the step, weights and gradients in a fast tier
    of ``fast_b_s`` byte/s and the optimizer state where ``slow`` says (label -> byte/s, None for the
    fast tier itself); the compute bound alone is the dashed line and ``mark`` (label, tokens) a
    dotted vertical line."""
    tokens = np.geomspace(1e3, 1e7, 120)
    fig, ax = plt.subplots()
    colours = [SERVE, PALETTE["green"], TRAIN, PALETTE["purple"]]

    def bound(t, slow_b_s):
        k = max(1, math.ceil(t / micro_batch_tokens))
        return memory.step_time_bound(params, recipe_name, t, peak_flop_s=peak_flop_s, fast_b_s=fast_b_s,
                                      slow_b_s=slow_b_s, micro_batches=k)

    for (label, slow_b_s), colour in zip(slow.items(), colours, strict=False):
        ax.plot(tokens, [bound(t, slow_b_s) for t in tokens], color=colour,
                label=f"optimizer state in {label}")
    compute = memory.training_flop_per_token(params) * tokens / peak_flop_s
    ax.plot(tokens, compute, color=PALETTE["black"], ls="--", lw=1.4, label="compute alone (6N per token)")
    if mark is not None:
        ax.axvline(mark[1], color=PALETTE["black"], ls=":", lw=1.2, label=mark[0])
    ax.set(xscale="log", yscale="log", xlabel="tokens per optimizer step, per model replica",
           ylabel="step time, lower bound (s)", title=name)
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.yaxis.set_major_formatter(PLAIN)
    ax.legend(loc="upper left", fontsize=8)
    return fig


@styled
def plot_capacity_vs_compute(hold: Mapping[str, float], compute: Mapping[str, tuple[float, float]], *,
                             title: str) -> Figure:
    """For each chip, the fewest chips that hold a training run's state (dot) against the chips its
    FLOP need within a time window (a bar from the longer to the shorter window), on a log axis;
    chips missing from ``compute`` (no published peak) get no bar."""
    names = list(hold)
    fig, ax = plt.subplots(figsize=(6.4, math.ceil((0.45 * len(names) + 1.8) * 4) / 4))
    y = np.arange(len(names))
    for i, n in enumerate(names):
        if n in compute:
            lo, hi = compute[n]
            ax.plot([lo, hi], [i, i], color=TRAIN, lw=6, solid_capstyle="butt",
                    label="chips for compute" if i == 0 else None)
    ax.scatter([hold[n] for n in names], y, color=SERVE, s=45, zorder=3, label="chips to hold the state")
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    ax.set(xscale="log", title=title, xlabel="chips")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.06), ncols=2, fontsize=9, frameon=False)
    return fig
