"""chipbook.memory against independent values: the ZeRO paper's worked example, the tensors that
Korthikanti et al. list one by one, the KV-cache size the vLLM paper states, byte sizes from numpy and
ml_dtypes, brute-force counts and simulations, and a hand enumeration of a training step's traffic.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipbook import _checks, data
from chipbook import memory as m

F32 = np.dtype(np.float32).itemsize
F16 = np.dtype(np.float16).itemsize
BF16 = np.dtype(ml_dtypes.bfloat16).itemsize
FP8 = np.dtype(ml_dtypes.float8_e4m3fn).itemsize


# --- bytes per parameter ----------------------------------------------------------------------------


def test_format_sizes_match_numpy_and_ml_dtypes():
    assert m.fmt_bytes("fp32") == F32
    assert m.fmt_bytes("fp16") == F16
    assert m.fmt_bytes("bf16") == BF16
    assert m.fmt_bytes("fp8") == FP8
    assert m.fmt_bytes("int8") == np.dtype(np.int8).itemsize
    assert m.fmt_bytes("int4") == np.dtype(ml_dtypes.int4).itemsize / 2  # two values packed per byte


def test_recipes_are_their_published_component_sums():
    # ZeRO (Rajbhandari et al. 2020, section 3.1): fp16 weights and gradients, fp32 master weights,
    # momentum and variance: 2 + 2 + 12.
    assert m.recipe("mixed-adam").total == F16 + F16 + 3 * F32 == 16
    assert m.recipe("fp32-adam").total == 4 * F32
    assert m.recipe("mixed-adam-fp32-grads").total == BF16 + F32 + 3 * F32 == 18
    # 8-bit Adam (Dettmers et al. 2022): one byte per moment, fp32 master weights kept.
    assert m.recipe("mixed-adam-8bit").total == BF16 + BF16 + F32 + 2 * 1 == 10
    assert m.recipe("bf16-adam").total == 4 * BF16
    # DeepSeek-V3: FP8 working weights, fp32 master weights and gradients, BF16 moments.
    assert m.recipe("fp8-deepseek").total == FP8 + F32 + F32 + 2 * BF16
    assert m.recipe("sgd-momentum").total == 3 * F32


def test_zero_paper_worked_example():
    # Rajbhandari et al. 2020, Figure 1: Ψ = 7.5B parameters, N_d = 64 GPUs, K = 12.
    expected = {0: 120, 1: 31.4, 2: 16.6, 3: 1.88}
    for stage, gb in expected.items():
        got = m.training_state_bytes(7.5e9, "mixed-adam", zero_stage=stage, chips=64) / 1e9
        assert got == pytest.approx(gb, rel=0.005), stage


@given(st.floats(1e6, 1e13), st.integers(1, 4096), st.sampled_from(sorted(m.RECIPES)))
def test_zero_stage_3_divides_everything_and_one_chip_changes_nothing(params, chips, recipe):
    full = m.training_state_bytes(params, recipe)
    assert m.training_state_bytes(params, recipe, zero_stage=3, chips=chips) == pytest.approx(full / chips)
    for stage in range(4):
        assert m.training_state_bytes(params, recipe, zero_stage=stage, chips=1) == pytest.approx(full)


def test_inference_weights():
    assert m.inference_weight_bytes(7e10, "bf16") == 1.4e11
    assert m.inference_weight_bytes(7e10, "int4") == 3.5e10


# --- activations (Korthikanti et al. 2022, section 4.1) -----------------------------------------------


def _listed_tensors(s, b, h, a):
    """The paper's tensor-by-tensor list for one layer, 16-bit values (2 bytes), masks 1 byte."""
    attention = [2 * s * b * h,          # QKV projection input
                 4 * s * b * h,          # Q and K for Q·Kᵀ
                 2 * a * s * s * b,      # softmax output
                 a * s * s * b,          # dropout mask on the scores
                 2 * a * s * s * b,      # dropout output (for the product with V)
                 2 * s * b * h,          # V
                 2 * s * b * h,          # output projection input
                 s * b * h]              # output dropout mask
    mlp = [2 * s * b * h, 8 * s * b * h, 8 * s * b * h, s * b * h]  # fc1 in, GeLU in, fc2 in, dropout mask
    layernorm = [2 * s * b * h, 2 * s * b * h]
    return sum(attention) + sum(mlp) + sum(layernorm), sum(attention[2:5])


@pytest.mark.parametrize(("s", "b", "h", "a", "layers"),
                         [(2048, 1, 12288, 96, 96), (4096, 2, 8192, 64, 80), (128, 3, 64, 4, 2)])
def test_activation_bytes_match_the_listed_tensors(s, b, h, a, layers):
    total, scores = _listed_tensors(s, b, h, a)
    assert m.activation_bytes(s, b, h, a, layers) == pytest.approx(layers * total)
    # selective recomputation drops exactly the s×s tensors; full keeps each layer's input
    selective = m.activation_bytes(s, b, h, a, layers, recompute="selective")
    assert selective == pytest.approx(layers * (total - scores))
    assert m.activation_bytes(s, b, h, a, layers, recompute="full") == 2 * s * b * h * layers


# --- KV cache -----------------------------------------------------------------------------------------


def test_kv_cache_of_opt_13b_is_the_vllm_papers_800_kb_per_token():
    # Kwon et al. 2023 (PagedAttention), section 3: OPT-13B, 40 layers of width 5120 (40 heads of
    # 128), fp16: "the KV cache of a single token demands 800 KB" (2 × 5120 × 40 × 2 bytes).
    assert m.kv_cache_bytes(40, 40, 128, 1, 1, "fp16") == 819_200


def test_kv_cache_by_allocating_it():
    layers, kv_heads, head_dim, seq, batch = 3, 2, 16, 10, 4
    cache = [np.zeros((2, batch, kv_heads, seq, head_dim), dtype=ml_dtypes.bfloat16) for _ in range(layers)]
    assert m.kv_cache_bytes(layers, kv_heads, head_dim, seq, batch, "bf16") == sum(c.nbytes for c in cache)


def test_grouped_query_attention_shrinks_the_cache_by_the_group_size():
    llama70 = data.load("models").set_index("model").loc["Llama 2 70B"]
    gqa = m.kv_cache_bytes(80, int(llama70.kv_heads), 128, 4096, 1, "bf16")
    mha = m.kv_cache_bytes(80, int(llama70.heads), 128, 4096, 1, "bf16")
    assert mha / gqa == llama70.heads / llama70.kv_heads == 8


# --- chips and tiers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chips():
    return data.load("chips").set_index("chip")


def _size(high):
    return st.one_of(st.just(0.0), st.floats(0.5, high))  # a tier is absent or of a real size


@given(need=st.floats(1e3, 1e16), sram=_size(1e5), hbm=_size(300), ddr=_size(2000))
def test_chips_needed_is_the_smallest_count_that_holds(need, sram, hbm, ddr):
    chip = {"sram_mb": sram, "hbm_gb": hbm, "ddr_gb": ddr}
    capacity = sram * 1e6 + hbm * 1e9 + ddr * 1e9
    got = m.chips_needed(need, chip, m.TIERS)
    if capacity == 0:
        assert got == math.inf
        return
    assert got * capacity >= need * (1 - 1e-12)
    assert (got - 1) * capacity < need


def test_chips_needed_treats_missing_tiers_as_absent(chips):
    groq = chips.loc["Groq LPU (GroqChip)"]
    assert m.chips_needed(1.4e11, groq, ("HBM",)) == math.inf
    assert m.chips_needed(1.4e11, groq, ("SRAM",)) == math.ceil(1.4e11 / 230e6)
    assert m.weight_tier(groq) == "SRAM" and m.weight_tier(chips.loc["NVIDIA H100 SXM"]) == "HBM"
    sn40l = chips.loc["SambaNova SN40L"]
    assert m.tier_bytes(sn40l, "DDR") == 1.5e12 and math.isnan(m.tier_bandwidth(sn40l, "DDR"))


# --- bandwidth ----------------------------------------------------------------------------------------


@given(batch=st.integers(1, 4096), kv=st.floats(0, 1e10))
def test_decode_tokens_per_s_against_a_step_simulation(batch, kv):
    n, b, peak, bw = 7e10, 2.0, 989e12, 3.35e12
    step = max(2 * n * batch / peak, (n * b + batch * kv) / bw)  # seconds per decode step
    got = m.decode_tokens_per_s(n, b, batch, bandwidth_b_s=bw, peak_flop_s=peak, kv_bytes_per_seq=kv)
    assert got == pytest.approx(batch / step, rel=1e-9)


def test_matmul_intensity_counts_flops_and_bytes_of_real_arrays():
    mm, kk, nn = 64, 32, 48
    a, w = np.ones((mm, kk), np.float32), np.ones((kk, nn), np.float32)
    out = a @ w
    flop = 2 * out.size * kk  # one multiply and one add per term of each output
    assert m.matmul_intensity(mm, kk, nn, 4) == pytest.approx(flop / (a.nbytes + w.nbytes + out.nbytes))


def test_step_traffic_by_hand_for_mixed_adam():
    # forward reads bf16 weights (2), backward reads them (2) and writes bf16 gradients (2); the
    # optimizer reads the gradients (2), reads and writes fp32 master, m, v (12 + 12) and writes the
    # new bf16 weights (2): 34 bytes per parameter.
    assert m.step_traffic_bytes(1e9, "mixed-adam") == 34e9


def test_step_time_crosses_over_where_traffic_equals_compute():
    n, peak, bw = 1e9, 1e15, 1e12
    crossover = 34 * n / bw / (6 * n / peak)
    below = m.step_time_bound(n, "mixed-adam", crossover / 2, bandwidth_b_s=bw, peak_flop_s=peak)
    above = m.step_time_bound(n, "mixed-adam", crossover * 2, bandwidth_b_s=bw, peak_flop_s=peak)
    assert below == pytest.approx(34 * n / bw)
    assert above == pytest.approx(6 * n * crossover * 2 / peak)


# --- the numpy network --------------------------------------------------------------------------------


def test_train_step_lowers_the_loss_and_matches_a_finite_difference():
    weights = m.mlp_weights(2, 8, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    target = rng.standard_normal((5, 8)).astype(np.float32)

    def loss(ws):
        out = m.infer(ws, x)
        return float(np.mean((out - target) ** 2))

    before = [w.copy() for w in weights]
    lr = 1e-2
    reported = m.train_step(weights, x, target, lr=lr)
    assert reported == pytest.approx(loss(before), rel=1e-6)
    grad = (before[0] - weights[0]) / lr  # the step applied lr·∂L/∂W
    i, j, eps = 1, 2, 1e-2
    bumped = [w.astype(np.float64) for w in before]
    bumped[0][i, j] += eps
    down = [w.astype(np.float64) for w in before]
    down[0][i, j] -= eps
    numeric = (loss(bumped) - loss(down)) / (2 * eps)
    assert grad[i, j] == pytest.approx(numeric, rel=0.02, abs=1e-5)
    assert loss(weights) < loss(before)


@pytest.mark.parametrize("training", [True, False])
def test_measured_peak_is_deterministic_and_near_the_model(training):
    m.peak_bytes(1, 8, 8, training=training)  # numpy's one-off internals
    for depth in (2, 6):
        first = m.peak_bytes(depth, 128, 64, training=training)
        assert first == m.peak_bytes(depth, 128, 64, training=training)
        assert first == pytest.approx(m.mlp_model_bytes(depth, 128, 64, training=training), rel=0.02)


def test_training_memory_grows_with_depth_and_inference_does_not():
    train = [m.peak_bytes(d, 128, 64, training=True) for d in (2, 4, 8)]
    infer = [m.peak_bytes(d, 128, 64, training=False) for d in (2, 4, 8)]
    assert train[2] - train[1] == pytest.approx(2 * (train[1] - train[0]), rel=0.01)  # linear in depth
    assert infer[0] == infer[1] == infer[2]


# --- argument checks ----------------------------------------------------------------------------------

BAD_CALLS = [
    (lambda: m.training_state_bytes(1e9, "adamw"), "recipe"),
    (lambda: m.training_state_bytes(-1, "mixed-adam"), "params"),
    (lambda: m.training_state_bytes(1e9, "mixed-adam", zero_stage=4, chips=8), "zero_stage"),
    (lambda: m.training_state_bytes(1e9, "mixed-adam", zero_stage=1, chips=0), "chips"),
    (lambda: m.inference_weight_bytes(1e9, "fp64"), "fmt"),
    (lambda: m.inference_weight_bytes(math.nan, "bf16"), "params"),
    (lambda: m.activation_bytes(0, 1, 64, 4, 2), "seq"),
    (lambda: m.activation_bytes(16, 1, 64, 4, 2, recompute="some"), "recompute"),
    (lambda: m.activation_bytes(16, 1.5, 64, 4, 2), "batch"),
    (lambda: m.kv_cache_bytes(2, 0, 64, 16, 1, "bf16"), "kv_heads"),
    (lambda: m.kv_cache_bytes(2, 1, 64, 16, 1, "float"), "fmt"),
    (lambda: m.chips_needed(1e9, {"sram_mb": 1}, ("L2",)), "tier"),
    (lambda: m.chips_needed(0, {"sram_mb": 1}, ("SRAM",)), "need_bytes"),
    (lambda: m.chips_needed(1e9, {"sram_mb": 1}, ()), "tiers"),
    (lambda: m.decode_tokens_per_s(1e9, 2, 0, bandwidth_b_s=1e12, peak_flop_s=1e15), "batch"),
    (lambda: m.decode_tokens_per_s(1e9, 2, 1, bandwidth_b_s=1e12, peak_flop_s=1e15, kv_bytes_per_seq=-1),
     "kv_bytes_per_seq"),
    (lambda: m.matmul_intensity(1, 0, 1, 2), "k"),
    (lambda: m.step_time_bound(1e9, "mixed-adam", 1e3, bandwidth_b_s=0, peak_flop_s=1e15), "bandwidth_b_s"),
    (lambda: m.peak_bytes(0, 8, 8, training=True), "depth"),
    (lambda: m.mlp_model_bytes(2, 8, 0, training=False), "batch"),
]


@pytest.mark.parametrize(("call", "name"), BAD_CALLS, ids=[name for _, name in BAD_CALLS])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="mixed-adam") as err:
        m.recipe("adam")
    assert all(name in str(err.value) for name in m.RECIPES)
    with pytest.raises(ValueError, match="'bf16', 'fp16'"):
        m.fmt_bytes("fp64")
    with pytest.raises(ValueError, match="x must be one of 'a', 'b'; got 'c'"):
        _checks.choice("x", "c", ["a", "b"])
    with pytest.raises(ValueError, match="x must be one of"):
        _checks.choice("x", ["a"], ["a", "b"])  # unhashable values are refused, not crashed on
