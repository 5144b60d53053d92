"""Figures of the chapter "Memory hierarchy: what training has to remember"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chipbook import fmt, memory
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
    ax.set(xscale="log", xlabel="layers", ylabel="peak memory above the weights (MiB)", title=title)
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
    height = 0.38 * len(chips) + 2.0
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
                  bytes_per_value: float = 2.0, train_intensity: float | None = None) -> Figure:
    """Roofline of one chip: attainable FLOP/s = min(peak, intensity × bandwidth), with the decode
    step of a batch of ``batch`` sequences (intensity 2·B / bytes per weight) and, if given, a
    large training matrix product."""
    x = np.geomspace(0.1, 1e5, 200)
    roof = np.minimum(peak_flop_s, x * bandwidth_b_s)
    ridge = peak_flop_s / bandwidth_b_s
    fig, ax = plt.subplots()
    ax.plot(x, roof / 1e12, color=PALETTE["black"],
            label=f"roofline ({tier} {bandwidth_b_s / 1e12:g} TB/s)")
    decode = 2 * batch / bytes_per_value
    attained = min(peak_flop_s, decode * bandwidth_b_s)
    ax.plot([decode], [attained / 1e12], marker="o", ms=10, color=SERVE, ls="none",
            label=f"decode, batch {batch}: {fmt.pct(attained / peak_flop_s, 2)} of peak")
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
    ax.legend(loc="lower right", fontsize=9)
    return fig


@styled
def plot_step_time(params: float, recipe_name: str, peak_flop_s: float, bandwidths: Mapping[str, float],
                   *, name: str) -> Figure:
    """Lower bound on the time of one training step against the tokens a model replica processes
    per step, for one chip holding ``params`` parameters (its share of a model split over several
    chips) with its training state streamed from memories of the given ``bandwidths`` (label ->
    byte/s); the compute bound alone is the dashed line."""
    tokens = np.geomspace(1e2, 1e6, 120)
    fig, ax = plt.subplots()
    compute = [memory.step_time_bound(params, recipe_name, t, bandwidth_b_s=1e30, peak_flop_s=peak_flop_s)
               for t in tokens]
    colours = [SERVE, PALETTE["green"], TRAIN, PALETTE["purple"]]
    for (label, bandwidth), colour in zip(bandwidths.items(), colours, strict=False):
        bound = [memory.step_time_bound(params, recipe_name, t, bandwidth_b_s=bandwidth,
                                        peak_flop_s=peak_flop_s) for t in tokens]
        ax.plot(tokens, bound, color=colour, label=f"state in {label}")
    ax.plot(tokens, compute, color=PALETTE["black"], ls="--", lw=1.4, label="compute alone (6N per token)")
    ax.set(xscale="log", yscale="log", xlabel="tokens per step (per model replica)",
           ylabel="step time, lower bound (s)", title=name)
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.yaxis.set_major_formatter(PLAIN)
    ax.legend(loc="upper left", fontsize=9)
    return fig
