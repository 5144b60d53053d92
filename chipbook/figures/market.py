"""Figures of the chapter "Market size: train once, serve forever"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from chipbook import fmt, market
from chipbook.style import PALETTE, SERVE, TRAIN, styled


def _si(value: float, _pos: object = None) -> str:
    """1.5e12 -> '1.5T': the short scale of ML papers (k, M, B, T) used on the book's log axes."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{float(f'{value / factor:.3g}'):g}{suffix}"
    return f"{float(f'{value:.3g}'):g}"


SI = FuncFormatter(_si)
#: 10ⁿ in plain text: the same look as matplotlib's log labels without its (slow) mathtext parser.
POW10 = FuncFormatter(lambda v, _: fmt.sci(v, 1).replace("1 × ", "") if v > 0 else "0")
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


@styled
def plot_breakeven(models: pd.DataFrame) -> Figure:
    """Tokens each model must serve before its inference FLOP equal its training FLOP.

    ``models`` has the columns of data/models.csv. Bars: 3·D, the count without attention; dots:
    the same with attention counted in training (causal sequences of the model's training context)
    and in serving (every token attending to a full training context). Models whose layer shapes
    are not published get no dot.
    """
    rows = models.sort_values("train_tokens", kind="stable")
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(rows) + 1.9))
    y = np.arange(len(rows))
    plain = [market.breakeven_tokens(d) for d in rows["train_tokens"]]
    ax.barh(y, plain, color=SERVE, alpha=0.8, label="3·D, no attention term")
    with_attention = []
    for _, m in rows.iterrows():
        train = market.training_attention(m)
        serve = None if train is None else market.serving_attention(m, m.context)
        with_attention.append(np.nan if train is None else market.breakeven_tokens(
            m.train_tokens, m.active_params, train_attention=train, serve_attention=serve))
    ax.scatter(with_attention, y, color=PALETTE["black"], zorder=3,
               label="with attention, serving at full training context")
    ax.set_yticks(y, rows["model"])
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(SI)
    ax.set_xlabel("tokens served to equal the training FLOP")
    ax.legend(loc="lower center", bbox_to_anchor=(0.4, 1.0), ncols=1, frameon=False)
    return fig


@styled
def plot_crossover(
    params: float,
    train_tokens: float,
    tokens_per_day: float,
    serve_utilisation: float,
    *,
    train_utilisation: float,
    peak_flop_s: float,
    chip: str,
    name: str = "",
    train_overhead: float = 1.0,
    days: float = 3 * 365,
) -> Figure:
    """Cumulative accelerator-hours of training (paid before launch; times ``train_overhead`` for
    the research behind the final run) and of serving ``tokens_per_day`` tokens a day, on
    ``chip``s of peak ``peak_flop_s``; the crossing is marked.

    The dotted line is serving at the training utilisation: the FLOP-for-FLOP comparison.
    """
    t = np.geomspace(1, days, 200)
    train = train_overhead * market.gpu_hours(market.training_flops(params, train_tokens), peak_flop_s,
                                              train_utilisation)
    per_day = market.gpu_hours(market.inference_flops(params, tokens_per_day), peak_flop_s, serve_utilisation)
    flop_per_day = per_day * serve_utilisation / train_utilisation
    cross = market.crossover_days(params, train_tokens, tokens_per_day, train_utilisation=train_utilisation,
                                  serve_utilisation=serve_utilisation, train_overhead=train_overhead)

    fig, ax = plt.subplots()
    what = "training" if train_overhead == 1 else f"training and research ({fmt.num(train_overhead, 2)}×)"
    ax.axhline(train, color=TRAIN, label=f"{what}: {_si(train)} {chip}-hours")
    ax.plot(t, per_day * t, color=SERVE, label=f"serving at {serve_utilisation:.0%} utilisation")
    ax.plot(t, flop_per_day * t, color=SERVE, ls=":",
            label=f"serving at {train_utilisation:.0%} (FLOP parity)")
    if cross <= days:
        ax.axvline(cross, color=PALETTE["black"], ls="--", lw=1.2)
        ax.annotate(f"crosses after\n{fmt.num(cross, 3)} days", (cross, train), xytext=(6, -40),
                    textcoords="offset points", fontsize=11)
    else:
        ax.text(0.97, 0.05, f"crosses after {fmt.num(cross / 365, 2)} years", transform=ax.transAxes,
                ha="right", fontsize=11)
    ax.set(xscale="log", yscale="log", xlim=(1, days), ylim=(1e2, 1e10),
           xlabel="days of serving", ylabel=f"cumulative {chip}-hours",
           title=f"{name}: {_si(tokens_per_day)} tokens a day".strip(": "))
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_major_formatter(SI)
    ax.legend(loc="upper left", fontsize=9)
    return fig


@styled
def plot_population(
    n_models: int,
    concentration: float,
    *,
    served_tokens: float,
    train_flop_range: tuple[float, float],
    tokens_per_param_range: tuple[float, float],
    size_usage_correlation: float = 0.0,
    demand_elasticity: float = 0.0,
    reference_models: float | None = None,
    draws: int = 100,
    seed: int = 0,
) -> Figure:
    """Left: each model of one simulated year, training FLOP against inference FLOP. Right: the
    population's inference-to-training FLOP ratio over ``draws`` simulated years. The arguments are
    those of :func:`chipbook.market.simulate_population`."""
    pop = market.simulate_population(n_models, concentration, served_tokens=served_tokens, draws=draws,
                                     seed=seed, train_flop_range=train_flop_range,
                                     tokens_per_param_range=tokens_per_param_range,
                                     size_usage_correlation=size_usage_correlation,
                                     demand_elasticity=demand_elasticity, reference_models=reference_models)
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.8))
    left.plot(pop.train_flop, pop.serve_flop, ls="none", marker=".", ms=3 if n_models > 300 else 5,
              color=SERVE, alpha=0.5)
    lim = (1e20, 1e30)
    left.plot(lim, lim, color=TRAIN, lw=1.2)
    left.text(1.5e20, 3e27, "inference\n> training", color=TRAIN, fontsize=9)
    left.text(6e29, 1e17, "training\n> inference", color=TRAIN, fontsize=9, ha="right")
    left.set(xscale="log", yscale="log", xlim=lim, ylim=(1e15, 1e30), xlabel="training FLOP",
             ylabel="inference FLOP in the year",
             title=f"{pop.breakeven_share.mean():.0%} of models break even")
    bins = np.geomspace(1e-2, 1e4, 61)
    counts, _ = np.histogram(np.clip(pop.ratio, bins[0], bins[-1]), bins=bins)
    right.stairs(counts, bins, fill=True, color=SERVE, alpha=0.8)
    for level in (1, 10):
        right.axvline(level, color=TRAIN, lw=1.2, ls="--")
    median = float(np.median(pop.ratio))
    right.set(xscale="log", xlim=(bins[0], bins[-1]), xlabel="inference / training FLOP, all models",
              ylabel="simulated years", title=f"median ratio {fmt.num(median, 2)}")
    right.xaxis.set_major_formatter(PLAIN)
    for ax in (left, right):
        ax.minorticks_off()
    for axis in (left.xaxis, left.yaxis):
        axis.set_major_locator(LogLocator(numticks=6))
        axis.set_major_formatter(POW10)
    fig.suptitle(f"{n_models} models a year, demand elasticity {demand_elasticity:g}", fontsize=12)
    return fig


@styled
def plot_population_grid(n_models: Sequence[int], y_values: Sequence[float], median_ratio: np.ndarray, *,
                         ylabel: str, reference_models: float | None = None,
                         reference_label: str = "the published count",
                         case_y: float | None = None) -> Figure:
    """Median inference-to-training ratio over a grid of model counts × a second assumption
    (``y_values``, named by ``ylabel``), with the contours where it equals 1 and 10 and, where
    given, a dotted line at ``reference_models`` models a year (labelled ``reference_label``: where
    that count comes from) and a star on it at ``case_y``, the case the text takes."""
    if case_y is not None and reference_models is None:
        raise ValueError("case_y needs reference_models: the star sits on the reference line")
    fig, ax = plt.subplots()
    ratio = np.asarray(median_ratio).T
    norm = LogNorm(10 ** np.floor(np.log10(ratio.min())), 10 ** np.ceil(np.log10(ratio.max())))
    mesh = ax.pcolormesh(n_models, y_values, ratio, shading="nearest", cmap="cividis", norm=norm)
    contours = ax.contour(n_models, y_values, ratio, levels=[1, 10], colors=[PALETTE["black"]] * 2,
                          linestyles=["--", "-"])
    ax.clabel(contours, fmt={1: "1×", 10: "10×"}, fontsize=11)
    if reference_models is not None:
        ax.axvline(reference_models, color=PALETTE["orange"], ls=":", lw=2,
                   label=f"{reference_models:.0f} a year: {reference_label}")
        if case_y is not None:
            ax.plot([reference_models], [case_y], "*", color=PALETTE["orange"], ms=14, mec=PALETTE["black"],
                    ls="none", label=f"the chapter's case, {ylabel} = {case_y:g}")
        ax.legend(loc="lower left", fontsize=9)
    ax.set(xscale="log", xlabel="models trained a year", ylabel=ylabel)
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(PLAIN)
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label("median inference / training FLOP")
    bar.ax.yaxis.set_major_formatter(PLAIN)
    return fig


@styled
def plot_joint(ratio: np.ndarray, shares: pd.Series, labels: dict[str, str], target: float = 10.0) -> Figure:
    """Left: the distribution of the output over joint draws of every input, with ``target`` dashed.
    Right: each input's first-order share of the variance of its logarithm
    (:func:`chipbook.market.variance_shares`), largest on top."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.6), width_ratios=[1, 1.1])
    ratio = np.asarray(ratio, dtype=float)
    bins = np.geomspace(ratio.min(), ratio.max(), 41)
    left.hist(ratio, bins=bins, color=SERVE, alpha=0.8)
    left.axvline(target, color=TRAIN, ls="--", lw=1.2, label=f"{target:g}× training")
    above = float((ratio > target).mean())
    left.set(xscale="log", xlabel="inference / training accelerator-hours", ylabel="joint draws",
             title=f"{fmt.pct(above, 2)} of draws above {target:g}×")
    left.xaxis.set_major_formatter(PLAIN)
    left.minorticks_off()
    left.legend(loc="upper left", fontsize=9)
    rows = shares.iloc[::-1]
    right.barh(np.arange(len(rows)), rows.to_numpy(), color=PALETTE["blue"])
    right.set_yticks(np.arange(len(rows)), [labels.get(n, n) for n in rows.index], fontsize=9)
    right.set(xlim=(0, 1), xlabel="share of the variance of log ratio")
    right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    return fig


@styled
def plot_reality(shares: pd.DataFrame, bands: dict[str, tuple[float, float]],
                 measured: Mapping[str, float] | None = None) -> Figure:
    """Published inference shares (rows of data/inference_share.csv: measurements as dots, filled
    for a language-model developer's own compute and hollow for fleets that ran other models too;
    forecasts as diamonds) beside ranges from the chapter's models (``bands``: label -> (low, high)
    share) and the chapter's own measured shares (``measured``: label -> share, filled dots). The top
    axis gives the same shares as ratios of inference to training, share / (1 − share)."""
    measured = dict(measured or {})
    rows = shares.sort_values("inference_share", kind="stable")
    forecast = rows["claim"].str.contains("forecast", case=False).to_numpy()
    non_llm = ~forecast & (rows["workload"] != "LLM").to_numpy()
    names = [f"{c.split(':')[0].replace(' forecast', '')}, {s} {int(y)}"
             for c, s, y in zip(rows["claim"], rows["scope"], rows["year"], strict=True)]
    labels = [*bands, *measured, *names]
    fig, ax = plt.subplots(figsize=(7.6, 0.42 * len(labels) + 1.9))
    for i, (low, high) in enumerate(bands.values()):
        ax.plot([low, high], [i, i], color=SERVE, lw=9, solid_capstyle="butt", alpha=0.75)
    first = len(bands) + len(measured)
    y = np.arange(first, len(labels))
    llm = ~forecast & ~non_llm
    ax.scatter([*measured.values(), *rows["inference_share"][llm]],
               [*range(len(bands), first), *y[llm]], color=TRAIN, s=55, zorder=3,
               label="measurement, language models")
    ax.scatter(rows["inference_share"][non_llm], y[non_llm], facecolors="none", edgecolors=TRAIN, s=55,
               zorder=3, label="measurement, fleet not only LLMs")
    ax.scatter(rows["inference_share"][forecast], y[forecast], color=PALETTE["orange"], marker="D", s=50,
               zorder=3, label="published forecast")
    ax.plot([], [], color=SERVE, lw=9, alpha=0.75, label="this chapter's annual flows")
    ax.axvline(10 / 11, color=PALETTE["black"], ls="--", lw=1.2, label="inference = 10 × training")
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=10)
    ax.set(xlim=(0, 1), ylim=(-0.6, len(labels) - 0.4), xlabel="inference share of the total")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    ratios = [0.1, 0.5, 1, 2, 10]
    top = ax.secondary_xaxis("top")
    top.set_xticks([r / (1 + r) for r in ratios], [f"{r:g}×" for r in ratios])
    top.set_xlabel("inference / training")
    ax.legend(loc="upper center", bbox_to_anchor=(0.3, -0.1), ncols=2, fontsize=9, frameon=False)
    return fig
