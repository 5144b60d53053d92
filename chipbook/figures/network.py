"""Figures of the chapter "Networking: who has to talk to whom"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from chipbook import network
from chipbook.figures.market import PLAIN, POW10
from chipbook.style import PALETTE, SERVE, TRAIN, styled

ALGORITHM_LABELS = {"ring": "ring all-reduce", "halving_doubling": "halving-doubling all-reduce",
                    "tree": "binary-tree all-reduce", "one_shot": "one-shot all-reduce",
                    "two_shot": "two-shot all-reduce", "in_network": "in-network all-reduce (switch adds)",
                    "naive": "naive all-reduce (via rank 0)", "pipeline": "pipeline (one token)"}
ALGORITHM_COLOURS = {"ring": TRAIN, "halving_doubling": PALETTE["orange"], "tree": PALETTE["green"],
                     "one_shot": PALETTE["sky"], "two_shot": PALETTE["black"],
                     "in_network": PALETTE["purple"], "naive": "#888888", "pipeline": SERVE}
#: The topologies the traffic explorable prices each pattern on, with the keywords of
#: :func:`chipbook.network.link_loads`: a fat tree whose leaves of 4 have a quarter of their
#: ranks' bandwidth up (4:1), a 2-D torus, and a line of chips.
TOPOLOGY_VIEWS = {"fat tree 4:1": ("fat_tree", {"group": 4, "oversubscription": 4.0}),
                  "2-D torus": ("torus", None), "chain": ("chain", {})}
#: ranks of the traffic explorable and of the topology table
TRAFFIC_RANKS = 16


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


def _torus_shape(ranks: int) -> tuple[int, int]:
    side = int(np.sqrt(ranks))
    while ranks % side:
        side -= 1
    return side, ranks // side


def topology_slowdown(traffic: network.Traffic, topology: str, *, per_chip: bool = False) -> float:
    """Time of ``traffic`` on one of :data:`TOPOLOGY_VIEWS` over its time on a non-blocking switch,
    bandwidth terms only; NaN where the pattern cannot run there (in-network reduction needs a
    reducing switch). By default every link is as fast as a rank's link to the switch (as if the
    pattern ran on every link at once, several rings side by side as NCCL's channels do); with
    ``per_chip`` a chip's bandwidth is the same on every topology, spread over its links
    (:func:`chipbook.network.links_per_chip`), and one instance of the pattern runs."""
    kind, where = TOPOLOGY_VIEWS[topology]
    where = {"shape": _torus_shape(traffic.ranks)} if where is None else where
    base = network.simulated_time(traffic, "switch", 1.0, 0.0)
    try:
        return network.simulated_time(traffic, kind, 1.0, 0.0, per_chip=per_chip, **where) / base
    except ValueError:
        return float("nan")


@styled
def plot_traffic(pattern: str, ranks: int, elements: int = 960) -> Figure:
    """One simulated collective: the bytes each rank (row) sent to each other rank (column) in units
    of one rank's buffer S, each rank's total sent (to ranks or into a reducing switch), and its
    time on cheaper topologies than a non-blocking switch (bandwidth terms only)."""
    traffic = simulate(pattern, ranks, elements)
    size = elements * 4
    matrix = traffic.matrix / size
    fig, (ax, side, topo) = plt.subplots(1, 3, figsize=(8.4, 4.2), width_ratios=[4, 1.3, 2.2])
    vmax = max(2.0, float(matrix.max()))
    image = ax.imshow(matrix, cmap="cividis_r", vmin=0, vmax=vmax)
    ticks = range(0, ranks, max(1, ranks // 8))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    ax.set(xlabel="to rank", ylabel="from rank")
    fig.suptitle(f"{ALGORITHM_LABELS[pattern]}, {ranks} ranks: {traffic.steps} rounds", fontsize=12)
    ax.grid(False)
    sent = traffic.sent / size
    side.barh(np.arange(ranks), sent, color=ALGORITHM_COLOURS[pattern])
    side.set(xlabel="sent (× S)", xlim=(0, max(2.2, sent.max() * 1.1)), ylim=(ranks - 0.5, -0.5))
    side.set_yticks([])
    side.xaxis.set_major_formatter(PLAIN)
    side.grid(False)
    names = list(TOPOLOGY_VIEWS)
    slow = [topology_slowdown(traffic, name) for name in names]
    y = np.arange(len(names))[::-1]
    topo.barh(y, np.nan_to_num(slow), color=PALETTE["sky"])
    for yi, v in zip(y, slow, strict=True):
        topo.text(0.05 if np.isnan(v) else v + 0.1, yi, "needs a\nreducing switch" if np.isnan(v)
                  else f"{v:.2g}×", va="center", fontsize=9)
    topo.axvline(1, color=PALETTE["black"], lw=1)
    topo.set_yticks(y, names, fontsize=9)
    topo.set(xlabel="time / on a switch", xlim=(0, max(3.0, np.nanmax(np.append(slow, 1)) * 1.4)))
    topo.grid(False)
    bar = fig.colorbar(image, ax=[ax, side], shrink=0.8, location="bottom", aspect=40)
    bar.set_label("bytes from row to column, in units of the buffer S")
    return fig


VOLUME_MARKERS = {"ring": ("o", 10), "tree": ("^", 8), "one_shot": ("v", 7), "in_network": ("D", 6),
                  "naive": ("s", 7)}


@styled
def plot_volumes(rank_counts: Sequence[int], elements: int = 2520) -> Figure:
    """Bytes the busiest rank sends in each simulated all-reduce (markers) against the closed forms
    (lines): 2(n−1)/n·S for the ring, S into a reducing switch, (n−1)·S for one-shot and for the
    root of the naive one; the unpipelined tree's inner ranks send up to 3·S."""
    n = np.asarray(rank_counts)
    size = elements * 4
    fig, ax = plt.subplots()
    for algorithm, (marker, ms) in VOLUME_MARKERS.items():
        busiest = [simulate(algorithm, k, elements).sent.max() / size for k in n]
        ax.plot(n, busiest, ls="none", marker=marker, ms=ms, color=ALGORITHM_COLOURS[algorithm],
                label=f"{ALGORITHM_LABELS[algorithm]}, simulated")
    grid = np.arange(2, n.max() + 1)
    ax.plot(grid, 2 * (grid - 1) / grid, color=TRAIN, lw=1.4, label="2(n−1)/n · S")
    ax.plot(grid, grid - 1, color=PALETTE["purple"], lw=1.4, ls="--", label="(n−1) · S")
    ax.axhline(1, color=ALGORITHM_COLOURS["in_network"], lw=1, ls=":", label="S (the switch adds)")
    ax.set(xscale="log", yscale="log", xlabel="ranks n", ylabel="bytes sent by the busiest rank (× S)")
    ax.minorticks_off()
    ax.set_xticks(n)
    ax.set_yticks([1, 2, 3, 5, 10, 20, 50])
    ax.xaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_major_formatter(PLAIN)
    ax.legend(fontsize=8, loc="upper left")
    return fig


@styled
def plot_layout(dp: int, overlap: float, utilisation: float, zero_stage: int = 1, *, params: float,
                layers: int, d_model: float, tokens_per_step: float, tp: int, pp: int, peak_flop_s: float,
                scale_up: float, scale_out: float, model: str, micro_batch_tokens: float) -> Figure:
    """Seconds per step for one GPU of a tensor × pipeline × data layout at a fixed global batch:
    compute against each parallelism's bytes over the tier that carries it, with the step's
    efficiency when tensor parallelism runs over the scale-up domain and when it runs over the
    scale-out network (bandwidth terms; :meth:`chipbook.network.TierTraffic.efficiency`), with
    the gradient synchronised as ZeRO stage ``zero_stage`` does (:func:`chipbook.network.layout_traffic`;
    stage 3 once per micro-batch of ``micro_batch_tokens``, tokens_per_step / (dp · micro_batch_tokens)
    times a step)."""
    layout = network.Layout(tp=tp, cp=1, pp=pp, dp=dp)
    t = network.layout_traffic(params, layers, d_model, tokens_per_step, layout, peak_flop_s=peak_flop_s,
                               utilisation=utilisation, zero_stage=zero_stage,
                               microbatches=tokens_per_step / (dp * micro_batch_tokens))
    bars = {"compute": (t.compute, SERVE),
            "tensor, scale-up": (t.tensor / scale_up, PALETTE["green"]),
            "tensor, scale-out": (t.tensor / scale_out, PALETTE["orange"]),
            "pipeline, scale-out": (t.pipeline / scale_out, PALETTE["sky"]),
            "data (gradient), scale-out": (t.data / scale_out, TRAIN)}
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    y = np.arange(len(bars))[::-1]
    ax.barh(y, [v for v, _ in bars.values()], color=[c for _, c in bars.values()])
    for yi, (v, _) in zip(y, bars.values(), strict=True):
        ax.text(v * 1.08, yi, _seconds(v), va="center", fontsize=10)
    ax.set_yticks(y, list(bars))
    ax.set(xscale="log", xlim=(1e-3, 1e3), xlabel="seconds per step, one GPU")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SECONDS)
    good = t.efficiency(tensor_bandwidth=scale_up, pipeline_bandwidth=scale_out, data_bandwidth=scale_out,
                        overlap=overlap)
    bad = t.efficiency(tensor_bandwidth=scale_out, pipeline_bandwidth=scale_out, data_bandwidth=scale_out,
                       overlap=overlap)
    ax.set_title(f"{model}, TP{tp} PP{pp} DP{dp}, ZeRO-{zero_stage}, "
                 f"{tokens_per_step / dp:,.0f} tokens per replica\n"
                 f"step efficiency: {good:.0%} with tensor parallelism inside\nthe scale-up domain, "
                 f"{bad:.0%} over the scale-out network", fontsize=10, loc="left")
    return fig


@styled
def plot_decode(batch: int, overhead: float, *, latency: float, bandwidth: float, layers: int, d_model: float,
                ranks: int, algorithms: Sequence[str], in_network_bandwidth: float | None = None) -> Figure:
    """Communication per generated token of tensor-parallel decoding (two all-reduces per layer),
    split into its fixed part (overhead and α per round) and its bandwidth part, per algorithm
    (``in_network_bandwidth``, default ``bandwidth``, for in-network reduction)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    y = np.arange(len(algorithms))[::-1]
    fixed, moving = [], []
    for algorithm in algorithms:
        own = in_network_bandwidth if algorithm == "in_network" and in_network_bandwidth else bandwidth
        total = network.tensor_parallel_decode_time(layers, d_model, ranks, own, latency, batch=batch,
                                                    algorithm=algorithm, overhead=overhead)
        lat = network.tensor_parallel_decode_time(layers, d_model, ranks, 1e30, latency, batch=batch,
                                                  algorithm=algorithm, overhead=overhead)
        fixed.append(lat)
        moving.append(total - lat)
    ax.barh(y, fixed, color="#bbbbbb", label="overhead and α per round")
    ax.barh(y, moving, left=fixed, color=[ALGORITHM_COLOURS[a] for a in algorithms],
            label="bytes / bandwidth")
    for yi, f, m in zip(y, fixed, moving, strict=True):
        ax.text((f + m) * 1.03, yi, f"{(f + m) * 1e3:.2g} ms ({m / (f + m):.0%} bandwidth)", va="center",
                fontsize=9)
    ax.set_yticks(y, [ALGORITHM_LABELS[a].replace(" all-reduce", "") for a in algorithms])
    ax.set(xlim=(0, max(f + m for f, m in zip(fixed, moving, strict=True)) * 1.9),
           xlabel="communication per token", title=f"batch {batch}, {ranks}-way tensor parallel")
    ax.xaxis.set_major_formatter(SECONDS)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False)
    return fig


@styled
def plot_message_sizes(sizes: Mapping[str, float], colours: Sequence[str], *,
                       per_token: Mapping[str, float] | None = None,
                       per_token_colours: Sequence[str] | None = None) -> Figure:
    """Bytes of each kind of message (``sizes``: label -> bytes) on a log axis, one bar each; with
    ``per_token`` (label -> bytes per token), a second panel below of the same traffic per token,
    the like-for-like comparison, coloured by ``per_token_colours``."""
    panels = [(sizes, colours, "bytes per event")]
    if per_token is not None:
        if per_token_colours is None or len(per_token_colours) != len(per_token):
            raise ValueError("per_token_colours must give one colour per entry of per_token")
        panels.append((per_token, per_token_colours, "bytes per token"))
    elif per_token_colours is not None:
        raise ValueError("per_token_colours needs per_token")
    rows = [len(panel[0]) for panel in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 0.5 * sum(rows) + 1.4 * len(panels)),
                             height_ratios=rows, squeeze=False)
    for ax, (values, panel_colours, xlabel) in zip(axes[:, 0], panels, strict=True):
        if len(panel_colours) != len(values):
            raise ValueError(f"{xlabel}: one colour per bar is needed")
        labels = list(values)
        y = np.arange(len(labels))[::-1]
        ax.barh(y, list(values.values()), color=panel_colours)
        for yi, value in zip(y, values.values(), strict=True):
            ax.text(value * 1.5, yi, _bytes(value), va="center", fontsize=10)
        ax.set_yticks(y, labels, fontsize=10)
        low = 10 ** np.floor(np.log10(min(values.values())))
        ax.set(xscale="log", xlim=(min(low, 1e3), max(1e14, 1e3 * max(values.values()))), xlabel=xlabel)
        ax.minorticks_off()
        ax.xaxis.set_major_formatter(POW10)
    return fig


@styled
def plot_alpha_beta(ranks: int, bandwidth: float, latency: float, overhead: float, *, link: str,
                    algorithms: Sequence[str],
                    measured: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                    in_network_bandwidth: float | None = None) -> Figure:
    """All-reduce time against message size S (512 B to 1 GB) on ``ranks`` ranks for each of
    ``algorithms`` (:func:`chipbook.network.allreduce_time`; ``in_network_bandwidth``, default
    ``bandwidth``, for in-network reduction), with ``measured`` points: label -> (sizes, times)."""
    sizes = np.geomspace(512, 1e9, 200)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algorithm in algorithms:
        bw = in_network_bandwidth if algorithm == "in_network" and in_network_bandwidth else bandwidth
        t = [network.allreduce_time(s, ranks, bw, latency, algorithm, overhead=overhead) for s in sizes]
        ax.plot(sizes, t, color=ALGORITHM_COLOURS[algorithm], label=ALGORITHM_LABELS[algorithm])
    for (name, (x, y)), marker in zip(measured.items(), "os^Dv", strict=False):
        ax.plot(x, y, marker, color=PALETTE["black"], mfc="none", ls="none", label=name)
    ax.set(xscale="log", yscale="log", xlabel="all-reduce size S", ylabel="time",
           title=f"{ranks} ranks, {link}")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(BYTES)
    ax.yaxis.set_major_formatter(SECONDS)
    ax.legend(fontsize=8, loc="upper left")
    return fig
