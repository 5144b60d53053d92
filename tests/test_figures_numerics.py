"""The figures of the low-precision chapter draw what the models compute: artists are read back and
compared with values computed here, from the models or from first principles."""

from __future__ import annotations

import numpy as np
import pytest

from chipbook import numerics as nm
from chipbook.figures import numerics as figures


@pytest.fixture(scope="module")
def task_small():
    return nm.make_task(0, n_train=256, n_test=256)


@pytest.fixture(scope="module")
def runs():
    task = nm.make_task(0, n_train=256, n_test=256)
    bf16 = nm.Recipe(compute="bf16", grad="bf16", weights="bf16")
    return {"fp32": nm.train(nm.Recipe(), task, [1e-3, 1e-2], [0, 1], steps=20),
            "bf16": nm.train(bf16, task, [1e-3, 1e-2], [0, 1], steps=20)}


def test_format_histogram_counts_every_gradient_by_its_fate():
    rng = np.random.default_rng(0)
    grads = 10.0 ** rng.uniform(-10, 6, 3000)
    fig = figures.plot_format("fp16", grads)
    hist = fig.axes[1]
    counts = [round(patch.get_data().values.sum()) for patch in hist.patches]
    # fp16: below half the smallest subnormal (2^-25) flushes, below 2^-14 is subnormal, above the
    # midpoint between 65504 and 65536 overflows (no value here lands on a boundary)
    flushed = np.sum(grads < 2.0**-25)
    overflow = np.sum(grads >= 65520)
    subnormal = np.sum((grads >= 2.0**-25) & (grads < 2.0**-14))
    assert counts == [flushed, subnormal, len(grads) - flushed - subnormal - overflow, overflow]
    labels = [t.get_text() for t in hist.get_legend().get_texts()]
    assert labels[0] == f"flushed to zero: {flushed / len(grads):.0%}"
    assert fig.axes[0].get_title().endswith(f"{flushed / len(grads):.0%} of gradients flush")


def test_format_grad_factor_moves_the_gradients_before_the_cast():
    grads = np.array([1e-3, 1e-6])
    # times 2^-12: 2.4e-7 is a subnormal of fp16, 2.4e-10 flushes (below half of 2^-24)
    fig = figures.plot_format("fp16", grads, grad_factor=2.0**-12)
    counts = [round(patch.get_data().values.sum()) for patch in fig.axes[1].patches]
    assert counts == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="grad_factor must be a finite number > 0"):
        figures.plot_format("fp16", grads, grad_factor=0.0)


def test_format_error_curve_is_the_largest_rounding_error_found_by_casting():
    fig = figures.plot_format("fp16")
    x, err = fig.axes[0].get_lines()[0].get_data()
    normal = (x >= 2.0**-14) & (x < 65504)
    assert err[normal].max() <= 2.0**-11 and err[normal].min() > 2.0**-12  # between u/2 and u
    assert np.all(err[x < 2.0**-25] == 1.0) and np.all(np.isnan(err[x > 65504]))
    rng = np.random.default_rng(1)
    for xi, e in zip(x[::37], err[::37], strict=True):  # cast values around xi: none errs by more
        if np.isnan(e) or e == 1.0:
            continue
        near = (xi * (1 + rng.uniform(-0.01, 0.01, 2000))).astype(np.float32)
        worst = np.max(np.abs(near.astype(np.float16).astype(np.float64) - near) / near)
        assert worst <= e * 1.02 + 1e-12


def test_accumulation_lines_are_the_median_errors():
    bits, promote = [10, 23], [None, 64]
    errors = nm.accumulation_errors(256, bits, promote, trials=4)
    fig = figures.plot_accumulation(errors, bits, promote, 128, 64)
    left, right = fig.axes
    solid = [line for line in left.get_lines() if line.get_linestyle() == "-"]
    x, y = solid[0].get_data()
    want = np.median(errors[0, 1][:, x - 1], axis=0)
    np.testing.assert_allclose(y, np.where(want > 0, want, np.nan))  # exact sums are not drawn on a log axis
    assert any(line.get_xdata()[0] == 128 for line in left.get_lines() if line.get_linestyle() == "--")
    heights = [p.get_height() for p in right.patches]
    np.testing.assert_allclose(heights[:2], np.median(errors[:, 0, :, 127], axis=1))


def test_sweep_marks_each_recipes_best_learning_rate(runs):
    fig = figures.plot_lr_sweep(runs, stable=1.0)
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    for star, run in zip(stars, runs.values(), strict=True):
        mean = run.test_loss.mean(axis=1)
        assert star.get_ydata()[0] == pytest.approx(mean.min())
        assert star.get_xdata()[0] == pytest.approx(run.lrs[np.argmin(mean)], rel=0.05)


def test_curves_are_the_seed_means(runs):
    fig = figures.plot_curves(runs, "t", lr_index=1)
    for line, run in zip(fig.axes[0].get_lines(), runs.values(), strict=True):
        np.testing.assert_allclose(line.get_ydata(), run.loss[:, 1, :].mean(axis=1))


def test_inference_bars_are_the_means():
    columns = {"served": {"a": np.array([0.7, 0.8]), "b": np.array([0.5, 0.6])},
               "trained": {"a": np.array([0.2, 0.4]), "b": np.array([0.1, 0.3])}}
    fig = figures.plot_inference(np.array([0.75, 0.8]), columns)
    heights = [bar.get_height() for bars in fig.axes[0].containers for bar in bars]
    np.testing.assert_allclose(heights, [0.75, 0.55, 0.3, 0.2])
    assert fig.axes[0].get_lines()[0].get_ydata()[0] == pytest.approx(0.775)


def test_loss_scale_marks_each_halving(task_small):
    run = nm.train(nm.Recipe(compute="fp16", grad="fp16", loss_scale="dynamic"), task_small, [3e-3], [0],
                   steps=40, growth_interval=5)
    fig = figures.plot_loss_scale(run)
    marks = next(line for line in fig.axes[0].get_lines() if line.get_marker() == "v")
    scale = run.loss_scale[:, 0]
    # a skipped step is one after which the scale halves; count them from the scales themselves
    halvings = [s for s in range(len(scale) - 1) if scale[s + 1] == scale[s] / 2]
    assert list(marks.get_xdata())[:len(halvings)] == halvings
    assert len(marks.get_xdata()) == run.skipped[0, 0] > 0 and len(halvings) >= run.skipped[0, 0] - 1


def test_spike_lines_are_the_traces(task_small):
    fp8 = dict(compute="fp8_e4m3", grad="fp8_e5m2")
    runs = {s: nm.train(nm.Recipe(**fp8, scaling=s), task_small, [3e-3], [0, 1], steps=8, spike=(4, 100.0))
            for s in ("tensor", "delayed")}
    fig = figures.plot_scaling_spike(runs, 4)
    left, right = fig.axes
    for line, run in zip(left.get_lines()[:2], runs.values(), strict=True):
        np.testing.assert_allclose(line.get_ydata(), run.error_trace.mean(axis=1))
    for line, run in zip(right.get_lines()[:2], runs.values(), strict=True):
        np.testing.assert_allclose(line.get_ydata(), run.flush_trace.mean(axis=1))


def test_sweep_highlight_fades_the_others(runs):
    fig = figures.plot_lr_sweep(runs, stable=1.0, highlight="bf16")
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert [s.get_alpha() for s in stars] == [1.0, 1.0]
    with pytest.raises(ValueError, match="highlight must be None or one of"):
        figures.plot_lr_sweep(runs, stable=1.0, highlight="fp8")


def test_state_drift_bars_are_the_mean_drift(runs):
    fig = figures.plot_state_drift(runs, {"bf16": np.array([0.01, 0.03])})
    assert fig.axes[1].patches[0].get_height() == pytest.approx(0.02)


def test_state_curves_are_differences_from_the_reference(runs):
    """The left panel draws each run's loss minus the reference's, seed by seed, so that runs whose
    curves nearly coincide do not sit on top of one another."""
    fig = figures.plot_state_drift(runs, {"bf16": np.array([0.01, 0.03])})
    left = fig.axes[0]
    zero, line = left.get_lines()
    assert set(zero.get_ydata()) == {0}
    by_hand = (runs["bf16"].loss[:, 0, :] - runs["fp32"].loss[:, 0, :]).mean(axis=1)
    np.testing.assert_allclose(line.get_ydata(), by_hand)
    assert left.get_yscale() == "symlog"
    with pytest.raises(ValueError, match="runs must hold the reference"):
        figures.plot_state_drift({"fp32": runs["fp32"]}, {})


def test_outlier_points_are_seed_means_and_ranges():
    ks = np.array([0, 6, 13])
    excess = {"per-tensor": (ks, np.array([[0.1, 0.3], [0.2, 0.4], [1.0, 3.0]])),
              "MX": (ks[:2], np.array([[0.1, 0.1], [0.2, 0.2]]))}
    errors = {"per-tensor": (ks, np.array([[0.01, 0.03], [0.02, 0.02], [0.5, 0.7]]))}
    fig = figures.plot_outliers(excess, errors, {"fp32": np.array([0.05, 0.07])})
    left, right = fig.axes
    assert left.get_lines()[0].get_ydata()[0] == pytest.approx(0.06)  # the baseline's mean
    points = [line for line in left.get_lines() if line.get_marker() in ("o", "s")]
    np.testing.assert_allclose(points[0].get_xdata(), ks)
    np.testing.assert_allclose(points[0].get_ydata(), [0.2, 0.3, 2.0])
    np.testing.assert_allclose(points[1].get_ydata(), [0.1, 0.2])
    bars = left.containers[0].lines[2][0].get_segments()  # the per-tensor run's seed ranges
    np.testing.assert_allclose([(s[0][1], s[1][1]) for s in bars], [(0.1, 0.3), (0.2, 0.4), (1.0, 3.0)])
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), [0.02, 0.02, 0.6])
    with pytest.raises(ValueError, match="excess must name every recipe"):
        figures.plot_outliers({}, {}, {})
