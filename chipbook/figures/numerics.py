"""Figures of the chapter "Low-precision training"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from chipbook import fmt, numerics
from chipbook.figures.market import POW10
from chipbook.style import PALETTE, SERVE, TRAIN, styled

#: One colour per fate of a gradient value, in numerics.FATES order.
FATE_COLOURS = (PALETTE["vermillion"], PALETTE["orange"], PALETTE["blue"], PALETTE["purple"])
COLOURS = [PALETTE[c] for c in ("black", "blue", "orange", "green", "vermillion", "sky", "purple")]


def _magnitude_axis(ax, lo: float, hi: float) -> None:
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.minorticks_off()
    ax.set_xticks(10.0 ** np.arange(np.ceil(np.log10(lo)), np.floor(np.log10(hi)) + 1, 4))
    ax.xaxis.set_major_formatter(POW10)


@styled
def plot_format(fmt_name: str, grads: np.ndarray | None = None, loss_scale: float = 1.0,
                grad_factor: float = 1.0) -> Figure:
    """Largest relative rounding error of ``fmt_name`` against magnitude (round to nearest), its smallest
    subnormal, smallest normal and largest value, and, when ``grads`` is given, the histogram of
    those gradient magnitudes times ``grad_factor`` (for example 64 / D, to move gradients measured
    with a per-rank loss divisor of 64 to a divisor D) times ``loss_scale``, coloured by what the
    cast does to them."""
    f = numerics.get_format(fmt_name)
    lo, hi = 1e-14, 1e6
    x = np.geomspace(lo, hi, 400)
    # the largest relative error of rounding a value near x: half the gap at x, over x; 100% where it
    # flushes (below half the smallest subnormal); nothing past the largest value
    err = np.where(x < f.min_subnormal / 2, 1.0, np.minimum(numerics.spacing(x, fmt_name) / (2 * x), 1.0))
    err = np.where(x <= f.max, err, np.nan)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(x, err, color=PALETTE["black"], lw=1.6, label="largest relative rounding error")
    ax.axhline(f.epsilon / 2, color=PALETTE["black"], ls=":", lw=1,
               label=f"unit roundoff 2^-{f.mantissa_bits + 1}")
    for value, label in ((f.min_subnormal, "smallest subnormal"), (f.min_normal, "smallest normal"),
                         (f.max, "largest")):
        if lo < value < hi:
            ax.axvline(value, color=PALETTE["sky"], lw=1.2, ls="--")
            right = label == "largest"  # keep the last label inside the axes
            ax.text(value, 3e-9, f"{label} " if right else f" {label}", rotation=90, fontsize=8, va="bottom",
                    ha="right" if right else "left", color=PALETTE["blue"])
    ax.set(yscale="log", ylim=(1e-9, 2), ylabel="relative error of one cast",
           xlabel="magnitude" + (f" (gradients × {fmt.sci(loss_scale, 2)})" if loss_scale != 1 else ""))
    if grad_factor <= 0 or not np.isfinite(grad_factor):
        raise ValueError(f"grad_factor must be a finite number > 0, got {grad_factor!r}")
    _magnitude_axis(ax, lo, hi)
    title = f"{f.name}: {f.exponent_bits} exponent, {f.mantissa_bits} mantissa bits"
    if grads is not None:
        g = np.abs(np.asarray(grads, dtype=np.float64))
        g = g[g > 0] * grad_factor * loss_scale
        shares = numerics.fates(g, fmt_name)
        hist = ax.twinx()
        bins = np.geomspace(lo, hi, 81)
        with np.errstate(over="ignore"):
            qg = np.abs(numerics.quantize(g, fmt_name))
        fate = np.select([qg == 0, ~np.isfinite(qg) | (g > f.max), qg < f.min_normal], [0, 3, 1], 2)
        for i, name in enumerate(numerics.FATES):
            counts, _ = np.histogram(np.clip(g[fate == i], lo, hi), bins=bins)
            hist.stairs(counts, bins, fill=True, color=FATE_COLOURS[i], alpha=0.55,
                        label=f"{name}: {shares[name]:.0%}")
        hist.set_yticks([])
        hist.set_ylabel("gradient values (histogram)")
        hist.legend(loc="upper left", fontsize=8, frameon=False)
        title += f"; {shares['flushed to zero']:.0%} of gradients flush"
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=11)
    return fig


def _band(ax, run: numerics.Run, lr_index: int, colour, label: str, ls: str = "-"):
    loss = run.loss[:, lr_index, :]
    mean = loss.mean(axis=1)
    ax.plot(run.eval_steps, mean, color=colour, ls=ls, label=label)
    if loss.shape[1] > 1:
        ax.fill_between(run.eval_steps, loss.min(axis=1), loss.max(axis=1), color=colour, alpha=0.2, lw=0)


@styled
def plot_curves(runs: Mapping[str, numerics.Run], title: str, lr_index: int = 0) -> Figure:
    """Training loss against step for each run (mean over seeds; the band spans the seeds)."""
    fig, ax = plt.subplots()
    for i, (label, run) in enumerate(runs.items()):
        _band(ax, run, lr_index, COLOURS[i % len(COLOURS)], label, ls="-" if i % 2 == 0 else "--")
    ax.set(xlabel="training step", ylabel="training loss (cross-entropy)", title=title)
    ax.legend(fontsize=9)
    return fig


@styled
def plot_accumulation(errors: np.ndarray, bits: Sequence[int], promote: Sequence[int | None], k: int,
                      n_c: int | None) -> Figure:
    """Left: median relative error of dot products against their length K for each accumulator
    width at promotion interval ``n_c``, with the same widths never promoted as thin dotted lines,
    and a marker at ``k``. Right: the error at K = ``k`` per width, never promoted and promoted
    every ``n_c`` (bars: median; lines: the largest of the trials). ``errors`` is
    numerics.accumulation_errors(…, bits, promote)."""
    j = list(promote).index(n_c)
    j0 = list(promote).index(None)
    ks = np.arange(1, errors.shape[-1] + 1)
    pick = np.unique(np.geomspace(1, ks[-1], 120).astype(int)) - 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.9), width_ratios=(1.5, 1))
    for i, b in enumerate(bits):
        colour = COLOURS[(i + 1) % len(COLOURS)]
        median = np.median(errors[i, j][:, pick], axis=0)
        left.plot(ks[pick], np.where(median > 0, median, np.nan), color=colour, label=f"{b} bits")  # 0: exact
        if j != j0:
            never = np.median(errors[i, j0][:, pick], axis=0)
            left.plot(ks[pick], np.where(never > 0, never, np.nan), color=colour, lw=1, ls=":")
    left.axvline(k, color=PALETTE["black"], lw=1, ls="--")
    left.set(xscale="log", yscale="log", ylim=(1e-9, 1), xlim=(1, ks[-1] * 1.3),
             xlabel="dot-product length K", ylabel="relative error (median)",
             title="never promoted" if n_c is None else f"promoted every {n_c} (dotted: never)")
    left.minorticks_off()
    left.yaxis.set_major_formatter(POW10)
    left.legend(fontsize=8, loc="lower right")
    x = np.arange(len(bits))
    never = errors[:, j0, :, k - 1]
    chosen = errors[:, j, :, k - 1]
    right.bar(x - 0.2, np.median(never, axis=1), 0.4, color=TRAIN, label="never promoted")
    right.bar(x + 0.2, np.median(chosen, axis=1), 0.4, color=SERVE,
              label="never" if n_c is None else f"every {n_c}")
    right.scatter(x - 0.2, never.max(axis=1), marker="_", s=200, color=PALETTE["black"])
    right.scatter(x + 0.2, chosen.max(axis=1), marker="_", s=200, color=PALETTE["black"], label="largest")
    right.set(yscale="log", ylim=(1e-9, 1), xticks=x, xticklabels=[str(b) for b in bits],
              xlabel="accumulator mantissa bits", title=f"at K = {k:,}")
    right.minorticks_off()
    right.yaxis.set_major_formatter(POW10)
    right.legend(fontsize=8, loc="upper right")
    return fig


@styled
def plot_lr_sweep(runs: Mapping[str, numerics.Run], stable: float, highlight: str | None = None) -> Figure:
    """Final held-out (test) loss against learning rate per recipe (mean over seeds, bars span the
    seeds), each recipe's best learning rate marked, and the loss ``stable`` below which a run counts
    as training well (dotted). With ``highlight``, that recipe and the first (the reference) are drawn
    in full and the others faintly."""
    if highlight is not None and highlight not in runs:
        raise ValueError(f"highlight must be None or one of {list(runs)}, got {highlight!r}")
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    first = next(iter(runs))
    for i, (label, run) in enumerate(runs.items()):
        colour = COLOURS[i % len(COLOURS)]
        alpha = 1.0 if highlight is None or label in (first, highlight) else 0.2
        final = run.test_loss
        mean = final.mean(axis=1)
        shift = 1.0 + 0.03 * (i - (len(runs) - 1) / 2)  # spread the markers so the bars do not overlap
        ax.errorbar(run.lrs * shift, mean, yerr=[mean - final.min(axis=1), final.max(axis=1) - mean],
                    color=colour, marker="o", ms=4, capsize=2, lw=1.6, label=label, alpha=alpha)
        best = int(np.nanargmin(mean))
        ax.plot(run.lrs[best] * shift, mean[best], marker="*", ms=14, color=colour, ls="none", alpha=alpha)
    ax.axhline(stable, color=PALETTE["black"], ls=":", lw=1)
    ax.set(xscale="log", xlabel="peak learning rate (Adam)", ylabel="final held-out loss",
           title="Learning-rate sweep under each numeric recipe (★ best)")
    ax.minorticks_off()
    ax.xaxis.set_major_formatter(POW10)
    ax.legend(fontsize=8)
    return fig


@styled
def plot_loss_scale(run: numerics.Run, model: int = 0) -> Figure:
    """The dynamic loss scale of one model at every step (log axis), with the steps skipped for an
    overflow marked (each halves the scale for the next step)."""
    scale = run.loss_scale[:, model]
    steps = np.arange(len(scale))
    skipped = np.flatnonzero(run.skip_trace[:, model])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.step(steps, scale, where="post", color=PALETTE["blue"], label="loss scale S")
    ax.plot(skipped, scale[skipped], ls="none", marker="v", color=PALETTE["vermillion"],
            label=f"overflow: step skipped ({len(skipped)})")
    ax.set(yscale="log", xlabel="training step", ylabel="loss scale S", title="Dynamic loss scaling")
    ax.set_yticks(np.unique(scale))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"2^{np.log2(v):.0f}"))
    ax.minorticks_off()
    ax.legend(fontsize=8, loc="lower right")
    return fig


@styled
def plot_scaling_spike(runs: Mapping[str, numerics.Run], spike_step: int) -> Figure:
    """Per step, the relative error of the activation-gradient casts (left) and the share of them
    flushed to zero (right) for each run (mean over its models), with the gradient spike marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.6))
    for i, (label, run) in enumerate(runs.items()):
        colour = COLOURS[(i + 1) % len(COLOURS)]
        steps = np.arange(len(run.error_trace))
        left.plot(steps, run.error_trace.mean(axis=1), color=colour, label=label)
        right.plot(steps, run.flush_trace.mean(axis=1), color=colour, label=label)
    for ax in (left, right):
        ax.axvline(spike_step, color=PALETTE["black"], lw=1, ls="--")
        ax.set_xlabel("training step")
    left.set(yscale="log", ylabel="relative error of the cast (L2)", title="cast error")
    left.minorticks_off()
    left.yaxis.set_major_formatter(POW10)
    right.set(ylabel="share of gradients flushed to zero", title="flushed", ylim=(0, 1))
    left.legend(fontsize=8)
    return fig


@styled
def plot_state_drift(runs: Mapping[str, numerics.Run], drift: Mapping[str, np.ndarray]) -> Figure:
    """Left: the training loss of each run after the first (the reference, fp32 state) minus the
    reference's loss of the same seed, against step (line: mean over seeds; band: the seeds), on a
    scale linear within ±10⁻⁴ and logarithmic beyond, so that curves that nearly coincide separate.
    Right: each run's final distance from the reference run's weights, relative to how far the
    reference moved (bars: mean over seeds; dots: each seed)."""
    if len(runs) < 2:
        raise ValueError("runs must hold the reference (first) and at least one other run")
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.9), width_ratios=(1.4, 1))
    reference_name, reference = next(iter(runs.items()))
    left.axhline(0, color=COLOURS[0], lw=1.2, label=f"{reference_name} (reference)")
    for i, (label, run) in enumerate(runs.items()):
        if i == 0:
            continue
        diff = run.loss[:, 0, :] - reference.loss[:, 0, :]
        colour = COLOURS[i % len(COLOURS)]
        left.plot(run.eval_steps, diff.mean(axis=1), color=colour, ls="-" if i % 2 == 0 else "--",
                  label=label)
        left.fill_between(run.eval_steps, diff.min(axis=1), diff.max(axis=1), color=colour, alpha=0.2, lw=0)
    left.set_yscale("symlog", linthresh=1e-4)
    left.set(xlabel="training step", ylabel=f"training loss minus {reference_name}'s",
             title="NAdam, state in …")
    left.legend(fontsize=8)
    names = list(drift)
    x = np.arange(len(names))
    values = [np.asarray(drift[n]) for n in names]
    colours = [COLOURS[list(runs).index(n) % len(COLOURS)] for n in names]
    right.bar(x, [v.mean() for v in values], color=colours)
    for xi, v in zip(x, values, strict=True):
        right.plot(np.full(v.shape, xi), v, ls="none", marker="o", ms=4, color=PALETTE["black"])
    right.set(yscale="log", xticks=x, ylabel="drift from fp32 weights (relative)", title="final drift")
    right.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
    right.minorticks_off()
    right.yaxis.set_major_formatter(POW10)
    return fig


@styled
def plot_inference(reference: np.ndarray, columns: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Test accuracy of the fp32-trained model (black line and band) and, for each format (x axis),
    one bar per entry of ``columns`` (for example: served in the format, trained in it with an fp32
    master copy, trained in it without one). Bars are the mean over seeds; dots are the seeds."""
    kinds = list(columns)
    names = list(columns[kinds[0]])
    x = np.arange(len(names))
    width = 0.8 / len(kinds)
    colours = (SERVE, PALETTE["green"], TRAIN, PALETTE["sky"])
    fig, ax = plt.subplots(figsize=(6.6, 4.0))
    ref = np.asarray(reference)
    ax.axhspan(ref.min(), ref.max(), color=PALETTE["black"], alpha=0.12, lw=0)
    ax.axhline(ref.mean(), color=PALETTE["black"], lw=1.2, label="fp32, trained and served")
    for k, kind in enumerate(kinds):
        offset = (k - (len(kinds) - 1) / 2) * width
        vals = [np.asarray(columns[kind][n]) for n in names]
        ax.bar(x + offset, [v.mean() for v in vals], width, color=colours[k % len(colours)], label=kind)
        for xi, v in zip(x, vals, strict=True):
            ax.plot(np.full(v.shape, xi + offset), v, ls="none", marker="o", ms=3, color=PALETTE["black"])
    ax.set(ylim=(0, 1), xticks=x, ylabel="test accuracy", title="Serving in low precision vs training in it")
    ax.set_xticklabels(names, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return fig


@styled
def plot_outliers(excess: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  cast_error: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  baselines: Mapping[str, np.ndarray]) -> Figure:
    """The outlier experiment against the outlier channels' gain 2^k. Left: held-out loss above the
    data's floor for each recipe (``excess[recipe] = (k values, values of shape (k, seeds))``; dots:
    the seed mean; bars: the seed range), with each of ``baselines`` (seed values; unaffected by the
    gain) as a horizontal line and band. Right: the relative error of the recipe's cast on the
    channels that are not outliers (``cast_error``, same layout; seed mean). Dotted lines join the
    gains that were run; the legend sits below the panels."""
    if not excess or set(cast_error) - set(excess):
        raise ValueError("excess must name every recipe of cast_error, and at least one")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.8))
    for i, (label, base) in enumerate(baselines.items()):
        b = np.asarray(base, dtype=float)
        colour = (PALETTE["black"], PALETTE["sky"])[i % 2]
        left.axhspan(b.min(), b.max(), color=colour, alpha=0.15, lw=0)
        left.axhline(b.mean(), color=colour, lw=1.2, ls="-" if i % 2 == 0 else "--", label=label)
    markers = "osD^v"
    for i, label in enumerate(excess):
        colour = COLOURS[(i + 1) % len(COLOURS)]
        ks, values = (np.asarray(a, dtype=float) for a in excess[label])
        mean = values.mean(axis=1)
        left.errorbar(ks, mean, yerr=(mean - values.min(axis=1), values.max(axis=1) - mean), color=colour,
                      marker=markers[i % len(markers)], ms=5, capsize=3, ls=":", label=label)
        if label in cast_error:
            ke, errors = (np.asarray(a, dtype=float) for a in cast_error[label])
            right.plot(ke, errors.mean(axis=1), color=colour, marker=markers[i % len(markers)], ms=5, ls=":",
                       label=label)
    for ax in (left, right):
        ax.set(yscale="log", xlabel="gain of the outlier channels (log₂)")
        ax.minorticks_off()
    right.yaxis.set_major_formatter(POW10)
    left.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.set(ylabel="held-out loss above the floor (nats)", title="training")
    right.set(ylabel="relative error of the cast, other channels", title="the cast of a product's input")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.08))
    return fig
