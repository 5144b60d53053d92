"""The small transformer of the outlier experiment: its casts against chipbook.numerics (itself checked
against ml_dtypes), its data against the chain that made them, and the outlier gain as an exact
reparametrisation in fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipbook import numerics as nm
from chipbook.experiments import outlier_transformer as ot

SHARED = {k: v for k, v in ot.CONFIG.items() if k != "grid"}


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 96)) * 2.0 ** rng.integers(-30, 20, (8, 96))).astype(np.float32)
    x[:, 5] *= np.float32(2.0**13)  # an outlier channel
    x[0, :32] = 0  # an all-zero MX block
    return x


@pytest.mark.parametrize("fmt,scaling", [("fp8_e4m3", "tensor"), ("fp8_e5m2", "tensor"), ("int8", "tensor"),
                                         ("fp8_e4m3", "mx"), ("fp8_e5m2", "mx"), ("bf16", "none"),
                                         ("fp8_e4m3", "none")])
@pytest.mark.parametrize("axis", [-1, 0])
def test_casts_match_chipbook_numerics_bit_for_bit(fmt, scaling, axis):
    x = _inputs() if axis == -1 else np.ascontiguousarray(_inputs()[:, :64].T)
    ours = ot.cast(torch.from_numpy(x), fmt, scaling, axis=axis).numpy()
    reference = nm.quantize_scaled(x, fmt, scaling, axis=axis)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.view(np.uint32), reference.view(np.uint32))


def test_casts_refuse_what_they_cannot_do():
    x = torch.ones(4, 40)
    with pytest.raises(ValueError, match="multiple of 32"):
        ot.cast(x, "fp8_e4m3", "mx")
    with pytest.raises(ValueError, match="fmt"):
        ot.cast(x, "int8", "mx")
    with pytest.raises(ValueError, match="scaling"):
        ot.cast(x, "fp8_e4m3", "channel")


def test_samples_follow_the_chain():
    table = ot.markov_table(4, 0.5, seed=1)
    np.testing.assert_allclose(table.sum(axis=-1), 1.0)
    tokens = ot.sample(table, 4000, 40, np.random.default_rng(0))
    counts = np.zeros_like(table)
    np.add.at(counts, (tokens[:, :-2], tokens[:, 1:-1], tokens[:, 2:]), 1)
    frequencies = counts / counts.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(frequencies, table, atol=0.02)


def test_floor_is_the_chains_entropy_rate():
    """The true chain's loss on a long sample equals the entropy rate computed from the stationary
    distribution of the pair chain (power iteration), within sampling error."""
    table = ot.markov_table(4, 0.5, seed=1)
    pairs = np.full((4, 4), 1 / 16)
    for _ in range(500):
        pairs = np.einsum("ab,abc->bc", pairs, table)
    entropy = -(pairs[..., None] * table * np.log(table)).sum()
    tokens = ot.sample(table, 2000, 200, np.random.default_rng(5))
    assert ot.floor_loss(table, tokens) == pytest.approx(entropy, rel=0.01)


def _losses(outlier_log2: int, fmt, scaling, steps: int = 3) -> list[float]:
    s = {**SHARED, "seq": 32, "batch": 4, "d_model": 64, "mlp": 64, "outlier_channels": [5]}
    model = ot.make_model(s, outlier_log2, fmt, scaling, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    table = ot.markov_table(s["vocab"], s["alpha"], 0)
    batch = torch.from_numpy(ot.sample(table, 4, 33, np.random.default_rng(0)))
    out = []
    for _ in range(steps):
        loss = ot._loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def test_outlier_gain_changes_nothing_in_fp32():
    """The gain is a power of two, so in fp32 the network and its training are bit-identical with and
    without it; a cast sees the difference."""
    assert _losses(13, None, "none") == _losses(0, None, "none")
    # scaling by 2^k commutes with bf16 rounding (no value reaches its range limits)
    assert _losses(13, "bf16", "none") == _losses(0, "bf16", "none")
    assert _losses(13, "int8", "tensor")[-1] > _losses(0, "int8", "tensor")[-1] + 0.01


def test_outlier_ratio_finds_a_large_channel():
    a = torch.from_numpy(np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32))
    assert ot.outlier_ratio(a) == pytest.approx(1, abs=0.2)
    a[:, 7] *= 100
    assert ot.outlier_ratio(a) == pytest.approx(100, rel=0.2)


def test_schedule_warms_up_then_decays_to_zero():
    assert ot.lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert ot.lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert ot.lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert ot.lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert ot.lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_format_constants_agree_with_chipbook_numerics():
    assert ot.MX_BLOCK == nm.MX_BLOCK and ot.E8M0_RANGE == nm.E8M0_RANGE
    for fmt in ("fp8_e4m3", "fp8_e5m2", "bf16", "int8"):
        assert ot._largest(fmt) == nm.get_format(fmt).max


def test_delayed_scaling_uses_the_history_and_clamps_what_outgrows_it():
    x = torch.from_numpy(_inputs())
    history = ot.AmaxHistory(length=2)
    top = ot._largest("fp8_e4m3")
    first = history.cast(x, "fp8_e4m3", record=True)  # no history yet: scale 1, as Transformer Engine starts
    np.testing.assert_array_equal(first.numpy(), nm.quantize(np.clip(x.numpy(), -top, top), "fp8_e4m3"))
    assert history.clamped == 1 and history.amaxes == [float(x.abs().max())]
    # a tensor whose amax the history holds casts as under current per-tensor scaling, bit for bit
    again = history.cast(x, "fp8_e4m3", record=True).numpy()
    current = nm.quantize_scaled(x.numpy(), "fp8_e4m3", "tensor")
    np.testing.assert_array_equal(again.view(np.uint32), current.view(np.uint32))
    # a tensor twice as large outgrows the history: its largest values clamp to the history's amax
    grown = history.cast(2 * x, "fp8_e4m3", record=True)
    assert float(grown.abs().max()) == pytest.approx(float(x.abs().max()), rel=2**-3)
    assert history.clamped == 2
    assert history.amaxes == [float(x.abs().max()), 2 * float(x.abs().max())]  # the oldest dropped
    history.cast(4 * x, "fp8_e4m3", record=False)  # evaluation: nothing recorded
    assert history.clamped == 2 and len(history.amaxes) == 2


def test_growing_gain_climbs_by_powers_of_two():
    assert [ot.gain_log2(t, 13, None) for t in (0, 500)] == [13, 13]
    grown = [ot.gain_log2(t, 4, [10, 18]) for t in range(25)]
    assert grown == [0] * 12 + [1, 1, 2, 2, 3, 3] + [4] * 7
    with pytest.raises(ValueError, match="grow"):
        ot.gain_log2(0, 4, [10, 10])


def test_a_gain_set_during_training_changes_nothing_in_fp32():
    s = {**SHARED, "seq": 32, "batch": 4, "d_model": 64, "mlp": 64, "outlier_channels": [5]}
    table = ot.markov_table(s["vocab"], s["alpha"], 0)
    batch = torch.from_numpy(ot.sample(table, 4, 33, np.random.default_rng(0)))
    losses = []
    for gains in ([0, 0, 0], [0, 7, 13]):
        model = ot.make_model(s, 0, None, "none", seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        run = []
        for g in gains:
            model.set_gain(g)
            loss = ot._loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == losses[1]
