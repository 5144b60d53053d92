"""The networking chapter's figures draw what the models compute: artists are read back and compared
with values worked out here by hand from the formulas of the papers, not with the figures' code."""

from __future__ import annotations

import numpy as np
import pytest

from chipbook.figures import network as figures


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
    innet = by_label["in-network all-reduce (switch adds), simulated"].get_ydata()
    np.testing.assert_allclose(ring, [2 * (k - 1) / k for k in counts])
    np.testing.assert_allclose(naive, [k - 1 for k in counts])
    np.testing.assert_allclose(innet, [1] * len(counts))


def test_traffic_topology_bars_are_hand_routed_slowdowns():
    # a ring all-reduce runs at switch speed on every topology (neighbour links only); one-shot on a
    # chain of 16: the middle link carries every message that crosses it, 8 · 8 buffers each way, against
    # 15 buffers on a rank's switch link
    ring = [p.get_width() for p in figures.plot_traffic("ring", 16).axes[2].patches]
    np.testing.assert_allclose(ring, [1, 1, 1])
    shot = [p.get_width() for p in figures.plot_traffic("one_shot", 16).axes[2].patches]
    names = list(figures.TOPOLOGY_VIEWS)
    assert shot[names.index("chain")] == pytest.approx(64 / 15)
    # fat tree 4:1, leaves of 4: a leaf's 4 ranks send 12 buffers each out of the leaf over one link's worth
    assert shot[names.index("fat tree 4:1")] == pytest.approx(4 * 12 / 15)
    # in-network reduction cannot run on a torus or a chain: no bar there
    innet = [p.get_width() for p in figures.plot_traffic("in_network", 8).axes[2].patches]
    assert innet[names.index("chain")] == 0 and innet[names.index("fat tree 4:1")] == pytest.approx(1)



def test_per_chip_slowdowns_spread_a_chips_bandwidth_over_its_links():
    # one ring on a chain: each link at half a chip's bandwidth carries one chunk each way a step
    ring = figures.simulate("ring", 16)
    assert figures.topology_slowdown(ring, "chain", per_chip=True) == pytest.approx(2)
    assert figures.topology_slowdown(ring, "chain") == pytest.approx(1)
    # one-shot on a chain: the middle link's 64 buffers at half speed, against 15 through a switch port
    shot = figures.simulate("one_shot", 16)
    assert figures.topology_slowdown(shot, "chain", per_chip=True) == pytest.approx(2 * 64 / 15)
    # a fat tree's leaf has one port per chip either way: per chip changes nothing there
    assert figures.topology_slowdown(shot, "fat tree 4:1", per_chip=True) == pytest.approx(4 * 12 / 15)


def test_layout_bars_are_the_hand_computed_seconds():
    # Llama 3 405B in its published layout, worked by hand from equation eq-layout
    fig = figures.plot_layout(128, 2 / 3, 0.41, params=4.05e11, layers=126, d_model=16384,
                              tokens_per_step=2**24, tp=8, pp=16, peak_flop_s=989e12, scale_up=450e9,
                              scale_out=50e9, model="m", micro_batch_tokens=8192)
    widths = [p.get_width() for p in fig.axes[0].patches]
    compute = 6 * 4.05e11 * 2**24 / (16384 * 989e12 * 0.41)
    tensor = 126 / 16 * 4 * 1.75 * 2**24 / 128 * 16384 * 2
    data = 2 * 127 / 128 * 2 * 4.05e11 / 128
    pipeline = 2 * 2**24 / 128 * 16384 * 2 / 8
    np.testing.assert_allclose(widths, [compute, tensor / 450e9, tensor / 50e9, pipeline / 50e9, data / 50e9],
                               rtol=1e-12)


def test_layout_zero3_gathers_for_every_micro_batch():
    kw = dict(params=4.05e11, layers=126, d_model=16384, tokens_per_step=2**24, tp=8, pp=16,
              peak_flop_s=989e12, scale_up=450e9, scale_out=50e9, model="m", micro_batch_tokens=8192)
    one = [p.get_width() for p in figures.plot_layout(128, 2 / 3, 0.41, **kw).axes[0].patches]
    three = [p.get_width() for p in figures.plot_layout(128, 2 / 3, 0.41, 3, **kw).axes[0].patches]
    # ZeRO-3 gathers the weights for the forward and the backward pass of each of the replica's
    # 2^24 / (128 · 8192) = 16 micro-batches: 1.5 × 16 times the gradient's bytes
    assert three[-1] == pytest.approx(1.5 * 16 * one[-1]) and three[:-1] == one[:-1]


def test_decode_bars_split_latency_and_bandwidth():
    fig = figures.plot_decode(1, 5e-6, latency=1e-6, bandwidth=1e11, layers=10, d_model=1000, ranks=4,
                              algorithms=["ring", "one_shot"])
    widths = [p.get_width() for p in fig.axes[0].patches]
    m = 1000 * 2
    # fixed parts: 20 all-reduces × (α₀ + rounds·α); ring 6 rounds, one-shot 1
    assert widths[0] == pytest.approx(20 * (5e-6 + 6e-6)) and widths[1] == pytest.approx(20 * (5e-6 + 1e-6))
    # bandwidth parts: ring 2·3/4·m/B, one-shot 3·m/B per all-reduce
    assert widths[2] == pytest.approx(20 * 1.5 * m / 1e11) and widths[3] == pytest.approx(20 * 3 * m / 1e11)


def test_alpha_beta_curves_start_at_the_latency_floor():
    fig = figures.plot_alpha_beta(8, 4.5e11, 2e-6, 5e-6, link="x",
                                  algorithms=["ring", "one_shot", "in_network"],
                                  measured={"m": ([1e4, 1e6], [3e-6, 4e-5])}, in_network_bandwidth=2e11)
    ax = fig.axes[0]
    ring = next(line for line in ax.get_lines() if line.get_label() == "ring all-reduce")
    assert ring.get_xdata()[0] == 512 and ring.get_xdata()[-1] == pytest.approx(1e9)
    assert ring.get_ydata()[0] == pytest.approx(5e-6 + 14 * 2e-6 + 1.75 * 512 / 4.5e11)
    shot = next(line for line in ax.get_lines() if line.get_label() == "one-shot all-reduce")
    assert shot.get_ydata()[-1] == pytest.approx(5e-6 + 2e-6 + 7 * 1e9 / 4.5e11)
    # in-network reduction at its own (measured) bandwidth: 2 rounds, S once
    innet = next(line for line in ax.get_lines() if "in-network" in line.get_label())
    assert innet.get_ydata()[-1] == pytest.approx(5e-6 + 4e-6 + 1e9 / 2e11)
    points = next(line for line in ax.get_lines() if line.get_label() == "m")
    assert list(points.get_xdata()) == [1e4, 1e6] and list(points.get_ydata()) == [3e-6, 4e-5]


def test_message_size_bars_are_the_given_sizes():
    sizes = {"a": 1e12, "b": 3.3e4}
    fig = figures.plot_message_sizes(sizes, ["red", "blue"])
    assert sorted(p.get_width() for p in fig.axes[0].patches) == [3.3e4, 1e12]
    assert len(fig.axes) == 1


def test_message_sizes_per_token_panel_holds_its_own_bars_and_labels():
    fig = figures.plot_message_sizes({"a": 1e12, "b": 3.3e4}, ["red", "blue"],
                                     per_token={"c": 3.2e4, "d": 6.5e6, "e": 1.2e2},
                                     per_token_colours=["red", "blue", "blue"])
    events, tokens = fig.axes
    assert events.get_xlabel() == "bytes per event" and tokens.get_xlabel() == "bytes per token"
    assert [p.get_width() for p in tokens.patches] == [3.2e4, 6.5e6, 1.2e2]
    ticks = zip(tokens.get_yticks(), [t.get_text() for t in tokens.get_yticklabels()], strict=True)
    top_down = sorted(ticks, reverse=True)
    assert [label for _, label in top_down] == ["c", "d", "e"]  # first on top
    assert tokens.get_xlim()[0] <= 1.2e2  # the smallest bar starts inside the axis
    assert [t.get_text() for t in tokens.texts] == ["32 kB", "6.5 MB", "120 B"]
    with pytest.raises(ValueError, match="per_token_colours"):
        figures.plot_message_sizes({"a": 1.0}, ["red"], per_token={"c": 1.0})
    with pytest.raises(ValueError, match="per_token"):
        figures.plot_message_sizes({"a": 1.0}, ["red"], per_token_colours=["red"])
