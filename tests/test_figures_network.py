"""The networking chapter's figures draw what the models compute: artists are read back and compared
with values worked out here by hand from the formulas of the papers, not with the figures' code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chipbook import data
from chipbook.figures import network as figures


@pytest.fixture(scope="module")
def links():
    return data.load("links")


def test_ring_traffic_image_is_the_neighbour_matrix():
    n = 8
    fig = figures.plot_traffic("ring", n)
    image = fig.axes[0].get_images()[0].get_array()
    expected = np.zeros((n, n))
    for r in range(n):
        expected[r, (r + 1) % n] = 2 * (n - 1) / n  # in units of S [patarasuk2009bandwidth]
    np.testing.assert_allclose(np.asarray(image), expected)
    sent = [p.get_width() for p in fig.axes[1].patches]
    np.testing.assert_allclose(sent, [2 * (n - 1) / n] * n)


def test_naive_and_pipeline_traffic_images():
    n = 4
    naive = np.asarray(figures.plot_traffic("naive", n).axes[0].get_images()[0].get_array())
    assert (naive[1:, 0] == 1).all() and (naive[0, 1:] == 1).all() and naive[1:, 1:].sum() == 0
    pipe = np.asarray(figures.plot_traffic("pipeline", n).axes[0].get_images()[0].get_array())
    assert pipe.sum() == n - 1 and all(pipe[s, s + 1] == 1 for s in range(n - 1))


def test_volume_markers_follow_the_papers_volumes():
    counts = [2, 3, 4, 6, 8]
    fig = figures.plot_volumes(counts, elements=2520)  # 2520 is divisible by every count
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.get_lines()}
    ring = by_label["ring all-reduce, simulated"].get_ydata()
    naive = by_label["naive all-reduce (via rank 0), simulated"].get_ydata()
    np.testing.assert_allclose(ring, [2 * (k - 1) / k for k in counts])
    np.testing.assert_allclose(naive, [k - 1 for k in counts])


def test_scaling_lines_are_the_alpha_beta_efficiency(links):
    rows = links[links.link == "InfiniBand NDR (ConnectX-7)"]
    n_params, tokens, peak, u = 7e10, 1.6e7, 989e12, 0.41
    chips = [8, 1024]
    fig = figures.plot_scaling(rows, params=n_params, tokens_per_step=tokens, peak_flop_s=peak, utilisation=u,
                               chips=chips, model="test")
    line = fig.axes[0].get_lines()[0]
    b, a = 50e9, 5e-6
    for d, eff in zip(chips, line.get_ydata(), strict=True):
        compute = 6 * n_params * tokens / (d * peak * u)
        comm = 2 * (d - 1) * a + 2 * (d - 1) / d * 2 * n_params / b
        assert eff == pytest.approx(compute / (compute + comm))


def test_step_bars_count_active_parameters_for_compute_and_all_for_the_gradient(links):
    moe = pd.DataFrame({"model": ["moe"], "params": [6.71e11], "active_params": [3.7e10]})
    fig = figures.plot_step("PCIe Gen5 x16", 16, links=links, models=moe, tokens_per_step=1e6,
                            peak_flop_s=1e15, utilisation=0.5)
    widths = [p.get_width() for p in fig.axes[0].patches]
    compute = 6 * 3.7e10 * 1e6 / (16 * 1e15 * 0.5)
    comm = 2 * 15 * 3e-6 + 2 * 15 / 16 * 2 * 6.71e11 / 64e9
    assert widths == [pytest.approx(compute), pytest.approx(comm)]


def test_alpha_beta_floor_is_the_ring_latency():
    fig = figures.plot_alpha_beta(8, 4.5e11, 2e-6, link="x", marks={"m": 1e4})
    ax = fig.axes[0]
    floor = next(line for line in ax.get_lines() if line.get_label().startswith("latency term"))
    assert floor.get_ydata()[0] == pytest.approx(14 * 2e-6)
    ring = next(line for line in ax.get_lines() if line.get_label() == "ring all-reduce")
    assert ring.get_ydata()[0] == pytest.approx(14 * 2e-6 + 1.75 * 1e3 / 4.5e11)


def test_topology_bars():
    fig = figures.plot_topologies(16)
    left, right = fig.axes
    demand = [p.get_width() for p in left.patches]  # ring, halving-doubling, naive, pipeline
    assert demand[0] == 2 and demand[1] == 16 and demand[3] == 1
    chain = [p.get_width() for p in right.patches][4:]
    assert chain[0] == pytest.approx(1) and chain[3] == pytest.approx(1)
    # halving-doubling on a 16-chip chain: the step at distance d puts d messages of S/2^k on the
    # middle links; by hand, rounds at d = 8, 4, 2, 1 carry 8·S/2, 4·S/4, 2·S/8, 1·S/16 on the busiest
    # link, twice (halving, then doubling), against S/2 + S/4 + S/8 + S/16 on a switch
    assert chain[1] == pytest.approx(2 * (4 + 1 + 0.25 + 1 / 16) / (2 * (15 / 16)))


def test_message_size_bars_are_the_given_sizes():
    sizes = {"a": 1e12, "b": 3.3e4}
    fig = figures.plot_message_sizes(sizes, ["red", "blue"])
    assert sorted(p.get_width() for p in fig.axes[0].patches) == [3.3e4, 1e12]
