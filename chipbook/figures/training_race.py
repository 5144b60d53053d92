"""Figures of the chapter "What it would take to win training"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from chipbook import training_race
from chipbook.style import PALETTE, styled

#: One colour per constraint that can bind (training_race.BINDS).
BIND_COLOURS = {
    "compute": PALETTE["green"],
    "capacity": PALETTE["orange"],
    "scale-up bandwidth": PALETTE["blue"],
    "scale-out bandwidth": PALETTE["sky"],
    "numerics": PALETTE["vermillion"],
    "peak not published": PALETTE["black"],
    "network not published": PALETTE["black"],
    "batch": PALETTE["black"],
}


@styled
def plot_binding(outcomes: Sequence[training_race.Outcome], target_days: float, title: str = "") -> Figure:
    """One bar per system: its days to train (log axis), coloured by what binds; a system with no
    time (nothing published, or no layout fits) gets no bar and its binding constraint as text.
    A dashed line marks ``target_days``, the window the chip counts were sized for."""
    names = [o.system for o in outcomes]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(names) + 1.5))  # whole pixels at 80 dpi
    y = np.arange(len(names))[::-1]
    finite = [o.days for o in outcomes if not math.isnan(o.days)]
    left = min([*finite, target_days]) / 3
    for yi, o in zip(y, outcomes, strict=True):
        if math.isnan(o.days):
            ax.text(left * 1.1, yi, f"no time: {o.binds}", va="center", fontsize=8)
        else:
            ax.barh(yi, o.days - left, left=left, color=BIND_COLOURS[o.binds], label=o.binds)
    ax.axvline(target_days, color=PALETTE["black"], linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(left, max([*finite, target_days]) * 3)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("days to train (log); dashed: the window sized for")
    shown = dict.fromkeys(o.binds for o in outcomes if not math.isnan(o.days))
    ax.legend(handles=[Patch(color=BIND_COLOURS[b], label=f"binds: {b}") for b in shown],
              loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


@styled
def plot_switching(spends: Sequence[float], curves: Mapping[str, Sequence[float]],
                   challengers: Mapping[str, float] | None = None, title: str = "") -> Figure:
    """The speed-up a challenger needs (training_race.required_speedup) against a lab's yearly
    training spend, one line per assumption set in ``curves``; each of ``challengers`` (name ->
    the speed-up the model gives it over the reference system) as a horizontal dotted line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = [PALETTE["vermillion"], PALETTE["blue"], PALETTE["green"], PALETTE["orange"]]
    for (label, values), colour in zip(curves.items(), colours, strict=False):
        shown = np.where(np.isfinite(values), values, np.nan)
        ax.plot(spends, shown, color=colour, label=label)
    for name, s in (challengers or {}).items():
        ax.axhline(s, color=PALETTE["black"], linestyle=":", linewidth=1)
        ax.text(spends[0], s, f" {name}", va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lab's yearly training spend (US$)")
    ax.set_ylabel("speed-up needed to pay for the switch")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


@styled
def plot_design(chip_days: float, reference_chip_days: float, tokens_per_s: float,
                reference_tokens_per_s: float, binds: str, title: str = "") -> Figure:
    """Two panels, each a designed chip's bar beside an H100's: chip-days to train (left: what a lab
    pays for at a given price per chip-hour; none if it cannot train, with what binds written
    instead) and one user's decode tokens per second (right), both on log axes whose limits do not
    move between frames."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.0))
    names = ["H100 cluster", "designed"]
    left.bar(names[0], reference_chip_days, color=PALETTE["black"])
    if math.isnan(chip_days):
        left.text(1, reference_chip_days, f"cannot train:\n{binds}", ha="center", fontsize=8)
    else:
        left.bar(names[1], chip_days, color=BIND_COLOURS[binds], label=f"binds: {binds}")
        left.legend(fontsize=8, loc="upper right")
    left.set_xticks([0, 1], names)
    left.set_xlim(-0.6, 1.6)
    left.set_yscale("log")
    left.set_ylim(1e5, 1e7)
    left.set_ylabel("chip-days to train (log)")
    right.bar(names, [reference_tokens_per_s, tokens_per_s], color=[PALETTE["black"], PALETTE["blue"]])
    right.set_yscale("log")
    right.set_ylim(1, 1e5)
    right.set_ylabel("tokens/s for one user (log)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
