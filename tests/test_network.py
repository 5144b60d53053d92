"""chipbook.network against independent values: the exact sum of the buffers (integers, so no
rounding), the byte volumes the papers derive by hand, the nccl-tests bus-bandwidth definition, a
direct (unsplit) computation of the pipelined and tensor-parallel layers, and hand-routed link loads.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipbook import network as net

ranks = st.integers(min_value=1, max_value=12)
sizes = st.integers(min_value=1, max_value=40)
ALGOS = ["ring", "halving_doubling", "tree", "one_shot", "two_shot", "in_network", "naive"]
#: algorithms whose simulated rounds equal the closed form exactly (tree and in-network closed forms
#: are the pipelined limits of simulations that send whole buffers)
EXACT = ["ring", "halving_doubling", "one_shot", "two_shot", "naive"]


def _buffers(n: int, m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=(n, m), dtype=np.int64)


# --- results: every rank ends with the exact sum -----------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGOS)
@given(n=ranks, m=sizes, seed=st.integers(0, 2**32 - 1))
def test_allreduce_gives_every_rank_the_exact_sum(algorithm, n, m, seed):
    buffers = _buffers(n, m, seed)
    total = buffers.sum(axis=0)
    out = net.allreduce(buffers, algorithm)
    assert out.result.shape == (n, m)
    assert (out.result == total).all()  # integers: the sum is exact whatever the order of additions


@given(n=ranks, m=sizes, seed=st.integers(0, 2**32 - 1))
def test_allreduce_of_floats_matches_the_sum(n, m, seed):
    buffers = np.random.default_rng(seed).standard_normal((n, m))
    for algorithm in ALGOS:
        np.testing.assert_allclose(net.allreduce(buffers, algorithm).result,
                                   np.broadcast_to(buffers.sum(axis=0), (n, m)), rtol=1e-12, atol=1e-12)


def test_input_buffers_are_not_modified():
    buffers = _buffers(4, 8, 0)
    before = buffers.copy()
    for algorithm in ALGOS:
        net.allreduce(buffers, algorithm)
    assert (buffers == before).all()


# --- byte counts: the known volumes ------------------------------------------------------------------


@given(n=st.integers(2, 16), chunks=st.integers(1, 6))
def test_ring_sends_two_n_minus_one_over_n_of_the_buffer_per_rank(n, chunks):
    # S divisible by n: each rank sends and receives exactly 2(n−1)/n · S [patarasuk2009bandwidth]
    m = n * chunks
    out = net.ring_allreduce(np.ones((n, m), dtype=np.float32))
    size = m * 4
    assert (out.sent == 2 * (n - 1) * size // n).all()
    assert (out.received == 2 * (n - 1) * size // n).all()
    assert out.steps == 2 * (n - 1)
    # only neighbours talk: rank r to rank r+1
    expected = np.zeros((n, n))
    for r in range(n):
        expected[r, (r + 1) % n] = 2 * (n - 1) * size // n
    assert (out.matrix == expected).all()


@given(n=st.integers(2, 16), m=st.integers(1, 50))
def test_ring_volume_for_uneven_chunks_is_within_one_element_per_step(n, m):
    out = net.ring_allreduce(np.ones((n, m), dtype=np.int64))
    ideal = 2 * (n - 1) / n * m * 8
    assert np.all(np.abs(out.sent - ideal) <= 2 * (n - 1) * 8)
    assert out.matrix.sum() == 2 * (n - 1) * m * 8  # every chunk travels n−1 hops twice


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_halving_doubling_volume_and_steps_for_powers_of_two(k):
    p = 2**k
    m = 3 * p
    out = net.halving_doubling_allreduce(np.ones((p, m), dtype=np.int64))
    size = m * 8
    assert (out.sent == 2 * (p - 1) * size // p).all()  # the same bytes as the ring
    assert out.steps == 2 * k                            # in log₂p steps each way, not p−1
    # step at distance d pairs rank r with r XOR d [thakur2005optimization]
    first = out.rounds[0]
    for r in range(p):
        assert first[r, r ^ (p // 2)] == size // 2


@pytest.mark.parametrize("n", [3, 5, 6, 7, 12])
def test_halving_doubling_extra_ranks_send_whole_buffers(n):
    p = 1 << (n.bit_length() - 1)
    m = 4 * p
    out = net.halving_doubling_allreduce(np.ones((n, m), dtype=np.int64))
    size = m * 8
    extra = n - p
    assert out.steps == 2 * int(math.log2(p)) + 2
    for i in range(extra):
        assert out.rounds[0][2 * i, 2 * i + 1] == size
        assert out.rounds[-1][2 * i + 1, 2 * i] == size
        assert out.sent[2 * i] == size  # the extra rank sends its buffer once and only receives after


@given(n=st.integers(2, 12), m=st.integers(1, 20), root=st.integers(0, 11))
def test_naive_allreduce_funnels_everything_through_the_root(n, m, root):
    root = root % n
    out = net.naive_allreduce(np.ones((n, m), dtype=np.int16), root=root)
    size = m * 2
    assert out.received[root] == (n - 1) * size
    assert out.sent[root] == (n - 1) * size
    others = [r for r in range(n) if r != root]
    assert (out.sent[others] == size).all() and (out.received[others] == size).all()


def test_single_rank_sends_nothing():
    for algorithm in ALGOS:
        out = net.allreduce(np.arange(5).reshape(1, 5), algorithm)
        assert out.matrix.sum() == 0 and (out.result == np.arange(5)).all()


# --- the α-β closed forms against the simulations -----------------------------------------------------


@pytest.mark.parametrize("algorithm", EXACT)
@given(n=st.integers(1, 16), chunks=st.integers(1, 4))
def test_closed_form_time_equals_the_simulated_rounds_on_a_switch(algorithm, n, chunks):
    p = 1 << (n.bit_length() - 1)
    m = n * p * chunks * 2  # divisible by every split the algorithms make
    out = net.allreduce(np.zeros((n, m), dtype=np.float32), algorithm)
    bandwidth, latency = 4e10, 3e-6
    simulated = net.simulated_time(out, "switch", bandwidth, latency)
    assert net.allreduce_time(m * 4, n, bandwidth, latency, algorithm) == pytest.approx(simulated, rel=1e-12)


def test_ring_alpha_beta_hand_example():
    # 8 ranks, 1 GB, 100 GB/s per direction, 5 µs: 14 α + 1.75 · 10 ms
    assert net.allreduce_time(1e9, 8, 1e11, 5e-6) == pytest.approx(14 * 5e-6 + 1.75 * 1e-2)
    # halving-doubling: 6 α, same bytes
    assert net.allreduce_time(1e9, 8, 1e11, 5e-6, "halving_doubling") == pytest.approx(6 * 5e-6 + 1.75e-2)
    # naive: the root's link carries 7 GB in and 7 GB out
    assert net.allreduce_time(1e9, 8, 1e11, 5e-6, "naive") == pytest.approx(2 * (5e-6 + 7e9 / 1e11))


@given(n=st.integers(2, 4096), nbytes=st.floats(1e3, 1e12))
def test_bus_bandwidth_of_a_latency_free_ring_is_the_link_bandwidth(n, nbytes):
    # nccl-tests: busbw = algbw · 2(n−1)/n equals the link speed B for an ideal ring
    bandwidth = 5e10
    t = net.allreduce_time(nbytes, n, bandwidth, 0.0)
    assert net.bus_bandwidth(nbytes, t, n) == pytest.approx(bandwidth, rel=1e-9)
    assert net.algorithm_bandwidth(nbytes, t) == pytest.approx(bandwidth * n / (2 * (n - 1)), rel=1e-9)


def test_small_messages_are_latency_bound_and_large_ones_bandwidth_bound():
    b, a = 4.5e11, 2e-6
    small = net.allreduce_time(32e3, 8, b, a)
    large = net.allreduce_time(16e9, 8, b, a)
    assert 14 * a / small > 0.9            # α terms are over 90% of a 32 kB all-reduce
    assert 14 * a / large < 1e-3           # and under 0.1% of a 16 GB one


# --- topologies --------------------------------------------------------------------------------------


def test_link_loads_by_hand():
    sent = np.zeros((4, 4))
    sent[0, 3] = 10  # on a chain: 0→1→2→3; on a ring: the short way, 0→3 counter-clockwise
    sent[2, 1] = 5
    chain = net.link_loads(sent, "chain")
    right, left = chain[:4], chain[4:]
    assert list(right) == [10, 10, 10, 0] and list(left) == [0, 5, 0, 0]
    ring = net.link_loads(sent, "ring")
    right, left = ring[:4], ring[4:]
    # the link leaving rank r the negative way is left[r]: 0→3 is left[0], 2→1 is left[2]
    assert list(right) == [0, 0, 0, 0] and list(left) == [10, 0, 5, 0]
    switch = net.link_loads(sent, "switch")
    assert list(switch) == [10, 0, 5, 0, 0, 5, 0, 10]


def test_ring_allreduce_runs_at_full_speed_on_a_ring_and_on_a_chain():
    out = net.ring_allreduce(np.zeros((8, 64), dtype=np.float32))
    on_switch = net.simulated_time(out, "switch", 1e9, 1e-6)
    assert net.simulated_time(out, "ring", 1e9, 1e-6) == pytest.approx(on_switch)
    # a full-duplex chain carries the wrap-around chunk backwards on otherwise idle links
    assert net.simulated_time(out, "chain", 1e9, 1e-6) == pytest.approx(on_switch)


def test_halving_doubling_congests_a_chain():
    p, m = 8, 64
    out = net.halving_doubling_allreduce(np.zeros((p, m), dtype=np.float32))
    b = 1e9
    first = out.rounds[0]  # ranks r and r+4 swap half their buffers: 4 messages cross the middle
    assert net.round_time(first, "chain", b, 0.0) == pytest.approx(4 * (m * 4 / 2) / b)
    assert net.round_time(first, "switch", b, 0.0) == pytest.approx((m * 4 / 2) / b)
    assert net.bisection_bytes(first) == 2 * 4 * (m * 4 / 2)


def test_pipeline_crosses_the_bisection_once():
    x = np.ones((2, 4), dtype=np.float32)
    out = net.pipeline_forward(x, [np.eye(4, dtype=np.float32)] * 4, stages=4)
    assert net.bisection_bytes(out.matrix) == x.nbytes


# --- pipeline and tensor parallelism ------------------------------------------------------------------


@given(stages=st.integers(1, 6), extra=st.integers(0, 4), batch=st.integers(1, 4), seed=st.integers(0, 999))
def test_pipeline_computes_the_unsplit_network_and_sends_one_activation_per_boundary(stages, extra, batch,
                                                                                     seed):
    rng = np.random.default_rng(seed)
    width = 6
    weights = [rng.integers(-2, 3, size=(width, width)) for _ in range(stages + extra)]
    x = rng.integers(-3, 4, size=(batch, width))
    expected = x
    for w in weights:
        expected = np.maximum(0, expected @ w)
    out = net.pipeline_forward(x, weights, stages)
    assert (out.result[-1] == expected).all()
    boundary = batch * width * x.itemsize
    assert out.matrix.sum() == (stages - 1) * boundary
    for s in range(stages - 1):
        assert out.matrix[s, s + 1] == boundary  # each stage talks only to the next


@given(ranks_=st.integers(1, 8), batch=st.integers(1, 3), seed=st.integers(0, 999))
def test_tensor_parallel_mlp_equals_the_unsplit_block(ranks_, batch, seed):
    rng = np.random.default_rng(seed)
    d, hidden = 4, 8
    x = rng.integers(-3, 4, size=(batch, d))
    w_in = rng.integers(-2, 3, size=(d, hidden))
    w_out = rng.integers(-2, 3, size=(hidden, d))
    out = net.tensor_parallel_mlp(x, w_in, w_out, ranks_)
    expected = np.maximum(0, x @ w_in) @ w_out
    for r in range(ranks_):
        assert (out.result[r] == expected).all()
    # one all-reduce of the output activation: ring volume of batch·d values per rank
    message = batch * d * x.itemsize
    assert out.matrix.sum() == (2 * (ranks_ - 1) * message if ranks_ > 1 else 0)


def test_tensor_parallel_decode_is_two_allreduces_per_layer():
    t = net.tensor_parallel_decode_time(10, 1000, 4, 1e11, 1e-6, batch=2)
    assert t == pytest.approx(20 * net.allreduce_time(2 * 1000 * 2, 4, 1e11, 1e-6))
    assert net.TP_ALLREDUCES_PER_LAYER == {"forward": 2, "backward": 2}


def test_pipeline_bytes_per_token():
    assert net.pipeline_bytes_per_token(16384) == 32768  # Llama 3.1 405B width, BF16, one sequence
    assert net.pipeline_bytes_per_token(8192, batch=64, bytes_per_value=1) == 8192 * 64


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: net.allreduce_time(-1, 4, 1e9, 0), "nbytes"),
        (lambda: net.allreduce_time(1, 0, 1e9, 0), "ranks"),
        (lambda: net.allreduce_time(1, 4, 0, 0), "bandwidth"),
        (lambda: net.allreduce_time(1, 4, 1e9, -1), "latency"),
        (lambda: net.allreduce_time(1, 4, 1e9, 0, "butterfly"), "algorithm"),
        (lambda: net.allreduce(np.ones((2, 2)), "butterfly"), "algorithm"),
        (lambda: net.allreduce_time(1, 4, 1e9, 0, overhead=-1), "overhead"),
        (lambda: net.link_loads(np.ones((4, 4)), "torus"), "shape"),
        (lambda: net.link_loads(np.ones((4, 4)), "torus", shape=(3, 2)), "shape"),
        (lambda: net.link_loads(np.ones((4, 4)), "fat_tree", oversubscription=0), "oversubscription"),
        (lambda: net.simulated_time(net.in_network_allreduce(np.ones((4, 2))), "ring", 1e9, 0), "topology"),
        (lambda: net.Step(1.0, 1.0).efficiency_at(1.5), "overlap"),
        (lambda: net.Layout(8, 1, 0, 4), "pp"),
        (lambda: net.layout_traffic(1e9, 8, 512, 1e6, net.Layout(2, 2, 1, 1), peak_flop_s=1e15,
                                    utilisation=0.5), "cp"),
        (lambda: net.layout_traffic(1e9, 8, 512, 1e6, net.Layout(2, 1, 1, 1), peak_flop_s=1e15,
                                    utilisation=0.5, zero_stage=4), "zero_stage"),
        (lambda: net.data_parallel_bytes_per_token(1e9, 0, 1e6), "replicas"),
        (lambda: net.expert_parallel_bytes_per_token(7168, 0, 58), "experts_per_token"),
        (lambda: net.hierarchical_allreduce_time(1e6, 0, 4, local_bandwidth=1e9, local_latency=0,
                                                 net_bandwidth=1e9, net_latency=0), "local"),
        (lambda: net.ring_allreduce(np.ones(3)), "buffers"),
        (lambda: net.ring_allreduce([["a", "b"]]), "buffers"),
        (lambda: net.ring_allreduce(np.array([[1.0, np.nan]])), "buffers"),
        (lambda: net.naive_allreduce(np.ones((2, 2)), root=2), "root"),
        (lambda: net.link_loads(np.ones((2, 2)), "hypercube"), "topology"),
        (lambda: net.pipeline_forward(np.ones((1, 2)), [np.eye(2)], 2), "stages"),
        (lambda: net.tensor_parallel_mlp(np.ones((1, 2)), np.ones((2, 2)), np.ones((2, 2)), 3), "ranks"),
        (lambda: net.bus_bandwidth(1e9, 0, 4), "seconds"),
        (lambda: net.gradient_bytes(0), "params"),
        (lambda: net.pipeline_bytes_per_token(4096, batch=0), "batch"),
        (lambda: net.tensor_parallel_decode_time(0, 4096, 8, 1e11, 1e-6), "layers"),
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --- bisection and the bandwidth a data-parallel step needs -------------------------------------------


def test_bisection_demand_of_each_pattern():
    n = 8
    zeros = np.zeros((n, 8 * n), dtype=np.float32)
    # a ring's cut crosses two ring links, one chunk each way: 2 links' worth, whatever n
    assert net.bisection_demand(net.ring_allreduce(zeros)) == 2
    # the first halving step sends half of every rank's buffer across the middle: n links' worth
    assert net.bisection_demand(net.halving_doubling_allreduce(zeros)) == n
    pipe = net.pipeline_forward(np.ones((1, 4)), [np.eye(4)] * n, n)
    assert net.bisection_demand(pipe) == 1


@given(tokens=st.floats(1e3, 1e6), peak=st.floats(1e14, 1e16), u=st.floats(0.1, 1.0))
def test_required_bandwidth_balances_compute_and_ring_allreduce_for_many_chips(tokens, peak, u):
    chips = 10**6  # 2(d−1)/d → 2
    b_star = net.required_link_bandwidth(tokens, peak, u)
    # the ring all-reduce's bytes of a plain data-parallel layout over its compute time
    tiers = net.layout_traffic(7e10, 80, 8192, tokens * chips, net.Layout(tp=1, cp=1, pp=1, dp=chips),
                               peak_flop_s=peak, utilisation=u)
    assert tiers.break_even("data") == pytest.approx(b_star, rel=1e-5)


# --- in-network, one-shot, two-shot and tree all-reduces ----------------------------------------------


@given(n=st.integers(2, 16), m=st.integers(1, 30))
def test_in_network_reduction_sends_each_buffer_once(n, m):
    # NVLink SHARP / InfiniBand SHARP: S up, the sum down; half the ring's 2(n−1)/n·S per rank
    out = net.in_network_allreduce(np.ones((n, m), dtype=np.int32))
    size = m * 4
    assert (out.sent == size).all() and (out.received == size).all()
    assert out.matrix.sum() == 0 and out.steps == 2
    # pipelined closed form: S/B plus two latencies, below the ring's 2(n−1)/n·S/B once n > 2
    assert net.allreduce_time(1e9, n, 1e11, 0, "in_network") == pytest.approx(1e-2)


@given(n=st.integers(2, 12), m=st.integers(1, 30))
def test_one_shot_sends_every_buffer_to_every_peer_in_one_round(n, m):
    out = net.one_shot_allreduce(np.ones((n, m), dtype=np.int64))
    size = m * 8
    expected = np.full((n, n), size)
    np.fill_diagonal(expected, 0)
    assert out.steps == 1 and (out.matrix == expected).all()


@given(n=st.integers(2, 12), chunks=st.integers(1, 4))
def test_two_shot_sends_the_ring_volume_in_two_rounds(n, chunks):
    m = n * chunks
    out = net.two_shot_allreduce(np.ones((n, m), dtype=np.int64))
    size = m * 8
    assert out.steps == 2
    assert (out.sent == 2 * (n - 1) * size // n).all()


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 15, 16, 31, 32])
def test_binary_tree_is_balanced_in_order_with_one_edge_across_the_middle(n):
    parent = net.binary_tree(n)
    assert (parent == -1).sum() == 1
    depth = []
    for r in range(n):
        d, x = 0, r
        while parent[x] >= 0:
            x, d = parent[x], d + 1
        depth.append(d)
    assert max(depth) == math.floor(math.log2(n))  # log depth
    half = n // 2
    crossing = [r for r in range(n) if parent[r] >= 0 and (r < half) != (parent[r] < half)]
    assert len(crossing) == 1  # one tree edge joins the lower and upper halves (n ≥ 2)
    out = net.tree_allreduce(np.ones((n, 4), dtype=np.int64))
    assert out.steps == 2 * math.floor(math.log2(n))
    assert out.sent.max() <= 3 * 32  # an inner rank: its sum up, the total to two children


@given(n=st.integers(2, 64))
def test_latency_terms_count_the_rounds(n):
    # with infinite bandwidth the closed forms reduce to rounds × α; the rounds are counted by hand
    rounds = {"ring": 2 * (n - 1), "tree": 2 * math.floor(math.log2(n)), "one_shot": 1, "two_shot": 2,
              "in_network": 2}
    for algorithm, k in rounds.items():
        assert net.allreduce_time(1.0, n, 1e30, 1e-6, algorithm, overhead=5e-6) == pytest.approx(
            5e-6 + k * 1e-6, rel=1e-9)
    for algorithm in ("tree", "in_network"):  # and the simulations have that many rounds
        assert net.allreduce(np.ones((n, 2)), algorithm).steps == rounds[algorithm]


def test_one_shot_against_a_ring_for_a_decode_message_at_nccls_constants():
    # 8 GPUs, 32 kB, 370 GB/s, NCCL's NVLink LL step α = 0.6 µs and base latency α₀ = 6.6 µs:
    # ring 6.6 + 14·0.6 + 1.75·S/B ≈ 15.15 µs; one-shot 6.6 + 0.6 + 7·S/B ≈ 7.82 µs
    s, b, a, a0 = 32768, 370e9, 0.6e-6, 6.6e-6
    ring = net.allreduce_time(s, 8, b, a, "ring", overhead=a0)
    one = net.allreduce_time(s, 8, b, a, "one_shot", overhead=a0)
    assert ring == pytest.approx(15.155e-6, abs=0.01e-6)
    assert one == pytest.approx(7.820e-6, abs=0.01e-6)


# --- topologies beyond the switch ---------------------------------------------------------------------


def test_torus_routes_dimension_by_dimension_the_short_way():
    sent = np.zeros((16, 16))
    sent[0, 10] = 6  # (0,0) -> (2,2) on a 4x4 torus: two hops along x then two along y, a tie each way
    loads = net.link_loads(sent, "torus", shape=(4, 4)).reshape(2, 2, 16)
    assert loads[0, 0, 0] == 6 and loads[0, 0, 4] == 6  # dimension 0 (rows): 0 -> 4 -> 8
    assert loads[1, 0, 8] == 6 and loads[1, 0, 9] == 6  # then dimension 1: 8 -> 9 -> 10
    assert loads.sum() == 4 * 6


def test_oversubscribed_fat_tree_slows_cross_leaf_traffic_by_the_ratio():
    # 8 ranks in 2 leaves of 4; every rank sends S to the rank 4 away: all traffic leaves its leaf
    sent = np.zeros((8, 8))
    for r in range(8):
        sent[r, (r + 4) % 8] = 100
    full = net.round_time(sent, "fat_tree", 1.0, 0.0, group=4, oversubscription=1)
    assert full == pytest.approx(100)  # non-blocking: as on a switch
    assert net.round_time(sent, "fat_tree", 1.0, 0.0, group=4, oversubscription=2) == pytest.approx(200)
    # traffic that stays in its leaf does not care
    local = np.zeros((8, 8))
    local[0, 1] = local[5, 6] = 100
    assert net.round_time(local, "fat_tree", 1.0, 0.0, group=4, oversubscription=4) == pytest.approx(100)


def test_tree_and_ring_need_little_bisection_and_halving_doubling_needs_it_all():
    n = 16
    zeros = np.zeros((n, 16 * n), dtype=np.float32)
    assert net.bisection_demand(net.tree_allreduce(zeros)) == 1
    on = {a: net.allreduce(zeros, a) for a in ("ring", "tree", "halving_doubling")}
    for a, traffic in on.items():
        switch = net.simulated_time(traffic, "switch", 1.0, 0.0)
        fat = net.simulated_time(traffic, "fat_tree", 1.0, 0.0, group=4, oversubscription=4)
        if a == "halving_doubling":
            assert fat > 2 * switch  # its long-distance rounds cross the thin leaf uplinks
        else:
            assert fat == pytest.approx(switch)


def test_mesh_gives_one_shot_a_link_per_peer():
    out = net.one_shot_allreduce(np.zeros((8, 64), dtype=np.float32))
    size = 64 * 4
    assert net.simulated_time(out, "mesh", 1.0, 0.0) == pytest.approx(size)      # S over each link
    assert net.simulated_time(out, "switch", 1.0, 0.0) == pytest.approx(7 * size)  # 7 S through one


def test_hierarchical_allreduce_by_hand():
    # 4 nodes of 8: ring inside (14 α_l + 1.75 S/B_l) and a tree of 4 nodes on S/8 (4 α_n + 2 S/8/B_n)
    s, bl, al, bn, an = 8e9, 4e11, 1e-6, 5e10, 5e-6
    t = net.hierarchical_allreduce_time(s, 8, 4, local_bandwidth=bl, local_latency=al, net_bandwidth=bn,
                                        net_latency=an)
    assert t == pytest.approx(14 * al + 1.75 * s / bl + 4 * an + 2 * (s / 8) / bn)


# --- overlap, layouts, bytes per token ----------------------------------------------------------------


def test_overlap_hides_communication_up_to_the_overlapped_share_of_compute():
    step = net.Step(compute=3.0, allreduce=2.5)
    assert step.efficiency_at(0.0) == pytest.approx(3 / 5.5)
    assert step.efficiency_at(2 / 3) == pytest.approx(3 / 3.5)  # 2 s hidden behind the backward pass
    assert step.efficiency_at(1.0) == 1.0


def test_llama3_405b_layout_traffic_by_hand():
    # Llama 3 405B on 16,384 H100s: TP8 CP1 PP16 DP128, 16M tokens a step [dubey2024llama];
    # numbers worked by hand: 126 layers, d_model 16384, BF16.
    layout = net.Layout(tp=8, cp=1, pp=16, dp=128)
    tokens = 128 * 16 * 8192
    step = net.layout_traffic(4.05e11, 126, 16384, tokens, layout, peak_flop_s=989e12, utilisation=0.41)
    assert layout.gpus == 16384
    per_micro = step.tensor / 16  # 16 micro-batches of one 8K sequence per replica
    assert per_micro == pytest.approx(126 / 16 * 4 * 1.75 * 8192 * 16384 * 2)
    assert 14e9 < per_micro < 16e9                       # "roughly 15 GB per GPU"
    assert 0.35 < step.compute / 16 < 0.42               # "per 0.4 s of compute" at MFU 0.41
    assert step.data == pytest.approx(2 * 127 / 128 * 2 * 4.05e11 / 128)
    assert step.pipeline == pytest.approx(2 * 131072 * 16384 * 2 / 8)
    b_star = net.required_link_bandwidth(tokens / 128, 989e12, 0.41)
    assert step.break_even("data") == pytest.approx(b_star * 127 / 128, rel=1e-9)
    assert 16 < step.break_even("tensor") / b_star < 20   # "about 18 times B*"
    zero3 = net.layout_traffic(4.05e11, 126, 16384, tokens, layout, peak_flop_s=989e12, utilisation=0.41,
                               zero_stage=3)
    assert zero3.data == pytest.approx(1.5 * step.data)
    # with 16 micro-batches a step the weights are gathered (forward, backward) and the gradients
    # reduce-scattered 16 times: three passes of (dp − 1)/dp of the shard each, 16 times
    zero3_16 = net.layout_traffic(4.05e11, 126, 16384, tokens, layout, peak_flop_s=989e12,
                                  utilisation=0.41, zero_stage=3, microbatches=16)
    assert zero3_16.data == pytest.approx(16 * 3 * 127 / 128 * 2 * 4.05e11 / 128)
    assert (zero3_16.compute, zero3_16.tensor) == (step.compute, step.tensor)
    # ZeRO-2 reduce-scatters the sharded gradients every micro-batch and gathers the weights once
    zero2_16 = net.layout_traffic(4.05e11, 126, 16384, tokens, layout, peak_flop_s=989e12,
                                  utilisation=0.41, zero_stage=2, microbatches=16)
    assert zero2_16.data == pytest.approx(17 * 127 / 128 * 2 * 4.05e11 / 128)
    with pytest.raises(ValueError, match="microbatches"):
        net.layout_traffic(4.05e11, 126, 16384, tokens, layout, peak_flop_s=989e12, utilisation=0.41,
                           zero_stage=3, microbatches=0)


def test_data_parallel_bytes_per_token_for_llama3():
    # each replica sends 2(d−1)/d of an 810 GB gradient per step over its 131,072 tokens: ~12 MB a token
    per_token = net.data_parallel_bytes_per_token(4.05e11, 128, 128 * 16 * 8192)
    assert per_token == pytest.approx(2 * 127 / 128 * 8.1e11 / 131072)
    assert 12e6 < per_token < 12.5e6


def test_deepseek_v3_expert_traffic_is_about_ten_megabytes_a_token():
    # 58 MoE layers (61 minus 3 dense), 8 routed experts, d 7168, FP8 out and BF16 back
    assert net.expert_parallel_bytes_per_token(7168, 8, 58) == 58 * 8 * 7168 * 3
    assert 9.5e6 < net.expert_parallel_bytes_per_token(7168, 8, 58) < 10.5e6


# --- the chapter's data rows ----------------------------------------------------------------------------


def test_link_rows_are_consistent():
    from chipbook import data

    links = data.load("links")
    keys = data.bib_keys()
    assert set(links["fabric"]) <= {"switched", "reducing", "torus", "direct", "host"}
    assert set(links["latency_source"].dropna()) <= keys
    assert set(links["effective_source"].dropna()) <= keys
    # what a library reaches after protocol overhead lies below the line rate
    measured = links[links.effective_gb_s.notna()]
    assert (measured.effective_gb_s < measured.gb_s_per_direction).all()
    assert (measured.effective_source.notna()).all()
    # a latency from NCCL's model is labelled as such, and an assumption is not given a source
    vendor_model = links.latency_basis == "vendor model"
    assert (links.loc[vendor_model, "latency_source"] == "nvidia2026nccltuning").all()
    # direct-connect fabrics have a link count, so that a peer's share of the bandwidth is known
    direct = links[(links.fabric == "direct") & links.gb_s_per_direction.notna()]
    assert direct.links_per_chip.notna().all()
    pcie = links.set_index("link").loc["PCIe Gen5 x16"]
    assert pcie.gb_s_per_direction == 63 and pcie.fabric == "host"  # 32 GT/s × 16 × 128/130 / 8


def test_layouts_multiply_to_the_gpu_count():
    from chipbook import data

    runs = data.load("training_utilisation").dropna(subset=["tp"])
    assert len(runs) == 3
    for _, run in runs.iterrows():
        gpus = int(run.hardware.rsplit("x", 1)[1])
        assert run.tp * run.cp * run.pp * run.dp == gpus, run.run
        # the global batch: sequences per data-parallel group (the note) × dp × sequence length
        per_group = int(re.search(r"(\d+) sequences per data-parallel group", run.note).group(1))
        assert per_group * run.dp * run.seq_len == run.tokens_per_step, run.run


def test_collective_latency_rows():
    from chipbook import data

    rows = data.load("collective_latency")
    assert set(rows.algorithm) - {"not stated"} <= set(net.ALGORITHMS)
    assert (rows.time_us > 0).all() and set(rows.cuda_graphs) <= {"yes", "no"}


def test_layout_efficiency_by_hand():
    tiers = net.TierTraffic(compute=4.0, tensor=100.0, pipeline=10.0, data=60.0)
    # tensor 100/100 = 1 s and pipeline 10/10 = 1 s exposed; data 60/20 = 3 s, 2 s hidden at overlap 0.5
    eff = tiers.efficiency(tensor_bandwidth=100, pipeline_bandwidth=10, data_bandwidth=20, overlap=0.5)
    assert eff == pytest.approx(4 / (4 + 1 + 1 + 1))
    assert tiers.break_even("tensor") == 25.0


def test_hops_counted_by_hand():
    sent = np.zeros((8, 8))
    sent[0, 7] = 1.0
    assert net.hops(sent, "chain") == 7
    assert net.hops(sent, "ring") == 1
    assert net.hops(sent, "switch") == 1
    # 2 × 4 torus, row-major: rank 0 is (0, 0), rank 6 is (1, 2): one hop down, two across
    sent[0, 7], sent[0, 6] = 0.0, 1.0
    assert net.hops(sent, "torus", shape=(2, 4)) == 3
    assert net.hops(np.zeros((8, 8)), "chain") == 0


def test_per_chip_bandwidth_and_hop_latency_by_hand():
    # one message of 100 bytes from chip 0 to chip 3 of a chain: 3 links, each at half the chip's
    # 10 bytes/s; α = 1 s for the round and 0.5 s for each of the 2 extra hops
    sent = np.zeros((4, 4))
    sent[0, 3] = 100.0
    assert net.round_time(sent, "chain", 10.0, 1.0, hop_latency=0.5, per_chip=True) == pytest.approx(
        1 + 2 * 0.5 + 100 / 5)
    assert net.round_time(sent, "chain", 10.0, 1.0) == pytest.approx(1 + 100 / 10)
    assert net.links_per_chip("torus", 64, shape=(4, 4, 4)) == 6
    assert net.links_per_chip("mesh", 8) == 7 and net.links_per_chip("switch", 8) == 1
    with pytest.raises(ValueError, match="hop_latency"):
        net.round_time(sent, "chain", 10.0, 1.0, hop_latency=-1)


def test_placing_a_ring_in_snake_order_keeps_its_neighbours_two_chips_apart():
    out = net.ring_allreduce(np.arange(8 * 16, dtype=np.float64).reshape(8, 16))
    placed = out.placed([0, 2, 4, 6, 7, 5, 3, 1])
    assert max(net.hops(r, "chain") for r in placed.rounds) == 2
    assert max(net.hops(r, "chain") for r in out.rounds) == 7     # the wrap-around message
    assert placed.matrix.sum() == out.matrix.sum()
    np.testing.assert_array_equal(placed.result, out.result)
    with pytest.raises(ValueError, match="position"):
        out.placed([0, 0, 1, 2, 3, 4, 5, 6])


def test_halving_doubling_with_nearest_partners_first_needs_less_of_a_fat_tree():
    # bit-reversed placement turns partners at distance n/2 into neighbours: the large first
    # exchanges stay inside a leaf of 4
    traffic = net.halving_doubling_allreduce(np.zeros((16, 64), dtype=np.float32))
    order = [int(f"{r:04b}"[::-1], 2) for r in range(16)]

    def slow(t):
        return (net.simulated_time(t, "fat_tree", 1.0, 0.0, group=4, oversubscription=4)
                / net.simulated_time(t, "switch", 1.0, 0.0))
    assert slow(traffic.placed(order)) < slow(traffic) / 2
