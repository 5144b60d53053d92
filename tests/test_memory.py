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

from chipbook import _checks, data, market
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


@pytest.mark.parametrize("t", [2, 8])
def test_tensor_and_sequence_parallelism_divide_every_term(t):
    # Korthikanti et al. eq. 5: sbh(34/t + 5as/(ht)) per layer on each of t chips
    total, _ = _listed_tensors(2048, 1, 12288, 96)
    assert m.activation_bytes(2048, 1, 12288, 96, 1, tensor_parallel=t) == pytest.approx(total / t)


def _llama_layer_saved_bytes(s, b, h, a, kv, f):
    """Allocate the tensors a Llama layer's backward pass needs (bf16; softmax statistic fp32),
    as a FlashAttention implementation saves them, and add their bytes."""
    bf16, d = ml_dtypes.bfloat16, h // a
    saved = [np.zeros((s, b, h), bf16),           # attention RMSNorm input (the residual stream)
             np.zeros((s, b, h), bf16),           # its output, the QKV projection's input
             np.zeros((s, b, a, d), bf16),        # Q after RoPE
             np.zeros((s, b, kv, d), bf16),       # K after RoPE
             np.zeros((s, b, kv, d), bf16),       # V
             np.zeros((s, b, a, d), bf16),        # FlashAttention output = output projection input
             np.zeros((b, a, s), np.float32),     # FlashAttention's log-sum-exp per head and token
             np.zeros((s, b, h), bf16),           # MLP RMSNorm input
             np.zeros((s, b, h), bf16),           # its output, the gate and up projections' input
             np.zeros((s, b, f), bf16),           # gate projection (SiLU's input)
             np.zeros((s, b, f), bf16),           # up projection
             np.zeros((s, b, f), bf16)]           # SiLU(gate) · up, the down projection's input
    return sum(x.nbytes for x in saved)


@pytest.mark.parametrize(("s", "b", "h", "a", "kv", "f"),
                         [(64, 2, 256, 8, 2, 688), (128, 1, 512, 8, 8, 1376)])
def test_llama_activations_match_the_allocated_tensors(s, b, h, a, kv, f):
    layers = 3
    expected = layers * _llama_layer_saved_bytes(s, b, h, a, kv, f)
    assert m.llama_activation_bytes(s, b, h, a, kv, f, layers) == expected
    # over 4 chips every tensor is split 4 ways, except the keys and values, split over at most kv chips
    keys_values = 2 * 2 * s * b * h * kv // a  # two bf16 tensors of s·b·h·kv/a values
    split = (_llama_layer_saved_bytes(s, b, h, a, kv, f) - keys_values) / 4 + keys_values / min(4, kv)
    assert m.llama_activation_bytes(s, b, h, a, kv, f, layers, tensor_parallel=4) == pytest.approx(
        layers * split)
    assert m.llama_activation_bytes(s, b, h, a, kv, f, layers, recompute="full") == layers * 2 * s * b * h


def test_logits_are_fp32_over_the_vocabulary():
    assert m.logits_bytes(16, 2, 1000) == np.zeros((16, 2, 1000), np.float32).nbytes
    assert m.logits_bytes(16, 2, 1000, tensor_parallel=8) == np.zeros((16, 2, 1000), np.float32).nbytes / 8


def test_full_recomputation_costs_a_second_forward_pass():
    # Korthikanti et al.: full recomputation adds a forward pass, 33% more than the 6N of training
    assert m.training_flop_per_token(1e9, "full") == pytest.approx(6e9 * 4 / 3)
    assert m.training_flop_per_token(1e9) == m.training_flop_per_token(1e9, "selective") == 6e9


# --- KV cache -----------------------------------------------------------------------------------------


def test_kv_cache_of_opt_13b_is_the_vllm_papers_800_kb_per_token():
    # Kwon et al. 2023 (PagedAttention), section 3: OPT-13B, 40 layers of width 5120 (40 heads of
    # 128), fp16: "the KV cache of a single token demands 800 KB" (2 × 5120 × 40 × 2 bytes).
    assert m.kv_cache_bytes(40, 40, 128, 1, 1, "fp16") == 819_200


def test_kv_cache_by_allocating_it():
    layers, kv_heads, head_dim, seq, batch = 3, 2, 16, 10, 4
    cache = [np.zeros((2, batch, kv_heads, seq, head_dim), dtype=ml_dtypes.bfloat16) for _ in range(layers)]
    assert m.kv_cache_bytes(layers, kv_heads, head_dim, seq, batch, "bf16") == sum(c.nbytes for c in cache)


def test_latent_cache_by_allocating_it():
    layers, latent, seq, batch = 3, 40, 7, 2
    cache = [np.zeros((batch, seq, latent), dtype=ml_dtypes.bfloat16) for _ in range(layers)]
    assert m.latent_kv_cache_bytes(layers, latent, seq, batch, "bf16") == sum(c.nbytes for c in cache)
    # DeepSeek-V3: 61 layers × (512 latent + 64 rotary key) bf16 values per token
    assert m.latent_kv_cache_bytes(61, 512 + 64, 1, 1, "bf16") == 70_272


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


@given(fast=st.floats(1e3, 1e9), slow=st.one_of(st.just(0.0), st.floats(1e3, 1e10)), sram=_size(1e5),
       hbm=_size(300), ddr=_size(2000))
def test_chips_needed_is_the_smallest_count_that_holds(fast, slow, sram, hbm, ddr):
    # brute force: the first n whose fast tiers take the fast bytes and whose tiers together take all
    chip = {"sram_mb": sram, "hbm_gb": hbm, "ddr_gb": ddr}
    fast_cap = sram * 1e6 + hbm * 1e9
    got = m.chips_needed(fast, chip, m.TIERS, slow_bytes=slow)
    if fast_cap == 0:
        assert got == math.inf
        return
    n = 1
    while n * fast_cap < fast * (1 - 1e-12) or n * (fast_cap + ddr * 1e9) < (fast + slow) * (1 - 1e-12):
        n += 1
    assert got == n


def test_chips_needed_treats_missing_tiers_as_absent(chips):
    groq = chips.loc["Groq LPU (GroqChip)"]
    assert m.chips_needed(1.4e11, groq, ("HBM",)) == math.inf
    assert m.chips_needed(1.4e11, groq, ("SRAM",)) == math.ceil(1.4e11 / 230e6)
    assert m.weight_tier(groq) == "SRAM" and m.weight_tier(chips.loc["NVIDIA H100 SXM"]) == "HBM"
    sn40l = chips.loc["SambaNova SN40L"]
    assert m.tier_bytes(sn40l, "DDR") == 1.5e12 and math.isnan(m.tier_bandwidth(sn40l, "DDR"))


def test_ddr_takes_only_the_slow_bytes(chips):
    # SN40L: 520 MB SRAM + 64 GB HBM per socket. 2.2 TB that every pass reads need 2.2e12 / 64.52e9
    # = 34.1, so 35 sockets, however much DDR there is; 4.86 TB of optimizer state fit in their DDR.
    sn40l = chips.loc["SambaNova SN40L"]
    assert m.chips_needed(2.2e12, sn40l, m.TIERS, slow_bytes=4.86e12) == 35
    assert m.chips_needed(2.2e12, sn40l, ("SRAM", "HBM"), slow_bytes=4.86e12) == math.ceil(7.06e12 / 64.52e9)
    assert m.chips_needed(1e9, sn40l, ("DDR",)) == math.inf  # no fast tier among those allowed


def test_one_tier_rule_across_vendors(chips):
    # host memory behind PCIe and external appliances are not tiers; a superchip's CPU memory is
    assert math.isnan(chips.loc["Cerebras WSE-3", "ddr_gb"])
    assert math.isnan(chips.loc["NVIDIA B200 (DGX B200)", "ddr_gb"])
    assert chips.loc["NVIDIA GH200 (Grace Hopper, 96 GB)", "ddr_gb"] > 0
    assert chips.loc["NVIDIA GB200 (per Blackwell GPU)", "ddr_gb"] > 0


def test_chips_for_compute_against_gpu_hours_and_the_issue_range():
    # the same run counted in accelerator-hours by the market chapter's formula
    runs = [(3.8e25, 989e12, 0.4, 90), (4.2e20, 188e12, 0.41, 1), (1e24, 312e12, 0.5, 30)]
    for flop, peak, use, days in runs:
        hours = market.gpu_hours(flop, peak, use)
        assert m.chips_for_compute(flop, peak, use, days) == math.ceil(hours / (24 * days))
    # Llama 3.1 405B (3.8e25 FLOP) on H100s at 40% of peak: about 12,000 chips in 90 days, 21,000 in 54
    assert 12_000 <= m.chips_for_compute(3.8e25, 989e12, 0.4, 90) <= 12_500
    assert 20_000 <= m.chips_for_compute(3.8e25, 989e12, 0.4, 54) <= 21_000
    assert m.chips_for_compute(1.0, 1.0, 1.0, 1 / 86_400) == 1  # exactly one chip-second


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


def test_decode_intensity_tends_to_two_n_over_the_kv_cache():
    # Llama 2 70B, bf16, 4K context: M_KV = 2·80·8·128·4096·2 bytes; 2N/M_KV is about 104 FLOP/byte
    kv = 2 * 80 * 8 * 128 * 4096 * 2
    assert m.decode_intensity(7e10, 2, 1, kv) == pytest.approx(2 * 7e10 / (1.4e11 + kv))
    assert m.decode_intensity(7e10, 2, 1e9, kv) == pytest.approx(2 * 7e10 / kv, rel=1e-3)
    assert 2 * 7e10 / kv == pytest.approx(104, abs=1)
    assert m.decode_intensity(7e10, 2, 512) == 512  # no KV cache: 2B/b


def test_step_traffic_by_hand_for_mixed_adam():
    # forward reads bf16 weights (2), backward reads them (2) and writes bf16 gradients (2); the
    # optimizer reads the gradients (2), reads and writes fp32 master, m, v (12 + 12) and writes the
    # new bf16 weights (2): 34 bytes per parameter.
    assert m.step_traffic_bytes(1e9, "mixed-adam") == 34e9
    # three micro-batches: weights read 6 times and written once (14), gradients written once, then
    # read and written twice, then read by the optimizer (6 × 2 = 12), optimizer state 24: 50
    assert m.step_traffic_bytes(1e9, "mixed-adam", micro_batches=3) == 50e9
    assert m.optimizer_traffic_bytes(1e9, "mixed-adam") == 24e9


def test_step_time_crosses_over_where_traffic_equals_compute():
    n, peak, bw = 1e9, 1e15, 1e12
    crossover = 34 * n / bw / (6 * n / peak)
    below = m.step_time_bound(n, "mixed-adam", crossover / 2, fast_b_s=bw, peak_flop_s=peak)
    above = m.step_time_bound(n, "mixed-adam", crossover * 2, fast_b_s=bw, peak_flop_s=peak)
    assert below == pytest.approx(34 * n / bw)
    assert above == pytest.approx(6 * n * crossover * 2 / peak)
    assert m.crossover_tokens(34, peak, bw) == pytest.approx(crossover)


def test_optimizer_state_in_a_slow_tier_costs_time_only_below_its_crossover():
    n, peak, fast, slow = 1e9, 1e15, 3e12, 1e11
    t_star = m.crossover_tokens(24, peak, slow)  # 2·o = 24 bytes per parameter once a step
    assert t_star == pytest.approx(24 * peak / (6 * slow))
    small = m.step_time_bound(n, "mixed-adam", t_star / 4, peak_flop_s=peak, fast_b_s=fast, slow_b_s=slow)
    large = m.step_time_bound(n, "mixed-adam", t_star * 4, peak_flop_s=peak, fast_b_s=fast, slow_b_s=slow)
    assert small == pytest.approx(24 * n / slow)
    assert large == pytest.approx(6 * n * t_star * 4 / peak)


def test_llama3_layout_per_gpu_by_hand():
    # TP8 × PP16: 405e9 / 128 parameters per GPU; bf16 weights whole, gradients and the 12-byte
    # optimizer state sharded over DP128 (ZeRO stage 2); activations / 16 stages × 16 in flight
    layout = m.Layout(tensor=8, pipeline=16, data=128, zero_stage=2, in_flight=16)
    assert layout.chips == 16_384
    parts = m.layout_bytes_per_chip(4.05e11, "mixed-adam", layout, activations_per_microbatch=3.2e9)
    share = 4.05e11 / 128
    assert parts["weights"] == pytest.approx(2 * share)
    assert parts["gradients"] == pytest.approx(2 * share / 128)
    assert parts["optimizer state"] == pytest.approx(12 * share / 128)
    assert parts["activations"] == pytest.approx(3.2e9 / 16 * 16)


def test_llama3_layout_with_fp32_gradient_buffer_by_hand():
    # Llama 3's paper: fp32 gradients accumulated over micro-batches, reduce-scattered once a step.
    # 2 + 4 + 12 = 18 bytes per parameter; ZeRO stage 1 keeps the whole fp32 buffer on each GPU.
    layout = m.Layout(tensor=8, pipeline=16, data=128, zero_stage=1, in_flight=16)
    parts = m.layout_bytes_per_chip(4.05e11, "mixed-adam-fp32-grads", layout, activations_per_microbatch=0)
    share = 4.05e11 / 128                      # 3.1640625e9 parameters per GPU
    assert parts["weights"] == pytest.approx(6.328125e9)
    assert parts["gradients"] == pytest.approx(12.65625e9)        # 4 bytes each, not sharded
    assert parts["optimizer state"] == pytest.approx(12 * share / 128)
    assert parts["activations"] == 0


def test_interleaved_schedule_keeps_more_activations_on_the_first_stage():
    # Megatron-LM's penalty 1 + (p - 1)/(p·v): p = 16, v = 2 gives 1 + 15/32 = 47/32
    plain = m.Layout(tensor=8, pipeline=16, data=128, in_flight=16)
    interleaved = m.Layout(tensor=8, pipeline=16, data=128, in_flight=16, chunks=2)
    assert plain.interleave_factor == 1
    assert interleaved.interleave_factor == pytest.approx(47 / 32)
    act = m.layout_bytes_per_chip(4.05e11, "mixed-adam", interleaved, activations_per_microbatch=3.2e9)
    assert act["activations"] == pytest.approx(3.2e9 * 47 / 32)
    many = m.Layout(tensor=8, pipeline=16, data=128, in_flight=16, chunks=1000)
    assert 1 < many.interleave_factor < 1.001  # more chunks, closer to plain 1F1B


def test_working_set_and_the_split_it_forces():
    # a 6.4 GB layer, 2 GB of gradient, 4 GB of activations over 4 chips: 3.1 GB each
    assert m.working_set_bytes(6.4e9, 4e9, layer_grad_bytes=2e9, tensor_parallel=4) == pytest.approx(3.1e9)
    assert m.min_split(10.0, 3.0) == 4
    assert m.min_split(9.0, 3.0) == 3
    assert m.min_split(405e9 / 126 * 2, 119e6) == 55   # one gathered Llama 3.1 405B layer in 119 MB
    assert m.min_split(1.0, 0.0) == math.inf
    assert m.min_split(1.0, -5.0) == math.inf


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


def test_adam_step_matches_the_papers_algorithm_in_float64():
    # Kingma and Ba 2015, Algorithm 1, written out plainly, two steps
    weights = m.mlp_weights(2, 8, seed=5)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    target = rng.standard_normal((4, 8)).astype(np.float32)
    adam = m.AdamState.zeros(weights)
    lr, (b1, b2), eps = 1e-2, m.ADAM_BETAS, m.ADAM_EPS
    ref = [w.astype(np.float64) for w in weights]
    mom = [np.zeros_like(w) for w in ref]
    var = [np.zeros_like(w) for w in ref]
    for step in (1, 2):
        probe = [w.copy() for w in weights]
        sgd_lr = 1.0
        m.train_step(probe, x, target, lr=sgd_lr)  # plain SGD with lr 1 exposes the gradient
        grads = [(p0 - p1).astype(np.float64) for p0, p1 in zip(weights, probe, strict=True)]
        m.train_step(weights, x, target, lr=lr, adam=adam)
        for i, g in enumerate(grads):
            mom[i] = b1 * mom[i] + (1 - b1) * g
            var[i] = b2 * var[i] + (1 - b2) * g * g
            ref[i] -= lr * (mom[i] / (1 - b1**step)) / (np.sqrt(var[i] / (1 - b2**step)) + eps)
        for w, r in zip(weights, ref, strict=True):
            np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_measured_peak_is_deterministic_and_near_the_model(training):
    m.peak_bytes(1, 8, 8, training=training)  # numpy's one-off internals
    for depth in (2, 6):
        first = m.peak_bytes(depth, 128, 64, training=training)
        assert first == m.peak_bytes(depth, 128, 64, training=training)
        model = sum(m.mlp_model_bytes(depth, 128, 64, training=training).values())
        assert first == pytest.approx(model, rel=0.02)


def test_measured_state_is_sixteen_bytes_per_parameter_with_adam():
    # per extra layer, training adds W² parameters × 16 bytes (fp32 weight, gradient, two moments)
    # and two B×W float32 activations; inference adds only the weights
    w, b = 128, 64
    train = [m.peak_bytes(d, w, b, training=True) for d in (2, 4, 8)]
    infer = [m.peak_bytes(d, w, b, training=False) for d in (2, 4, 8)]
    per_layer_train = (train[2] - train[1]) / 4
    per_layer_infer = (infer[2] - infer[1]) / 4
    assert per_layer_train == pytest.approx(16 * w * w + 2 * 4 * b * w, rel=0.01)
    assert per_layer_infer == pytest.approx(4 * w * w, rel=0.01)


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
    (lambda: m.chips_needed(0, {"sram_mb": 1}, ("SRAM",)), "fast_bytes"),
    (lambda: m.chips_needed(1e9, {"sram_mb": 1}, ("SRAM",), slow_bytes=-1), "slow_bytes"),
    (lambda: m.chips_for_compute(1e24, 1e15, 0, 30), "utilisation"),
    (lambda: m.chips_for_compute(1e24, 1e15, 0.4, -1), "days"),
    (lambda: m.chips_for_compute(math.inf, 1e15, 0.4, 30), "train_flop"),
    (lambda: m.llama_activation_bytes(16, 1, 64, 4, 8, 128, 2), "kv_heads"),
    (lambda: m.llama_activation_bytes(16, 1, 64, 4, 2, 128, 2, recompute="selective"), "recompute"),
    (lambda: m.llama_activation_bytes(16, 1, 64, 4, 2, 128, 2, tensor_parallel=8), "tensor_parallel"),
    (lambda: m.activation_bytes(16, 1, 64, 4, 2, tensor_parallel=0), "tensor_parallel"),
    (lambda: m.logits_bytes(16, 1, 0), "vocab"),
    (lambda: m.latent_kv_cache_bytes(2, 0, 16, 1, "bf16"), "latent_dim"),
    (lambda: m.Layout(tensor=8, pipeline=0, data=1), "pipeline"),
    (lambda: m.Layout(tensor=8, pipeline=2, data=1, zero_stage=5), "zero_stage"),
    (lambda: m.Layout(tensor=8, pipeline=2, data=1, chunks=0), "chunks"),
    (lambda: m.working_set_bytes(1e9, 1e9, tensor_parallel=0), "tensor_parallel"),
    (lambda: m.working_set_bytes(1e9, -1.0), "layer_activation_bytes"),
    (lambda: m.min_split(1e9, math.nan), "free_bytes"),
    (lambda: m.decode_intensity(1e9, 2, 1, -1.0), "kv_bytes_per_seq"),
    (lambda: m.step_traffic_bytes(1e9, "mixed-adam", micro_batches=0), "micro_batches"),
    (lambda: m.crossover_tokens(34, 1e15, 0), "bandwidth_b_s"),
    (lambda: m.chips_needed(1e9, {"sram_mb": 1}, ()), "tiers"),
    (lambda: m.decode_tokens_per_s(1e9, 2, 0, bandwidth_b_s=1e12, peak_flop_s=1e15), "batch"),
    (lambda: m.decode_tokens_per_s(1e9, 2, 1, bandwidth_b_s=1e12, peak_flop_s=1e15, kv_bytes_per_seq=-1),
     "kv_bytes_per_seq"),
    (lambda: m.matmul_intensity(1, 0, 1, 2), "k"),
    (lambda: m.step_time_bound(1e9, "mixed-adam", 1e3, fast_b_s=0, peak_flop_s=1e15), "fast_b_s"),
    (lambda: m.step_time_bound(1e9, "mixed-adam", 1e3, fast_b_s=1e12, slow_b_s=0, peak_flop_s=1e15),
     "slow_b_s"),
    (lambda: m.peak_bytes(0, 8, 8, training=True), "depth"),
    (lambda: m.mlp_model_bytes(2, 8, 0, training=False), "batch"),
    (lambda: m.peak_bytes(2, 8, 0, training=True), "batch"),
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


# --- the chapter's own data files ---------------------------------------------------------------------


def test_model_architecture_rows_match_models_csv():
    models = data.load("models").set_index("model")
    arch = data.load("model_architecture").set_index("model")
    assert set(arch.index) <= set(models.index)
    dense = arch[arch.routed_experts.isna()]
    assert (dense.dense_layers == models.loc[dense.index, "layers"]).all()  # every layer dense
    moe = arch.dropna(subset=["routed_experts"])
    assert (moe.dense_layers < models.loc[moe.index, "layers"]).all()
    assert (moe.active_experts < moe.routed_experts).all()
    # Llama 3 paper, Table 3: FFN widths 14,336 / 28,672 / 53,248
    llama3 = ["Llama 3.1 8B", "Llama 3.1 70B", "Llama 3.1 405B"]
    assert list(arch.loc[llama3, "ffn_hidden"]) == [14336, 28672, 53248]


def test_decode_speeds_state_a_speed_or_a_latency_not_both():
    speeds = data.load("decode_speeds")
    stated = speeds.tokens_per_s_per_user.notna().astype(int) + speeds.inter_token_us.notna().astype(int)
    assert (stated == 1).all()
    assert set(speeds.basis) <= {"vendor claim", "vendor measurement", "independent measurement"}


def test_unrounded_peak_exceeds_the_model_only_by_pythons_own_objects():
    m.peak_bytes(2, 128, 64, training=True)
    for training in (True, False):
        raw = m.peak_bytes(4, 128, 64, training=training, resolution=1)
        model = sum(m.mlp_model_bytes(4, 128, 64, training=training).values())
        assert 0 <= raw - model < 16 * 1024  # lists, tuples and array headers: a few KiB


def test_prefill_seconds_by_hand_from_published_specs():
    # Llama 3.1 70B (70e9 parameters, 80 layers, 64 heads of 128 [dubey2024llama]) prefilling a
    # 2,048-token prompt on one H100 SXM (989 TFLOP/s dense BF16, NVIDIA's datasheet) at half its peak:
    # 2 * 70e9 * 2048 = 2.8672e14 FLOP over 4.945e14 FLOP/s
    got = m.prefill_seconds(7e10, 2048, peak_flop_s=989e12, utilisation=0.5)
    assert got == pytest.approx(0.579818, rel=1e-5)
    # with attention over the causal prompt: 4 * 80 * 8192 * 1024.5 = 2,685,665,280 FLOP more a token,
    # (1.4e11 + 2.68566528e9) * 2048 = 2.92220e14 FLOP
    attention = market.Attention.causal(80, 64 * 128, 2048)
    got = m.prefill_seconds(7e10, 2048, peak_flop_s=989e12, utilisation=0.5, attention=attention)
    assert got == pytest.approx(0.590941, rel=1e-5)
    # two chips sharing the prompt halve it
    assert m.prefill_seconds(7e10, 2048, peak_flop_s=2 * 989e12, utilisation=0.5) == pytest.approx(0.289909,
                                                                                                    rel=1e-5)
    with pytest.raises(ValueError, match="utilisation"):
        m.prefill_seconds(7e10, 2048, peak_flop_s=989e12, utilisation=0.0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        m.prefill_seconds(7e10, 0, peak_flop_s=989e12, utilisation=0.5)


def test_first_stage_share_by_hand():
    # 126 layers over 16 stages: inner stages hold (126 + 2)/16 = 8 layers, the end stages 7; stage 0
    # keeps 16 micro-batches of 7 layers (112), stage 1 keeps 15 of 8 (120), against 126 if even
    assert m.first_stage_share(126, 16) == pytest.approx(120 / 126)
    assert m.first_stage_share(126, 2) == 1.0 and m.first_stage_share(126, 1) == 1.0
    # interleaved, every stage keeps the step's micro-batches: an inner stage's 8 layers, not 126/16
    assert m.first_stage_share(126, 16, chunks=8) == pytest.approx(128 / 126)
    with pytest.raises(ValueError, match="pipeline"):
        m.first_stage_share(126, 0)


def test_no_schedule_keeps_more_micro_batches_than_the_step_has():
    # Llama 3's 8K stage: 16 sequences a replica and 16 stages; interleaving (c = 2) would keep
    # 1 + 15/32 times 1F1B's 16 micro-batches, but only 16 exist [korthikanti2022reducing]
    layout = m.Layout(tensor=8, pipeline=16, data=128, zero_stage=1, in_flight=16, chunks=2)
    free = m.layout_bytes_per_chip(4.05e11, "mixed-adam", layout, activations_per_microbatch=16e9)
    capped = m.layout_bytes_per_chip(4.05e11, "mixed-adam", layout, activations_per_microbatch=16e9,
                                     microbatches=16)
    assert free["activations"] == pytest.approx(16e9 / 16 * 16 * (1 + 15 / 32))
    assert capped["activations"] == pytest.approx(16e9)
    assert {k: v for k, v in capped.items() if k != "activations"} == {
        k: v for k, v in free.items() if k != "activations"}
    with pytest.raises(ValueError, match="microbatches"):
        m.layout_bytes_per_chip(4.05e11, "mixed-adam", layout, activations_per_microbatch=1.0, microbatches=0)
