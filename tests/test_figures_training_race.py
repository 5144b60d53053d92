"""The final chapter's figures, read back from their artists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_hex

from chipbook import training_race as race
from chipbook.figures import training_race as figures


def _outcome(name, chips, hold, compute, efficiency, days, binds):
    return race.Outcome(name, hold, compute, chips, "", 0, 0, 0, efficiency, days, binds)


def test_binding_panels_show_chips_shares_and_what_binds():
    rows = [_outcome("a", 1000.0, 10.0, 990.0, 0.9, 100.0, "compute"),
            _outcome("b", math.nan, 5000.0, 2000.0, math.nan, math.nan, "capacity"),
            _outcome("c", 300.0, 20.0, 290.0, 0.4, 300.0, "scale-out bandwidth")]
    fig = figures.plot_binding(rows, 90)
    left, right = fig.axes
    used = [line for line in left.get_lines() if line.get_marker() == "D"]
    assert [line.get_xdata()[0] for line in used] == [1000.0, 300.0]  # top row first
    np.testing.assert_allclose(sorted(b.get_width() for b in right.patches), [0.4, 0.9])
    colours = {to_hex(line.get_color()) for line in used}
    assert colours == {figures.BIND_COLOURS[b].lower() for b in ("compute", "scale-out bandwidth")}
    # each system's two counts, capacity's square and compute's dot, top row first
    squares = [line.get_xdata()[0] for line in left.get_lines() if line.get_marker() == "s"]
    dots = [line.get_xdata()[0] for line in left.get_lines() if line.get_marker() == "o"]
    assert squares == [10.0, 5000.0, 20.0] and dots == [990.0, 2000.0, 290.0]
    texts = [t.get_text() for t in right.texts]
    assert "not timed: capacity, no layout fits" in texts and {"100 d", "300 d"} <= set(texts)
    assert right.get_lines()[0].get_xdata()[0] == pytest.approx(race.NETWORK_BOUND_BELOW)


def test_switching_lines_follow_the_formula():
    spends = np.geomspace(1e8, 1e10, 5)
    curve = race.required_speedup(spends, porting_cost=1e8, retune_share=0.05, failure_probability=0.1,
                                  failure_share=0.3, years=3)
    fig = figures.plot_switching(spends, {"x": curve}, {"chip": 1.3})
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    # by hand at $1B: 1 / (1 - (0.1 + 0.05 + 0.03) / 3)
    assert line.get_ydata()[2] == pytest.approx(1 / (1 - 0.18 / 3))
    assert ax.get_lines()[1].get_ydata()[0] == pytest.approx(1.3)


def test_design_bars_read_back():
    fig = figures.plot_design(2e6, 1e6, 500.0, 24.0, "compute")
    left, right = fig.axes
    np.testing.assert_allclose([p.get_height() for p in left.patches], [1e6, 2e6])
    np.testing.assert_allclose([p.get_height() for p in right.patches], [24.0, 500.0])
    cannot = figures.plot_design(math.nan, 1e6, 500.0, 24.0, "capacity")
    assert len(cannot.axes[0].patches) == 1
    assert any("capacity" in t.get_text() for t in cannot.axes[0].texts)
