"""The chapter figures draw what the models compute: each figure's artists are read back and
compared with values computed here from the data and the formulas, not with the figure's own code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet

from chipbook import data, fmt, market
from chipbook.figures import market as figures

H100_PEAK = 989e12  # data/chips.csv, dense BF16


@pytest.fixture(scope="module")
def models():
    return data.load("models")


def test_breakeven_bars_are_three_times_the_training_tokens(models):
    fig = figures.plot_breakeven(models)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    widths = {label: bar.get_width() for label, bar in zip(labels, ax.patches, strict=True)}
    tokens = models.set_index("model")["train_tokens"]
    assert set(widths) == set(tokens.index)
    for name, width in widths.items():
        assert width == pytest.approx(3 * tokens[name])


def test_crossover_is_marked_where_the_drawn_lines_meet():
    n, d, per_day, u_train, u_serve = 4.05e11, 1.56e13, 1e11, 0.41, 0.2
    fig = figures.plot_crossover(n, d, per_day, u_serve, train_utilisation=u_train, peak_flop_s=H100_PEAK,
                                 chip="H100", name="test")
    ax = fig.axes[0]
    training, serving, _flop_parity, marker = ax.get_lines()
    # training: 6ND FLOP at u_train of an H100, in hours
    assert training.get_ydata()[0] == pytest.approx(6 * n * d / (H100_PEAK * u_train) / 3600)
    # where the serving line, interpolated in log space, reaches the training line
    days, hours = serving.get_xdata(), serving.get_ydata()
    meet = np.exp(np.interp(np.log(training.get_ydata()[0]), np.log(hours), np.log(days)))
    assert marker.get_xdata()[0] == pytest.approx(meet, rel=1e-3)
    assert "H100-hours" in ax.get_ylabel()


def test_crossover_with_research_overhead_moves_the_training_line():
    n, d, per_day, u_train, u_serve, o = 2.2e10, 3.6e13, 1e11, 0.35, 0.37, 3.3
    fig = figures.plot_crossover(n, d, per_day, u_serve, train_utilisation=u_train, peak_flop_s=H100_PEAK,
                                 chip="H100", train_overhead=o)
    training = fig.axes[0].get_lines()[0]
    assert training.get_ydata()[0] == pytest.approx(o * 6 * n * d / (H100_PEAK * u_train) / 3600)
    assert "research" in training.get_label()


def test_crossover_beyond_the_axis_is_said_in_years():
    fig = figures.plot_crossover(4.05e11, 1.56e13, 1e8, 0.2, train_utilisation=0.41, peak_flop_s=H100_PEAK,
                                 chip="H100")
    texts = [t.get_text() for t in fig.axes[0].texts]
    years = 3 * 1.56e13 / 1e8 * 0.2 / 0.41 / 365
    assert any(t.startswith("crosses after") and t.endswith("years") and f"{years:,.0f}" in t for t in texts)


def test_population_titles_report_the_simulated_year():
    kw = dict(served_tokens=1e17, train_flop_range=(7.2e23, 4.6e26), tokens_per_param_range=(38.5, 1875.0),
              size_usage_correlation=0.5, draws=50, seed=3)
    fig = figures.plot_population(100, 1.0, **kw)
    left, right = fig.axes
    pop = market.simulate_population(100, 1.0, **kw)
    assert left.get_title() == f"{pop.breakeven_share.mean():.0%} of models break even"
    x, y = left.get_lines()[0].get_data()
    assert np.allclose(x, pop.train_flop)
    assert np.allclose(y, pop.serve_flop)
    assert right.get_title() == f"median ratio {fmt.num(float(np.median(pop.ratio)), 2)}"


def test_population_grid_shows_each_ratio_in_its_cell_the_contours_and_the_reference_count():
    n_models = [1, 10, 100]
    concentrations = [0.8, 1.0, 1.2, 1.4]
    # ratio[i, j]: i-th model count, j-th concentration; each cell's value is unique
    ratio = np.array([[0.5, 2.0, 20.0, 50.0], [0.3, 3.0, 30.0, 60.0], [0.2, 4.0, 40.0, 70.0]])
    fig = figures.plot_population_grid(n_models, concentrations, ratio, ylabel="usage concentration s",
                                       reference_models=40, reference_label="a count", case_y=1.2)
    ax = fig.axes[0]
    mesh = next(artist for artist in ax.collections if isinstance(artist, QuadMesh))
    drawn = np.asarray(mesh.get_array()).reshape(len(concentrations), len(n_models))
    for i in range(len(n_models)):
        for j in range(len(concentrations)):
            assert drawn[j, i] == ratio[i, j]  # row: concentration (y), column: model count (x)
    contours = next(artist for artist in ax.get_children() if isinstance(artist, ContourSet))
    assert list(contours.levels) == [1, 10]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "usage concentration s"
    assert fig.axes[1].get_ylabel() == "median inference / training FLOP"
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xdata()[0] == 40
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xydata()[0]) == [40, 1.2]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["40 a year: a count", "the chapter's case, usage concentration s = 1.2"]


def test_population_grid_has_no_reference_unless_asked_and_no_star_without_a_line():
    ratio = np.array([[20.0, 40.0], [2.0, 4.0], [0.2, 0.4]])
    ax = figures.plot_population_grid([10, 100, 1000], [0.0, 1.0], ratio, ylabel="rho").axes[0]
    assert not ax.get_lines() and ax.get_legend() is None
    with pytest.raises(ValueError, match="case_y"):
        figures.plot_population_grid([10, 100, 1000], [0.0, 1.0], ratio, ylabel="rho", case_y=0.5)


def test_joint_histogram_counts_every_draw_and_bars_are_the_shares():
    rng = np.random.default_rng(0)
    ratio = np.exp(rng.normal(0, 2, 1000))
    shares = pd.Series({"a": 0.7, "b": 0.2, "c": 0.1})
    fig = figures.plot_joint(ratio, shares, {"a": "A", "b": "B"})
    left, right = fig.axes
    assert sum(p.get_height() for p in left.patches) == 1000
    above = int((ratio > 10).sum())
    assert left.get_title() == f"{fmt.pct(above / 1000, 2)} of draws above 10×"
    assert [p.get_width() for p in right.patches] == [0.1, 0.2, 0.7]  # largest on top
    assert [t.get_text() for t in right.get_yticklabels()] == ["c", "B", "A"]


def test_reality_has_a_row_for_every_band_and_published_share():
    shares = data.load("inference_share")
    bands = {"model A": (0.2, 0.5), "model B": (0.6, 0.9)}
    fig = figures.plot_reality(shares, bands)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[:2] == list(bands)
    assert len(labels) == len(bands) + len(shares)
    # measurements of fleets that also ran other models than language models are drawn hollow
    ax = fig.axes[0]
    hollow = [c for c in ax.collections if len(c.get_offsets()) and c.get_facecolors().size == 0]
    assert len(hollow) == 1
    mixed = (shares.workload != "LLM") & ~shares.claim.str.contains("forecast", case=False)
    expected = shares.loc[mixed, "inference_share"]
    assert len(expected) == 4
    assert sorted(hollow[0].get_offsets()[:, 0]) == sorted(expected)


def test_reality_draws_the_chapters_measurements_filled_in_their_rows_and_a_ratio_scale():
    shares = data.load("inference_share")
    bands = {"model A": (0.2, 0.5)}
    fig = figures.plot_reality(shares, bands, measured={"measured C": 6 / 7})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:2] == ["model A", "measured C"] and len(labels) == 2 + len(shares)
    filled = next(c for c in ax.collections if c.get_label() == "measurement, language models")
    points = {tuple(p) for p in filled.get_offsets()}
    assert (6 / 7, 1.0) in points
    llm = shares[shares.workload == "LLM"].inference_share
    assert len(points) == 1 + len(llm)
    top = next(child for child in ax.get_children() if type(child).__name__ == "SecondaryAxis")
    ticks = dict(zip([t.get_text() for t in top.get_xticklabels()], top.get_xticks(), strict=True))
    assert ticks["1×"] == 0.5 and abs(ticks["10×"] - 10 / 11) < 1e-12 and abs(ticks["2×"] - 2 / 3) < 1e-12
