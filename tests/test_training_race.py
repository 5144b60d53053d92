"""The final chapter's composition: its per-chip numbers must equal the earlier chapters' functions,
its new formulas are checked against hand-worked values and brute force, and its binding rules
against the data's gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chipbook import data, market, memory, network
from chipbook import training_race as race

H100 = "H100 cluster (HGX 8-GPU + InfiniBand)"


def _efficiency(tiers):
    # NVSwitch 450 GB/s and InfiniBand NDR 50 GB/s per direction (data/links.csv), backward-pass overlap
    return tiers.efficiency(tensor_bandwidth=450e9, pipeline_bandwidth=50e9, data_bandwidth=50e9,
                            overlap=2 / 3)


@pytest.fixture(scope="module")
def systems():
    return race.systems()


@pytest.fixture(scope="module")
def run405():
    m = data.load("models").set_index("model").loc["Llama 3.1 405B"]
    a = data.load("model_architecture").set_index("model").loc["Llama 3.1 405B"]
    return race.Run("405B", float(m.reported_train_flop), float(m.params), int(m.layers), int(m.d_model),
                    int(m.heads), int(m.kv_heads), int(a.ffn_hidden), int(m.vocab), int(m.context),
                    16777216.0)


def test_composed_numbers_equal_the_earlier_chapters(systems, run405):
    s = systems[H100]
    u, days = 0.45, 90
    o = race.train(run405, s, days=days, utilisation=u)
    peak = 989e12  # the H100's dense BF16 peak in data/chips.csv
    assert o.chips_for_compute == memory.chips_for_compute(run405.flop, peak, u, days)
    r = memory.recipe("mixed-adam")
    fast = run405.params * (r.weights + r.grads) + run405.activations(1)
    assert o.chips_to_hold == memory.chips_needed(fast, s.chip, memory.TIERS,
                                                  slow_bytes=run405.params * r.optimizer)
    tp, pp, dp = (int(part[2:]) for part in o.layout.split()[:3])
    zero = int(o.layout.split()[3].split("-")[1].rstrip(","))
    # full recomputation runs 8 FLOP per parameter and token for 6 useful ones
    u_used = u * 6 / 8 if "full recomputation" in o.layout else u
    tiers = network.layout_traffic(run405.params, run405.layers, run405.d_model, run405.tokens_per_step,
                                   network.Layout(tp=tp, cp=1, pp=pp, dp=dp), peak_flop_s=peak,
                                   utilisation=u_used, zero_stage=zero,
                                   microbatches=run405.tokens_per_step / (dp * run405.seq))
    eff = _efficiency(tiers)
    assert o.efficiency == pytest.approx(eff, rel=1e-12)
    # days by hand: F / (N P u eta 86400)
    assert o.days == pytest.approx(run405.flop / (tp * pp * dp * peak * u_used * eff * 86400), rel=1e-12)


def test_chips_for_compute_by_hand(systems, run405):
    # 3.8e25 / (989e12 · 0.45 · 86400 · 90) = 3.8e25 / 3.4607e21 = 10980.3..., rounded up
    o = race.train(run405, systems[H100], days=90, utilisation=0.45)
    assert o.chips_for_compute == 10981


def test_calibration_reproduces_the_measured_mfu(systems, run405):
    layout = network.Layout(tp=8, cp=1, pp=16, dp=128)  # Llama 3's published layout
    u = race.calibrated_utilisation(run405, systems[H100], layout, 0.41)
    tiers = network.layout_traffic(run405.params, run405.layers, run405.d_model, run405.tokens_per_step,
                                   layout, peak_flop_s=989e12, utilisation=u)
    eff = _efficiency(tiers)
    assert u * eff == pytest.approx(0.41, rel=1e-9)
    assert 0.41 < u < 1


def test_what_binds_follows_the_data(systems, run405):
    got = {name: race.train(run405, s, days=90, utilisation=0.45) for name, s in systems.items()}
    assert got["d-Matrix Corsair (bridged cards + JetStream)"].binds == "numerics"
    assert got["Cerebras CS-3 + MemoryX/SwarmX"].binds == "peak not published"
    assert got["SambaNova SN40L (16-socket node)"].binds == "network not published"
    groq = got["Groq LPU system (chip-to-chip mesh)"]
    # 8K tokens of activations with full recomputation, 2h bytes a token a layer, over 8 chips, exceed 230 MB
    assert 8192 * 126 * 2 * 16384 / 8 > 230e6
    assert groq.binds == "capacity" and math.isnan(groq.days)
    tpu = got["TPU v5p (ICI slices + DCN multislice)"]
    domain = systems["TPU v5p (ICI slices + DCN multislice)"].scale_up["domain_chips"]  # the largest slice
    assert tpu.chips_for_compute > domain and tpu.chips > domain and tpu.binds == "compute"
    # TPU v6e has no data-centre network in the book's data and needs more chips than its 256-chip pod
    v6e = got["TPU v6e pod (ICI only)"]
    assert v6e.chips_for_compute > 256 and v6e.binds == "network not published" and math.isnan(v6e.days)
    # Ironwood's run fits in one 9216-chip pod: no data-centre network needed
    assert got["TPU7x pod (Ironwood)"].chips <= 9216 and got["TPU7x pod (Ironwood)"].binds == "compute"
    assert got[H100].binds == "compute" and "recomputation" not in got[H100].layout


def test_llama3_published_layout_fits_an_h100_without_recomputation(run405):
    # Dubey et al. 2024, section 3.3.2: Llama 3 405B pre-trained on 8K sequences at TP8 PP16 DP128 on
    # 80 GB H100s "without activation checkpointing", with one layer fewer on the first and last stages
    layout = memory.Layout(tensor=8, pipeline=16, data=128, zero_stage=1, in_flight=16)
    assert sum(race.share_bytes(run405, layout).values()) <= 80e9


def test_too_many_chips_for_the_batch_binds_on_the_batch(systems, run405):
    # one sequence per replica at TP8 and PP16: at most 8 · 16 · 16777216 / 8192 = 262,144 chips
    assert 8 * 16 * run405.tokens_per_step / run405.seq == 262144
    o = race.train(run405, systems[H100], days=0.2, utilisation=0.45)  # a run sized for 0.2 days
    assert o.chips_for_compute > 262144 and o.binds == "batch" and math.isnan(o.days)


def test_a_slow_link_binds(systems, run405):
    s = systems[H100]
    slow = {**s.scale_out, "gb_s_per_direction": 0.5}
    o = race.train(run405, race.System("slow", s.chip, s.scale_up, slow, "bf16"), days=90, utilisation=0.45)
    assert o.efficiency < race.NETWORK_BOUND_BELOW and o.binds == "scale-out bandwidth"


def test_required_speedup_hand_example_and_brute_force():
    # cost = 5e7 + 1e9 * (0.05 + 0.1 * 0.3) = 1.3e8; share a year = 1.3e8 / 3e9
    s = race.required_speedup(1e9, porting_cost=5e7, retune_share=0.05, failure_probability=0.1,
                              failure_share=0.3, years=3)
    assert s == pytest.approx(1 / (1 - 1.3e8 / 3e9), rel=1e-12)
    # brute force: the smallest speed-up on a fine grid whose savings over 3 years cover the cost
    grid = np.linspace(1, 1.2, 200_001)
    pays = grid[3 * 1e9 * (1 - 1 / grid) >= 1.3e8]
    assert pays[0] == pytest.approx(s, abs=2e-6)
    spends = np.array([1e6, 1e9])
    out = race.required_speedup(spends, porting_cost=5e7, retune_share=0.05, failure_probability=0.1,
                                failure_share=0.3, years=3)
    assert math.isinf(out[0]) and out[1] == pytest.approx(s)


@pytest.mark.parametrize("kwargs", [
    {"porting_cost": -1.0}, {"failure_probability": 1.5}, {"years": 0.0}, {"retune_share": -0.1},
])
def test_required_speedup_rejects_bad_input(kwargs):
    base = dict(porting_cost=1e7, retune_share=0.05, failure_probability=0.1, failure_share=0.3, years=3)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        race.required_speedup(1e9, **{**base, **kwargs})


def test_serving_bounds_by_hand(systems):
    groq = systems["Groq LPU system (chip-to-chip mesh)"].chip
    params = 7e10
    got = race.serving(params, 0.0, groq, 1)
    assert got["chips"] == math.ceil(params * 2 / 230e6)
    assert got["tokens/s per user, pipeline"] == pytest.approx(80e12 / (params * 2))
    assert got["tokens/s per user, tensor-parallel"] == pytest.approx(got["chips"] * 80e12 / (params * 2))
    # at batch 64 with no cache, intensity 64 FLOP/byte · 80 TB/s exceeds 188 TFLOP/s: compute-bound
    assert race.serving(params, 0.0, groq, 64)["tokens/s per chip"] == pytest.approx(
        188e12 / (market.FORWARD_FLOP_PER_PARAM * params))


def test_energy_by_hand():
    o = race.Outcome("x", 1, 1, 1000.0, "", 0, 0, 0, 1, 10.0, "compute")
    assert race.energy_gwh(o, 700.0) == pytest.approx(1000 * 700 * 24 * 10 / 1e9)
    assert math.isnan(race.energy_gwh(o, math.nan))


def test_train_rejects_bad_input(systems, run405):
    with pytest.raises(ValueError, match="days"):
        race.train(run405, systems[H100], days=0, utilisation=0.4)
    with pytest.raises(ValueError, match="utilisation"):
        race.train(run405, systems[H100], days=90, utilisation=1.5)
    with pytest.raises(ValueError, match="layers"):
        race.Run("bad", 1e24, 1e9, 0, 4096, 32, 8, 14336, 32000, 4096, 1e6)


def test_every_system_names_known_chips_and_links(systems):
    chips = set(data.load("chips").chip) | set(data.load("challengers").chip)
    assert {s.chip["chip"] for s in systems.values()} <= chips
    assert len(systems) == len(data.load("training_systems")) + len(data.load("challengers"))
    gaudi = systems["Gaudi 3 cluster (HLS-3 + RoCE)"]
    # Intel's documentation: 21 scale-up and 3 scale-out ports of 200 Gb/s (25 GB/s) each way
    assert gaudi.scale_up["gb_s_per_direction"] == 21 * 25 and gaudi.scale_out["gb_s_per_direction"] == 3 * 25


def test_multislice_bandwidth_by_hand_and_limits():
    # 4 replicas, 2 per slice, slice links 100, network 10: per byte of shard S a chip spends
    # (1/2)/100 inside the slice and (1/2)/2/10 across, 0.03; a flat all-reduce counts 3/4 of S
    assert race.multislice_bandwidth(4, 2, slice_b_s=100, network_b_s=10) == pytest.approx(0.75 / 0.03)
    # one slice holds every replica: the slice's own links; one replica per slice: the network's
    assert race.multislice_bandwidth(8, 8, slice_b_s=100, network_b_s=10) == pytest.approx(100)
    assert race.multislice_bandwidth(8, 1, slice_b_s=100, network_b_s=10) == pytest.approx(10)
    with pytest.raises(ValueError, match="network_b_s"):
        race.multislice_bandwidth(8, 2, slice_b_s=100, network_b_s=0)


def test_required_speedup_with_utilisation_and_price():
    base = dict(porting_cost=5e7, retune_share=0.05, failure_probability=0.1, failure_share=0.3, years=3)
    plain = race.required_speedup(1e9, **base)
    # software at 80% of NVIDIA's utilisation and chip-hours at 90% of the price: s* · 0.9 / 0.8
    got = race.required_speedup(1e9, **base, utilisation_ratio=0.8, price_ratio=0.9)
    assert got == pytest.approx(plain * 0.9 / 0.8, rel=1e-12)
    # brute force: the smallest s on a grid whose 3-year savings 3e9 · (1 − 0.9/(0.8 s)) cover 1.3e8
    grid = np.linspace(1, 1.5, 500_001)
    assert grid[3e9 * (1 - 0.9 / (0.8 * grid)) >= 1.3e8][0] == pytest.approx(got, abs=2e-6)
    with pytest.raises(ValueError, match="utilisation_ratio"):
        race.required_speedup(1e9, **base, utilisation_ratio=0)


def test_sensitivities_rank_by_swing():
    def model(a, b):
        return 2 * a + b
    got = race.sensitivities(model, {"a": 1.0, "b": 1.0}, {"a": (0.0, 1.0), "b": (0.0, 3.0)})
    assert list(got.index) == ["b", "a"]  # b swings 3, a swings 2
    assert got.loc["a", "output at low"] == 1.0 and got.loc["b", "output at high"] == 5.0
    with pytest.raises(ValueError, match="ranges"):
        race.sensitivities(model, {"a": 1.0}, {"c": (0.0, 1.0)})


def test_run_cost_by_hand():
    o = race.Outcome("x", 1, 1, 1000.0, "", 0, 0, 0, 1, 10.0, "compute")
    assert race.run_cost(o, 2.0) == pytest.approx(1000 * 10 * 24 * 2.0)
    with pytest.raises(ValueError, match="usd_per_chip_hour"):
        race.run_cost(o, -1.0)


def test_a_designed_h100_trains_like_the_h100_cluster(systems, run405):
    # the H100's own memory, peak and links, rebuilt by designed_system, give the same run
    h100 = systems[H100]
    designed = race.designed_system(h100.chip, 989, 450, domain_chips=8, scale_out_gb_s=50)
    a = race.train(run405, h100, days=90, utilisation=0.45)
    b = race.train(run405, designed, days=90, utilisation=0.45)
    assert (a.chips, a.layout, a.binds) == (b.chips, b.layout, b.binds)
    assert a.days == pytest.approx(b.days, rel=1e-12)
    with pytest.raises(ValueError, match="link_gb_s"):
        race.designed_system(h100.chip, 989, 0)


def test_utilisation_to_beat_by_bisection_matches_a_direct_check(systems, run405):
    ref = race.train(run405, systems[H100], days=90, utilisation=0.45)
    mi = systems["MI300X cluster (8-GPU + 400GbE)"]
    u = race.utilisation_to_beat(run405, mi, ref, 1.1, days=90)
    assert 0 < u < 0.45  # a higher peak needs less utilisation than the H100's to be 10% ahead
    above = race.chip_days(race.train(run405, mi, days=90, utilisation=u * 1.01))
    below = race.chip_days(race.train(run405, mi, days=90, utilisation=u * 0.99))
    assert above <= race.chip_days(ref) / 1.1 < below
    assert math.isnan(race.utilisation_to_beat(run405, mi, ref, 100.0, days=90))


def test_headroom_shrinks_what_a_chip_holds(systems, run405):
    s = systems["GB200 NVL72 + InfiniBand"]
    full = race.train(run405, s, days=90, utilisation=0.45)
    tight = race.train(run405, s, days=90, utilisation=0.45, headroom=0.5)
    r = memory.recipe("mixed-adam")
    fast = run405.params * (r.weights + r.grads) + run405.activations(1)
    # half of every tier usable: the count to hold is the full count of twice the bytes
    assert tight.chips_to_hold == memory.chips_needed(2 * fast, s.chip, memory.TIERS,
                                                      slow_bytes=2 * run405.params * r.optimizer)
    assert tight.bytes_per_chip <= 0.5 * (186e9 + 120e9) and full.layout != tight.layout
    with pytest.raises(ValueError, match="headroom"):
        race.train(run405, s, days=90, utilisation=0.45, headroom=0.0)


def test_usd_per_million_tokens_by_hand():
    # an H100 at AWS's end-2024 Capacity Block rate, $39.33 an hour for 8 GPUs = $4.91625 a GPU-hour,
    # serving 1,000 tokens/s all hour (3.6 million tokens): $1.365625 per million
    assert race.usd_per_million_tokens(39.33 / 8, 1000.0) == pytest.approx(1.365625, rel=1e-9)
    with pytest.raises(ValueError, match="tokens_per_s_per_chip"):
        race.usd_per_million_tokens(4.9, 0.0)
    with pytest.raises(ValueError, match="usd_per_chip_hour"):
        race.usd_per_million_tokens(-1.0, 10.0)
