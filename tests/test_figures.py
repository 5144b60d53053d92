"""The chapter figures draw what the models compute: each figure's artists are read back and
compared with values computed here from the data and the formulas, not with the figure's own code."""

from __future__ import annotations

import numpy as np
import pytest

from chipbook import data, market
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


def test_crossover_beyond_the_axis_is_said_in_years():
    fig = figures.plot_crossover(4.05e11, 1.56e13, 1e8, 0.2, train_utilisation=0.41, peak_flop_s=H100_PEAK,
                                 chip="H100")
    texts = [t.get_text() for t in fig.axes[0].texts]
    years = 3 * 1.56e13 / 1e8 * 0.2 / 0.41 / 365
    assert any(t.startswith("crosses after") and t.endswith("years") and f"{years:,.0f}" in t for t in texts)


def test_population_titles_report_the_simulated_year():
    kw = dict(served_tokens=1e17, params_range=(7e9, 5.4e11), train_tokens_range=(3e11, 1.56e13),
              size_usage_correlation=0.5, draws=50, seed=3)
    fig = figures.plot_population(100, 1.0, **kw)
    left, _right = fig.axes
    pop = market.simulate_population(100, 1.0, **kw)
    assert left.get_title() == f"{pop.breakeven_share.mean():.0%} of models break even"
    x, y = left.get_lines()[0].get_data()
    assert np.allclose(x, pop.train_flop)
    assert np.allclose(y, pop.serve_flop)


def test_tornado_bars_span_each_input_swing():
    table = market.sensitivity(lambda a, b: a * b, {"a": 2.0, "b": 3.0}, {"a": (1.0, 4.0), "b": (1.5, 6.0)})
    fig = figures.plot_tornado(table, {"a": "A", "b": "B"})
    ax = fig.axes[0]
    spans = sorted((min(p.get_x(), p.get_x() + p.get_width()), max(p.get_x(), p.get_x() + p.get_width()))
                   for p in ax.patches)
    # a: 1·3 = 3 and 4·3 = 12 around 6; b: 2·1.5 = 3 and 2·6 = 12 around 6
    assert spans == [(3.0, 6.0), (3.0, 6.0), (6.0, 12.0), (6.0, 12.0)]


def test_reality_has_a_row_for_every_band_and_published_share():
    shares = data.load("inference_share")
    bands = {"model A": (0.2, 0.5), "model B": (0.6, 0.9)}
    fig = figures.plot_reality(shares, bands)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[:2] == list(bands)
    assert len(labels) == len(bands) + len(shares)
