"""The memory chapter's figures draw what the models compute: artists are read back and compared with
values computed here from the data and the formulas, not with the figures' own code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chipbook.figures import memory as figures


def test_state_bars_are_bytes_per_parameter_times_parameters():
    params = {"small": 8e9, "large": 4.05e11}
    fig = figures.plot_state_bytes(params, ["mixed-adam", "mixed-adam-fp32-grads"])
    ax = fig.axes[0]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    expected = sorted(round(n * b / 1e9, 6) for n in params.values() for b in (2, 16, 18))
    assert widths == expected
    assert [t.get_text() for t in ax.get_yticklabels()] == list(params)


def test_measured_figure_plots_the_given_bytes_in_mib():
    depths = [1, 2, 4]
    measured = {"training": [2**20, 2**21, 2**22], "inference": [2**19] * 3}
    modelled = {"training": [2**20, 2**21, 2**22], "inference": [2**19] * 3}
    fig = figures.plot_measured(depths, measured, modelled, title="t")
    lines = fig.axes[0].get_lines()
    assert list(lines[0].get_ydata()) == [1, 2, 4]     # training model, MiB
    assert list(lines[3].get_ydata()) == [0.5] * 3     # inference measured, MiB
    assert fig.axes[0].get_ylabel() == "peak memory, weights included (MiB)"


def test_chips_needed_dots_sit_at_the_counts():
    pairs = [(w, t) for w in ("inference", "training") for t in figures.TIER_SETS]
    columns = pd.MultiIndex.from_tuples(pairs)
    counts = pd.DataFrame([[3, 2, 2, 30, 20, 5], [100, math.inf, 7, 900, math.inf, 40]],
                          index=["chip A", "chip B"], columns=columns)
    fig = figures.plot_chips_needed(counts, title="t")
    left = fig.axes[0]
    finite_x = sorted(x for coll in left.collections for x, _ in coll.get_offsets() if x < 1000)
    assert finite_x == [2, 2, 3, 7, 100]
    crosses = [coll for coll in left.collections if len(coll.get_offsets())
               and coll.get_offsets()[0][0] >= 1000]
    assert len(crosses) == 1  # chip B has no HBM: one cross in the inference panel


def test_roofline_places_decode_with_its_kv_cache():
    peak, bw, batch, n, kv = 989e12, 3.35e12, 8, 7e10, 1.34e9
    fig = figures.plot_roofline(peak, bw, batch, chip="H100", tier="HBM", params=n, kv_bytes_per_seq=kv,
                                train_intensity=3000.0)
    ax = fig.axes[0]
    roof, decode, bare = ax.get_lines()[:3]
    (train,) = [line for line in ax.get_lines() if line.get_marker() == "s"]
    intensity = 2 * n * batch / (2 * n + batch * kv)  # FLOP over bytes of weights and KV caches
    assert decode.get_xdata()[0] == pytest.approx(intensity)
    assert decode.get_ydata()[0] == pytest.approx(intensity * bw / 1e12)
    assert bare.get_xdata()[0] == pytest.approx(2 * batch / 2)  # without the KV cache: 2B/b
    assert train.get_ydata()[0] == pytest.approx(peak / 1e12)  # past the ridge: compute-bound
    assert np.max(roof.get_ydata()) == pytest.approx(peak / 1e12)
    limits = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert limits == [pytest.approx(2 * n / kv)]


def test_step_time_meets_the_compute_line_past_the_crossover():
    n, peak, bw = 1e9, 1e15, 1e12
    fig = figures.plot_step_time(n, "mixed-adam", peak, bw, {"HBM": None}, micro_batch_tokens=10**7, name="t")
    memory_line, compute_line = fig.axes[0].get_lines()
    tokens = compute_line.get_xdata()
    assert np.allclose(compute_line.get_ydata(), 6 * n * tokens / peak)
    # one micro-batch per step: 34 bytes per parameter of traffic, all in the one tier
    assert np.allclose(memory_line.get_ydata(), np.maximum(6 * n * tokens / peak, 34 * n / bw))


def test_step_time_with_a_slow_tier_for_the_optimizer_state():
    n, peak, fast, slow = 1e9, 1e15, 1e13, 1e10
    fig = figures.plot_step_time(n, "mixed-adam", peak, fast, {"slow": slow}, micro_batch_tokens=10**7,
                                 name="t", mark=("run", 1e5))
    memory_line, compute_line, mark = fig.axes[0].get_lines()
    tokens = compute_line.get_xdata()
    expected = np.maximum.reduce([6 * n * tokens / peak, np.full_like(tokens, 10 * n / fast),
                                  np.full_like(tokens, 24 * n / slow)])
    assert np.allclose(memory_line.get_ydata(), expected)
    assert list(mark.get_xdata()) == [1e5, 1e5]


def test_capacity_against_compute_draws_dots_and_bars():
    hold = {"A": 88, "B": 30_000, "C": 160}
    compute = {"A": (12_000, 20_000), "B": (63_000, 105_000)}
    fig = figures.plot_capacity_vs_compute(hold, compute, title="t")
    ax = fig.axes[0]
    dots = ax.collections[0].get_offsets()
    assert [tuple(p) for p in dots] == [(88, 0), (30_000, 1), (160, 2)]
    bars = [(tuple(line.get_xdata()), line.get_ydata()[0]) for line in ax.get_lines()]
    assert bars == [((12_000, 20_000), 0), ((63_000, 105_000), 1)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C"]
