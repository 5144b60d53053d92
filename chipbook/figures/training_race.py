"""Figures of the chapter "What it would take to win training"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

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
#: What an untimed system's binding constraint means, where its name alone would mislead.
UNTIMED = {"capacity": "capacity, no layout fits", "batch": "batch, too few sequences"}


@styled
def plot_binding(outcomes: Sequence[training_race.Outcome], target_days: float, title: str = "") -> Figure:
    """Two panels, one row per system. Left: the chips the run uses (a diamond, log axis, coloured by
    what binds), with the chips needed to hold its state (open square) and to do its arithmetic in
    ``target_days`` (dot): where the square lies right of the dot, capacity sets the count. Right: the
    share of each step spent computing (the rest waits on the network), with the threshold below which
    the network binds (dashed) and the days to train written beside the bar. A system with no time
    (nothing published, or no layout fits) has no bars and its binding constraint as text."""
    names = [o.system for o in outcomes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 0.5 * len(names) + 2.0), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})  # whole pixels at 100 dpi
    y = np.arange(len(names))[::-1]
    counts = [v for o in outcomes for v in (o.chips, o.chips_to_hold, o.chips_for_compute) if v > 0]
    for yi, o in zip(y, outcomes, strict=True):
        colour = BIND_COLOURS[o.binds]
        if math.isnan(o.days):
            right.text(0.02, yi, f"not timed: {UNTIMED.get(o.binds, o.binds)}", va="center", fontsize=8)
        else:
            left.plot([o.chips], [yi], "D", color=colour, ms=9)
            right.barh(yi, o.efficiency, color=colour, height=0.6)
            right.text(o.efficiency + 0.02, yi, f"{o.days:.0f} d", va="center", fontsize=8)
        left.plot([o.chips_to_hold], [yi], "s", mfc="white", mec=PALETTE["black"], ms=7)
        left.plot([o.chips_for_compute], [yi], "o", color=PALETTE["black"], ms=4)
    left.set_xscale("log")
    left.set_xlim(min(counts) / 3, max(counts) * 3)
    left.set_yticks(y, names, fontsize=8)
    left.set_xlabel("chips (log)")
    right.axvline(training_race.NETWORK_BOUND_BELOW, color=PALETTE["black"], linestyle="--", linewidth=1)
    right.set_xlim(0, 1.25)
    right.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
    right.set_xlabel("share of a step computing")
    shown = dict.fromkeys(o.binds for o in outcomes if not math.isnan(o.days))
    handles = [Patch(color=BIND_COLOURS[b], label=f"binds: {b}") for b in shown]
    handles += [Line2D([], [], marker="D", color=PALETTE["black"], ls="", label="chips the run uses")]
    handles += [Line2D([], [], marker="s", mfc="white", mec=PALETTE["black"], ls="",
                       label="chips to hold the state"),
                Line2D([], [], marker="o", color=PALETTE["black"], ms=4, ls="",
                       label=f"chips for the arithmetic in {target_days:g} days"),
                Line2D([], [], color=PALETTE["black"], ls="--", lw=1, label="network binds below")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    if title:
        fig.suptitle(title)
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
