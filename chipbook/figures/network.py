"""Figures of the chapter "Networking: who has to talk to whom"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from chipbook import network
from chipbook.figures.market import PLAIN, POW10
from chipbook.style import PALETTE, SERVE, TRAIN, styled

ALGORITHM_LABELS = {"ring": "ring all-reduce", "halving_doubling": "halving-doubling all-reduce",
                    "naive": "naive all-reduce (via rank 0)", "pipeline": "pipeline (one token)"}
ALGORITHM_COLOURS = {"ring": TRAIN, "halving_doubling": PALETTE["orange"], "naive": PALETTE["purple"],
                     "pipeline": SERVE}


def _bytes(value: float, _pos: object = None) -> str:
    """1.5e9 -> '1.5 GB': decimal byte units, as vendors quote them."""
    for factor, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= factor:
            return f"{float(f'{value / factor:.3g}'):g} {unit}"
    return f"{float(f'{value:.3g}'):g} B"


def _seconds(value: float, _pos: object = None) -> str:
    """2.5e-5 -> '25 µs'."""
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(value) >= factor:
            return f"{float(f'{value / factor:.3g}'):g} {unit}"
    return "0 s" if value == 0 else f"{value:.1e} s"


BYTES = FuncFormatter(_bytes)
SECONDS = FuncFormatter(_seconds)


def simulate(pattern: str, ranks: int, elements: int = 960) -> network.Traffic:
    """Run ``pattern`` (an all-reduce algorithm, or "pipeline") on ``ranks`` ranks with buffers of
    ``elements`` 4-byte values (the pipeline sends one activation of that size per boundary)."""
    if pattern == "pipeline":  # an activation of ``elements`` values, as rows of 16 to keep layers small
        if elements % 16:
            raise ValueError(f"elements must be a multiple of 16 for a pipeline, got {elements}")
        x = np.ones((elements // 16, 16), dtype=np.float32)
        return network.pipeline_forward(x, [np.eye(16, dtype=np.float32)] * ranks, ranks)
    return network.allreduce(np.zeros((ranks, elements), dtype=np.float32), pattern)


@styled
def plot_traffic(pattern: str, ranks: int, elements: int = 960) -> Figure:
    """Traffic matrix of one simulated collective: the bytes each rank (row) sent to each other rank
    (column), in units of one rank's buffer S, with each rank's total sent beside it."""
    traffic = simulate(pattern, ranks, elements)
    size = elements * 4
    matrix = traffic.matrix / size
    fig, (ax, side) = plt.subplots(1, 2, figsize=(6.4, 4.2), width_ratios=[4, 1.3], sharey=True)
    vmax = max(2.0, float(matrix.max()))
    image = ax.imshow(matrix, cmap="cividis_r", vmin=0, vmax=vmax)
    ticks = range(0, ranks, max(1, ranks // 8))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    ax.set(xlabel="to rank", ylabel="from rank", title=ALGORITHM_LABELS[pattern])
    ax.grid(False)
    sent = traffic.sent / size
    side.barh(np.arange(ranks), sent, color=ALGORITHM_COLOURS[pattern])
    side.set(xlabel="sent (× S)", xlim=(0, max(2.2, sent.max() * 1.1)))
    side.xaxis.set_major_formatter(PLAIN)
    side.grid(False)
    bar = fig.colorbar(image, ax=[ax, side], shrink=0.8, location="bottom", aspect=40)
    bar.set_label(f"bytes from row to column, in units of the buffer S ({traffic.steps} rounds)")
    return fig


@styled
def plot_volumes(rank_counts: Sequence[int], elements: int = 2520) -> Figure:
    """Bytes the busiest rank sends in each simulated all-reduce (markers) against the closed forms
    (lines): 2(n−1)/n·S for the ring and, at powers of two, halving-doubling; (n−1)·S for the root
    of the naive one."""
    n = np.asarray(rank_counts)
    size = elements * 4
    fig, ax = plt.subplots()
    for algorithm, marker, ms in (("ring", "o", 10), ("halving_doubling", "D", 6), ("naive", "s", 7)):
        busiest = [simulate(algorithm, k, elements).sent.max() / size for k in n]
        ax.plot(n, busiest, ls="none", marker=marker, ms=ms, color=ALGORITHM_COLOURS[algorithm],
                label=f"{ALGORITHM_LABELS[algorithm]}, simulated")
    grid = np.arange(2, n.max() + 1)
    ax.plot(grid, 2 * (grid - 1) / grid, color=TRAIN, lw=1.4, label="2(n−1)/n · S")
    ax.plot(grid, grid - 1, color=PALETTE["purple"], lw=1.4, ls="--", label="(n−1) · S")
    ax.set(xscale="log", yscale="log", xlabel="ranks n", ylabel="bytes sent by the busiest rank (× S)")
    ax.minorticks_off()
    ax.set_xticks(n)
    ax.set_yticks([1, 2, 5, 10, 20, 50])
    ax.xaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_major_formatter(PLAIN)
    ax.legend(fontsize=9, loc="upper left")
    return fig


def _link_rows(links: pd.DataFrame) -> pd.DataFrame:
    return links.dropna(subset=["gb_s_per_direction", "latency_us"])


@styled
def plot_scaling(links: pd.DataFrame, *, params: float, tokens_per_step: float, peak_flop_s: float,
                 utilisation: float, chips: Sequence[int], model: str) -> Figure:
    """Scaling efficiency (compute / (compute + ring all-reduce), no overlap) of data-parallel
    training against the number of chips, one line per link of ``links`` (rows of data/links.csv)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    rows = _link_rows(links).sort_values("gb_s_per_direction", ascending=False)
    styles = ["-", "--", ":", "-."]
    colours = [c for name, c in PALETTE.items() if name != "yellow"]
    for i, (_, row) in enumerate(rows.iterrows()):
        eff = [network.data_parallel_step(params, tokens_per_step, int(c), peak_flop_s, utilisation,
                                          row.gb_s_per_direction * 1e9, row.latency_us * 1e-6).efficiency
               for c in chips]
        ax.plot(chips, eff, ls=styles[i % len(styles)], marker="o", ms=4, color=colours[i % len(colours)],
                label=f"{row.link.split(' (')[0]}, {row.gb_s_per_direction:g} GB/s")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="chips in data parallel",
           ylabel="scaling efficiency", title=f"{model}: {tokens_per_step / 1e6:.3g}M tokens a step")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(fontsize=8, loc="lower left", ncols=2, framealpha=0.9)
    return fig


@styled
def plot_step(link: str, chips: int, *, links: pd.DataFrame, models: pd.DataFrame, tokens_per_step: float,
              peak_flop_s: float, utilisation: float) -> Figure:
    """One data-parallel step on ``chips`` chips joined by ``link``: compute time (6·N_active·T
    FLOP) against the ring all-reduce of the whole gradient (N_total values in BF16), per model."""
    row = links.set_index("link").loc[link]
    bandwidth, latency = row.gb_s_per_direction * 1e9, row.latency_us * 1e-6
    fig, ax = plt.subplots(figsize=(6.4, 0.62 * len(models) + 1.8))
    y = np.arange(len(models))
    compute, comm = [], []
    for _, m in models.iterrows():
        step = network.data_parallel_step(m.params, tokens_per_step, chips, peak_flop_s, utilisation,
                                          bandwidth, latency, active_params=m.active_params)
        compute.append(step.compute)
        comm.append(step.allreduce)
    ax.barh(y + 0.2, compute, height=0.38, color=SERVE, label="compute")
    ax.barh(y - 0.2, comm, height=0.38, color=TRAIN, label="gradient all-reduce (ring)")
    for i, (c, a) in enumerate(zip(compute, comm, strict=True)):
        ax.text(max(c, a) * 1.3, i, f"{c / (c + a):.0%}", va="center", fontsize=11)
    ax.set_yticks(y, models["model"])
    ax.set(xscale="log", xlim=(1e-2, 3e4), xlabel="seconds per step (% = scaling efficiency)",
           title=f"{chips} chips, {link}")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SECONDS)
    ax.legend(loc="lower center", bbox_to_anchor=(0.45, 1.08), ncols=2, frameon=False, fontsize=10)
    return fig


@styled
def plot_message_sizes(sizes: Mapping[str, float], colours: Sequence[str]) -> Figure:
    """Bytes of each kind of message (``sizes``: label -> bytes) on a log axis, one bar each."""
    labels = list(sizes)
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(labels) + 1.4))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, list(sizes.values()), color=colours)
    for yi, value in zip(y, sizes.values(), strict=True):
        ax.text(value * 1.5, yi, _bytes(value), va="center", fontsize=10)
    ax.set_yticks(y, labels, fontsize=10)
    ax.set(xscale="log", xlim=(1e3, 1e14), xlabel="bytes")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(POW10)
    return fig


@styled
def plot_alpha_beta(ranks: int, bandwidth: float, latency: float, *, link: str,
                    marks: Mapping[str, float]) -> Figure:
    """All-reduce time against message size on ``ranks`` ranks (ring and halving-doubling), with
    the latency-only and bandwidth-only asymptotes and vertical marks at the ``marks`` sizes."""
    sizes = np.geomspace(1e3, 1e11, 200)
    fig, ax = plt.subplots()
    for algorithm in ("ring", "halving_doubling"):
        t = [network.allreduce_time(s, ranks, bandwidth, latency, algorithm) for s in sizes]
        ax.plot(sizes, t, color=ALGORITHM_COLOURS[algorithm], label=ALGORITHM_LABELS[algorithm])
    ax.plot(sizes, 2 * (ranks - 1) / ranks * sizes / bandwidth, color=PALETTE["black"], lw=1, ls=":",
            label="bandwidth term only, 2(n−1)/n · S/B")
    ax.axhline(2 * (ranks - 1) * latency, color=PALETTE["black"], lw=1, ls="--",
               label="latency term only (ring), 2(n−1)α")
    for name, size in marks.items():
        ax.axvline(size, color=PALETTE["sky"], lw=1.2)
        ax.text(size * 1.3, 2e-1, name, rotation=90, va="top", fontsize=9)
    ax.set(xscale="log", yscale="log", ylim=(1e-6, 10), xlabel="all-reduce size S",
           ylabel="time", title=f"{ranks} ranks, {link}")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(BYTES)
    ax.yaxis.set_major_formatter(SECONDS)
    ax.legend(fontsize=8, loc="upper left")
    return fig


@styled
def plot_topologies(ranks: int, elements: int = 960) -> Figure:
    """Left: the bisection bandwidth each pattern needs to run at link speed, in links; right: how
    much slower it runs on a ring and on a chain of chips than on a non-blocking switch."""
    patterns = ["ring", "halving_doubling", "naive", "pipeline"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.9), sharey=True)
    y = np.arange(len(patterns))[::-1]
    demand, slow_ring, slow_chain = [], [], []
    for p in patterns:
        traffic = simulate(p, ranks, elements)
        demand.append(network.bisection_demand(traffic))
        base = network.simulated_time(traffic, "switch", 1.0, 0.0)
        slow_ring.append(network.simulated_time(traffic, "ring", 1.0, 0.0) / base)
        slow_chain.append(network.simulated_time(traffic, "chain", 1.0, 0.0) / base)
    colours = [ALGORITHM_COLOURS[p] for p in patterns]
    left.barh(y, demand, color=colours)
    for yi, d in zip(y, demand, strict=True):
        left.text(d + 0.2, yi, f"{d:.2g}", va="center", fontsize=10)
    left.set_yticks(y, [ALGORITHM_LABELS[p].replace(" all-reduce", "") for p in patterns])
    left.set(xlabel="bisection needed (links)", xlim=(0, ranks * 1.25))
    right.barh(y + 0.18, slow_ring, height=0.34, color=PALETTE["sky"], label="ring of chips")
    right.barh(y - 0.18, slow_chain, height=0.34, color=PALETTE["black"], label="chain of chips")
    for yi, a, b in zip(y, slow_ring, slow_chain, strict=True):
        right.text(a + 0.1, yi + 0.18, f"{a:.2g}×", va="center", fontsize=9)
        right.text(b + 0.1, yi - 0.18, f"{b:.2g}×", va="center", fontsize=9)
    right.set(xlabel="time / time on a switch", xlim=(0, max(slow_chain) * 1.35))
    right.legend(fontsize=9, loc="lower right")
    fig.suptitle(f"{ranks} ranks, bandwidth terms only", fontsize=12)
    return fig
