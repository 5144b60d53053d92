"""chipbook.numerics against independent references: the formats' published parameters, ml_dtypes and
numpy casts over every fp16 bit pattern, brute-force nearest-value searches, frexp-based rounding in
Python floats, sequential float16/float32 sums, the OCP MX algorithm written out per block, and
float64 transcriptions of PyTorch's published optimizer update rules.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipbook import numerics as nm

EVERY_FP16 = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
ML_DTYPES = {"bf16": ml_dtypes.bfloat16, "fp8_e4m3": ml_dtypes.float8_e4m3fn,
             "fp8_e5m2": ml_dtypes.float8_e5m2, "fp4_e2m1": ml_dtypes.float4_e2m1fn}


def _same(got: np.ndarray, ref: np.ndarray) -> None:
    """Bit-for-bit equality of float32 arrays, NaN matching NaN (its payload and sign aside)."""
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), ref[~nan].astype(np.float32).view(np.uint32))


# --- the formats' parameters, typed from their specifications ---------------------------------------

SPEC = {  # (largest, smallest normal, smallest subnormal, mantissa bits)
    "fp32": ((2 - 2**-23) * 2.0**127, 2.0**-126, 2.0**-149, 23),
    "tf32": ((2 - 2**-10) * 2.0**127, 2.0**-126, 2.0**-136, 10),
    "bf16": ((2 - 2**-7) * 2.0**127, 2.0**-126, 2.0**-133, 7),
    "fp16": (65504.0, 2.0**-14, 2.0**-24, 10),  # IEEE 754 binary16
    "fp8_e4m3": (448.0, 2.0**-6, 2.0**-9, 3),  # Micikevicius et al. 2022, Table 1
    "fp8_e5m2": (57344.0, 2.0**-14, 2.0**-16, 2),
    "fp4_e2m1": (6.0, 1.0, 0.5, 1),  # OCP MX v1.0, section 5.3.3
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_format_parameters_match_the_specifications(name):
    f = nm.get_format(name)
    assert (f.max, f.min_normal, f.min_subnormal, f.mantissa_bits) == SPEC[name]


def test_emax_elem_is_the_mx_specs():
    # OCP MX v1.0, Table 1: emax_elem of E4M3, E5M2 and E2M1
    assert [nm.get_format(n).emax for n in ("fp8_e4m3", "fp8_e5m2", "fp4_e2m1")] == [8, 15, 2]


def test_unknown_format_is_rejected_listing_the_allowed_ones():
    with pytest.raises(ValueError, match=r"fmt must be one of 'fp32', 'tf32', 'bf16'.*'int8'; got 'fp6'"):
        nm.quantize(1.0, "fp6")
    with pytest.raises(ValueError, match="fmt must be one of"):
        nm.get_format(None)


@pytest.mark.parametrize("bad", ["1.0", ["a"], None])
def test_quantize_rejects_non_numbers(bad):
    with pytest.raises(ValueError, match="x must hold real numbers"):
        nm.quantize(bad, "bf16")


def test_saturate_must_be_a_boolean():
    with pytest.raises(ValueError, match="saturate must be True or False"):
        nm.quantize(1.0, "fp16", saturate=1)


# --- quantize: bit for bit against ml_dtypes and numpy ------------------------------------------------


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_quantize_matches_ml_dtypes_on_every_fp16_bit_pattern(name):
    with np.errstate(over="ignore", invalid="ignore"):
        ref = EVERY_FP16.astype(ML_DTYPES[name]).astype(np.float32)
    got = nm.quantize(EVERY_FP16, name)
    if name == "fp4_e2m1":  # E2M1 has no NaN: ml_dtypes writes NaN as -0, quantize keeps it NaN
        nan = np.isnan(EVERY_FP16)
        assert np.isnan(got[nan]).all()
        got, ref = got[~nan], ref[~nan]
    _same(got, ref)
    # and the result is a value of the format: casting it again changes nothing
    _same(got[np.isfinite(got)].astype(ML_DTYPES[name]).astype(np.float32), got[np.isfinite(got)])


def test_fp16_matches_numpy_on_every_bit_pattern_and_every_midpoint():
    _same(nm.quantize(EVERY_FP16, "fp16"), EVERY_FP16)
    finite = np.sort(EVERY_FP16[np.isfinite(EVERY_FP16)])
    mids = ((finite[1:].astype(np.float64) + finite[:-1]) / 2).astype(np.float32)  # ties: exact in fp32
    nudged = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])
    with np.errstate(over="ignore"):
        _same(nm.quantize(nudged, "fp16"), nudged.astype(np.float16).astype(np.float32))


@given(st.floats(width=32, allow_nan=True, allow_infinity=True))
def test_fp16_matches_numpy_for_any_float32(x):
    x = np.float32(x)
    with np.errstate(over="ignore"):
        _same(nm.quantize(x, "fp16").reshape(1), np.array([x.astype(np.float16)], np.float32))


# --- tf32: against frexp-based rounding in Python floats --------------------------------------------


def _tf32_reference(x: float) -> float:
    """Round to 10 fraction bits with ties to even using math.frexp and Python's round (which rounds
    half to even); tf32 has fp32's exponent range, so below 2^-126 the spacing is 2^-136."""
    if not math.isfinite(x) or x == 0:
        return x
    if abs(x) < 2.0**-126:
        return round(x * 2.0**136) / 2.0**136
    m, e = math.frexp(x)  # x = m · 2^e, 0.5 <= |m| < 1
    y = math.ldexp(round(math.ldexp(m, 11)), e - 11)
    return y if abs(y) <= (2 - 2**-10) * 2.0**127 else math.copysign(math.inf, x)


@given(st.floats(width=32, allow_nan=False, allow_infinity=True))
def test_tf32_matches_frexp_rounding(x):
    assert float(nm.quantize(x, "tf32")[()]) == _tf32_reference(float(np.float32(x)))


def test_tf32_ties_go_to_even_and_overflow_goes_to_inf():
    one = 1.0
    half_ulp = 2.0**-11
    assert nm.quantize(one + half_ulp, "tf32")[()] == 1.0  # tie, even neighbour is 1.0
    assert nm.quantize(one + 3 * half_ulp, "tf32")[()] == 1.0 + 4 * half_ulp  # tie, even is up
    assert nm.quantize(np.finfo(np.float32).max, "tf32")[()] == np.inf  # above the last midpoint
    assert np.isnan(nm.quantize(np.nan, "tf32")[()])


# --- fp8 and fp4: against a brute-force nearest-value search ------------------------------------------


def _values(name: str) -> np.ndarray:
    """Every finite value of the format, from its bit patterns."""
    dtype = ML_DTYPES[name]
    raw = np.arange(2 ** (8 if name != "fp4_e2m1" else 4), dtype=np.uint8).view(dtype).astype(np.float64)
    return raw[np.isfinite(raw)]


def _nearest(x: float, name: str) -> float:
    """The nearest value, ties to the one with an even last mantissa bit, clamped to ±max."""
    values = np.unique(_values(name))
    x = min(max(x, values[0]), values[-1])
    d = np.abs(values - x)
    best = values[d == d.min()]
    if len(best) == 1:
        return float(best[0])
    bits = [int(np.array([b], np.float32).astype(ML_DTYPES[name]).view(np.uint8)[0]) for b in best]
    return float(best[[b % 2 == 0 for b in bits].index(True)])


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_saturating_quantize_is_the_nearest_value(name):
    rng = np.random.default_rng(7)
    top = nm.get_format(name).max
    x = np.concatenate([rng.uniform(-1.2 * top, 1.2 * top, 300), rng.standard_normal(300) * 0.05,
                        (_values(name)[:-1] + _values(name)[1:]) / 2]).astype(np.float32)
    got = nm.quantize(x, name, saturate=True)
    assert [float(v) for v in got] == [_nearest(float(v), name) for v in x]


def test_overflow_behaviour_per_format():
    assert np.isnan(nm.quantize(500.0, "fp8_e4m3")[()])  # E4M3 fn: no infinity, NaN as in ml_dtypes
    assert nm.quantize(500.0, "fp8_e4m3", saturate=True)[()] == 448.0
    assert nm.quantize(464.0, "fp8_e4m3")[()] == 448.0  # the midpoint to the next binade's 480 ties down
    assert nm.quantize(7e4, "fp8_e5m2")[()] == np.inf and nm.quantize(7e4, "fp16")[()] == np.inf
    assert nm.quantize(-1e6, "fp4_e2m1")[()] == -6.0  # no inf or NaN: always saturates
    assert nm.quantize(1e9, "int8")[()] == 127.0 and nm.quantize(2.5, "int8")[()] == 2.0


# --- stochastic rounding -----------------------------------------------------------------------------


def test_stochastic_rounding_picks_an_enclosing_value_and_is_unbiased():
    rng = np.random.default_rng(0)
    values = np.unique(_values("fp8_e4m3"))
    x = np.full(40000, 1.3, dtype=np.float32)  # between 1.25 and 1.375 in E4M3
    got = nm.quantize_stochastic(x, "fp8_e4m3", rng)
    assert set(np.unique(got)) == {1.25, 1.375}
    p_up = (1.3 - 1.25) / 0.125
    sigma = math.sqrt(p_up * (1 - p_up) / x.size)
    assert abs((got == 1.375).mean() - p_up) < 5 * sigma
    sample = rng.uniform(-500, 500, 2000).astype(np.float32)
    out = nm.quantize_stochastic(sample, "fp8_e4m3", rng)
    for v, o in zip(sample, out, strict=True):
        clamped = min(max(float(v), -448.0), 448.0)
        below, above = values[values <= clamped].max(), values[values >= clamped].min()
        assert float(o) in (below, above)


def test_stochastic_rounding_keeps_representable_values():
    x = np.unique(EVERY_FP16[np.isfinite(EVERY_FP16)].astype(ml_dtypes.bfloat16).astype(np.float32))
    _same(nm.quantize_stochastic(x, "bf16", np.random.default_rng(1)), x)


def test_stochastic_rounding_needs_a_generator():
    with pytest.raises(ValueError, match="rng must be a numpy Generator"):
        nm.quantize_stochastic(1.0, "bf16", 3)


# --- scaled formats ------------------------------------------------------------------------------------


def _mx_reference(block: np.ndarray, name: str) -> np.ndarray:
    """OCP MX v1.0 / Rouhani et al. 2023, Algorithm 1, for one block, in Python floats."""
    amax = max(abs(float(v)) for v in block)
    if amax == 0:
        return np.zeros(len(block))
    shared = math.floor(math.log2(amax)) - nm.get_format(name).emax
    scale = 2.0**shared
    return np.array([_nearest(float(v) / scale, name) * scale for v in block])


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp4_e2m1"])
def test_mx_blocks_follow_the_specification(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 64)) * np.exp(rng.uniform(-8, 8, (2, 1)))).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero block
    got = nm.quantize_scaled(x, name, "mx")
    ref = np.concatenate([_mx_reference(row[i:i + 32], name) for row in x for i in (0, 32)]).reshape(x.shape)
    np.testing.assert_array_equal(got, ref.astype(np.float32))


def test_per_tensor_scaling_maps_the_largest_magnitude_to_the_top_of_the_format():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 50)).astype(np.float32) * np.array([[1e-6], [1.0], [1e4]], np.float32)
    got = nm.quantize_scaled(x, "fp8_e4m3", "tensor", batch_dims=1)  # one scale per row
    for row, q in zip(x, got, strict=True):
        big = np.abs(row) >= np.abs(row).max() / 2  # the top binade of the scaled tensor
        assert np.all(np.abs(q[big] - row[big]) <= 2.0**-4 * np.abs(row[big]) * (1 + 1e-6))
        assert np.max(np.abs(q)) == pytest.approx(np.max(np.abs(row)), rel=1e-6)


def test_per_channel_int8_uses_one_scale_per_last_axis_entry():
    x = np.array([[1.0, 100.0], [-0.5, 50.0], [0.25, -127.0]], np.float32)
    got = nm.quantize_scaled(x, "int8", "channel")
    np.testing.assert_allclose(got[:, 1], [100.0, 50.0, -127.0], rtol=1e-6)  # 127 steps of 1 in column 2
    np.testing.assert_allclose(got[:, 0], np.round(x[:, 0] * 127) / 127, rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(fmt="fp8_e4m3", scaling="block"), "scaling must be one of 'none', 'tensor', 'channel', 'mx'"),
    (dict(fmt="fp16", scaling="mx"), "fmt must be one of 'fp8_e4m3', 'fp8_e5m2', 'fp4_e2m1'"),
    (dict(fmt="fp8_e4m3", scaling="mx", block=0), "block must be a whole number >= 1"),
    (dict(fmt="fp8_e4m3", scaling="tensor", batch_dims=3), "batch_dims must be at most x.ndim = 2"),
])
def test_scaled_quantize_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nm.quantize_scaled(np.ones((2, 32)), **kwargs)


def test_mx_partial_block_is_the_zero_padded_one_and_axis_picks_the_reduction_axis():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((3, 24), np.float32)], axis=1)
    np.testing.assert_array_equal(nm.quantize_scaled(x, "fp4_e2m1", "mx"),
                                  nm.quantize_scaled(padded, "fp4_e2m1", "mx")[:, :40])
    np.testing.assert_array_equal(nm.quantize_scaled(x.T, "fp4_e2m1", "mx", axis=0),
                                  nm.quantize_scaled(x, "fp4_e2m1", "mx").T)
    with pytest.raises(ValueError, match="axis must index an axis of x"):
        nm.quantize_scaled(x, "fp4_e2m1", "mx", axis=2)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_round_up_scale_is_the_smallest_power_of_two_that_avoids_clamping(name):
    top = nm.get_format(name).max
    rng = np.random.default_rng(6)
    amax = np.concatenate([np.exp(rng.uniform(-20, 20, 200)), top * 2.0 ** np.arange(-5, 5)])
    got = nm.mx_scale_exponent(amax, name, "ceil")
    for a, e in zip(amax, got, strict=True):  # brute force over exponents, in Python floats
        want = min(k for k in range(-140, 140) if a / 2.0**k <= top)
        assert e == want
    floor = nm.mx_scale_exponent(amax, name, "floor")
    assert np.all((floor == got) | (floor == got - 1))


def test_block_max_error_counts_clamped_blocks_by_brute_force():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 32)).astype(np.float32)
    got = nm.mx_block_max_error(x, "fp4_e2m1", "floor")
    clamped, errors, errors_clamped = 0, [], []
    for row in x.astype(float):
        amax = max(abs(v) for v in row)
        scale = 2.0 ** (math.floor(math.log2(amax)) - 2)  # OCP: emax_elem of E2M1 is 2
        q = _nearest(min(amax / scale, 6.0), "fp4_e2m1") * scale
        errors.append(abs(q - amax) / amax)
        if amax / scale > 6.0:
            clamped += 1
            errors_clamped.append(errors[-1])
    assert got["clamped"] == pytest.approx(clamped / len(x))
    assert got["error"] == pytest.approx(np.mean(errors))
    assert got["error_clamped"] == pytest.approx(np.mean(errors_clamped))
    assert nm.mx_block_max_error(x, "fp4_e2m1", "ceil")["clamped"] == 0.0


# --- rounding to p bits and limited-precision accumulation -----------------------------------------------


@given(st.floats(min_value=1.0000000031710769e-30, max_value=1.0000000150474662e+30, width=32))
def test_round_mantissa_to_7_bits_is_bf16(x):
    assert nm.round_mantissa(x, 7) == float(np.float32(x).astype(ml_dtypes.bfloat16))


def test_round_mantissa_truncates_towards_zero():
    assert nm.round_mantissa(1.0 + 0.99 * 2.0**-3, 3, mode="truncate") == 1.0
    assert nm.round_mantissa(-(1.0 + 0.99 * 2.0**-3), 3, mode="truncate") == -1.0
    with pytest.raises(ValueError, match="bits must be at most 52"):
        nm.round_mantissa(1.0, 53)


def _fp16_products(rng, n):
    """Vectors whose products are exact in float64 and whose sums stay within fp16's range."""
    a = rng.integers(1, 64, n) / 64.0
    b = rng.integers(1, 16, n) / 16.0
    return a, b


def test_accumulating_with_10_bits_is_a_sequential_float16_sum():
    rng = np.random.default_rng(5)
    a, b = _fp16_products(rng, 3000)
    s = np.float16(0)
    for p in a * b:
        s = np.float16(float(s) + p)  # the float64 sum of two fp16-range values is exact
    assert nm.dot_accumulate(a, b, 10) == float(s)


def test_accumulating_with_23_bits_is_a_sequential_float32_sum():
    rng = np.random.default_rng(6)
    a, b = rng.random(2000), rng.random(2000)
    a, b = nm.quantize(a, "fp8_e4m3").astype(np.float64), nm.quantize(b, "fp8_e4m3").astype(np.float64)
    s = np.float32(0)
    for p in a * b:
        s = np.float32(float(s) + p)
    assert nm.dot_accumulate(a, b, 23) == float(s)


def test_promotion_adds_fp16_partial_sums_into_fp32():
    rng = np.random.default_rng(8)
    a, b = _fp16_products(rng, 1000)
    acc = np.float32(0)
    for start in range(0, 1000, 128):
        part = np.float16(0)
        for p in (a * b)[start:start + 128]:
            part = np.float16(float(part) + p)
        acc = np.float32(float(acc) + float(part))
    assert nm.dot_accumulate(a, b, 10, 128) == float(acc)
    prefixes = nm.dot_accumulate(a, b, 10, 128, prefixes=True)
    assert prefixes[-1] == float(acc) and prefixes.shape == (1000,)


def test_per_row_widths_match_separate_calls():
    rng = np.random.default_rng(9)
    a, b = rng.random((3, 500)), rng.random((3, 500))
    got = nm.dot_accumulate(a, b, np.array([8, 13, 23]), np.array([0, 64, 0]))
    want = [nm.dot_accumulate(a[0], b[0], 8), nm.dot_accumulate(a[1], b[1], 13, 64),
            nm.dot_accumulate(a[2], b[2], 23)]
    np.testing.assert_array_equal(got, want)


@given(st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=300), st.integers(4, 23))
def test_accumulation_error_is_within_highams_bound(terms, bits):
    terms = np.asarray(terms)
    exact = math.fsum(terms)
    got = nm.dot_accumulate(terms, np.ones_like(terms), bits)
    assert abs(got - exact) <= float(nm.summation_bound(len(terms), bits)) * exact * (1 + 1e-12)


def test_summation_bound_by_hand():
    # K = 1025 terms at 9 bits: u = 2^-10, (K−1)u = 1, no bound; at 10 bits γ = 0.5 / 0.5 = 1
    assert nm.summation_bound(1025, 9) == np.inf
    assert nm.summation_bound(1025, 10) == pytest.approx(1.0)
    assert nm.summation_bound(1, 5) == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(bits=0), "bits must be whole numbers in 1 … 52"),
    (dict(bits=2.5), "bits must be whole numbers in 1 … 52"),
    (dict(bits=10, promote_every=-1), "promote_every must be None or whole numbers >= 0"),
    (dict(bits=10, mode="up"), "mode must be one of 'nearest', 'truncate'"),
])
def test_dot_accumulate_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nm.dot_accumulate(np.ones(4), np.ones(4), **kwargs)


def test_accumulation_errors_shape_and_the_exact_case():
    errors = nm.accumulation_errors(300, [10, 52], [None, 128], trials=4)
    assert errors.shape == (2, 2, 4, 300)
    assert errors[1].max() < 1e-7  # 52 bits is float64 itself; promotion rounds to fp32 only
    assert errors[1, 0].max() < 1e-15


# --- fates of gradient values ---------------------------------------------------------------------------


def test_fates_by_hand():
    values = [1e-9, 1e-6, 1.0, 1e5]  # fp16: below half the smallest subnormal, subnormal, normal, overflow
    assert nm.fates(values, "fp16") == {"flushed to zero": 0.25, "subnormal": 0.25, "normal": 0.25,
                                        "overflow": 0.25}
    # a loss scale of 2^10 lifts 1e-9 and 1e-6 into the subnormal and normal ranges, and 1e5 overflows still
    assert nm.fates(values, "fp16", scale=2.0**10) == {"flushed to zero": 0.0, "subnormal": 0.25,
                                                       "normal": 0.5, "overflow": 0.25}
    assert nm.fates([65519.0], "fp16")["overflow"] == 0.0  # rounds down to 65504


# --- optimizers against transcriptions of PyTorch's published algorithms --------------------------------


def _nadam_reference(theta0, grads, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    """torch.optim.NAdam's documented algorithm (weight decay 0), line by line, in float64."""
    theta, m, v, prod = np.array(theta0, float), 0.0, 0.0, 1.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, float)
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        prod_t = prod * mu_t
        m_hat = mu_next * m / (1 - prod_t * mu_next) + (1 - mu_t) * g / (1 - prod_t)
        prod = prod_t
        v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta.copy())
    return out


def test_nadam_first_steps_by_hand():
    # step 1: m = 0.1 g, sqrt(v / (1 − β2)) = |g|, so θ moves by lr (1 + 0.1 μ2 / (1 − μ1 μ2)) g / (|g| + ε)
    mu1, mu2 = 0.9 * (1 - 0.5 * 0.96**0.004), 0.9 * (1 - 0.5 * 0.96**0.008)
    assert mu1 == pytest.approx(0.450073, abs=1e-6) and mu2 == pytest.approx(0.450147, abs=1e-6)
    expected = 1.0 - 2e-3 * (1 + 0.1 * mu2 / (1 - mu1 * mu2)) * 0.5 / (0.5 + 1e-8)
    opt = nm.NAdam()
    (theta,) = opt.step([np.array([1.0], np.float32)], [np.array([0.5], np.float32)])
    assert theta[0] == pytest.approx(expected, abs=2e-7)  # float32 resolution at 1.0
    assert opt.m[0][0] == pytest.approx(0.05, rel=1e-6) and opt.v[0][0] == pytest.approx(0.00025, rel=1e-5)
    # steps 2 and 3 against the transcription
    (theta,) = opt.step([theta], [np.array([-0.25], np.float32)])
    (theta,) = opt.step([theta], [np.array([1.0], np.float32)])
    assert theta[0] == pytest.approx(_nadam_reference([1.0], [[0.5], [-0.25], [1.0]])[-1][0], abs=3e-7)


def test_nadam_defaults_are_pytorchs():
    opt = nm.NAdam()
    defaults = (np.float32(2e-3), 0.9, 0.999, 1e-8, 4e-3)  # torch.optim.NAdam's documented defaults
    assert (float(opt.lr), opt.beta1, opt.beta2, opt.eps, opt.psi) == defaults


def test_nadam_matches_the_published_rule_over_many_steps():
    rng = np.random.default_rng(10)
    theta0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) * 10.0 ** rng.uniform(-3, 1) for _ in range(40)]
    ref = _nadam_reference(theta0, grads)
    opt = nm.NAdam()
    theta = theta0.astype(np.float32)
    for g, want in zip(grads, ref, strict=True):
        (theta,) = opt.step([theta], [g.astype(np.float32)])
        np.testing.assert_allclose(theta, want, rtol=0, atol=2e-6)  # float32 rounding of |θ| ≲ 3


def _adam_reference(theta0, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    theta, m, v = np.array(theta0, float), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return theta


def test_adam_and_sgd_momentum_match_their_published_rules():
    rng = np.random.default_rng(11)
    theta0 = rng.standard_normal(30)
    grads = [rng.standard_normal(30) for _ in range(25)]
    opt = nm.Adam()
    theta = theta0.astype(np.float32)
    for g in grads:
        (theta,) = opt.step([theta], [g.astype(np.float32)])
    np.testing.assert_allclose(theta, _adam_reference(theta0, grads), atol=2e-6)
    sgd, theta, buf, ref = nm.SGDMomentum(lr=0.01, momentum=0.9), theta0.astype(np.float32), None, theta0
    for g in grads:
        (theta,) = sgd.step([theta], [g.astype(np.float32)])
        buf = g if buf is None else 0.9 * buf + g
        ref = ref - 0.01 * buf
    np.testing.assert_allclose(theta, ref, atol=2e-6)


def test_one_learning_rate_per_stacked_model_equals_separate_runs():
    rng = np.random.default_rng(12)
    w = rng.standard_normal((2, 3, 4)).astype(np.float32)
    grads = [rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(5)]
    both = nm.NAdam(lr=[1e-3, 1e-2])
    single = [nm.NAdam(lr=1e-3), nm.NAdam(lr=1e-2)]
    ws, sep = w, [w[0], w[1]]
    for g in grads:
        (ws,) = both.step([ws], [g])
        sep = [opt.step([s], [g[i]])[0] for i, (opt, s) in enumerate(zip(single, sep, strict=True))]
    np.testing.assert_array_equal(ws, np.stack(sep))


def test_state_in_bf16_holds_bf16_values():
    opt = nm.Adam(state="bf16")
    g = np.random.default_rng(13).standard_normal(100).astype(np.float32)
    opt.step([np.zeros(100, np.float32)], [g])
    for s in (opt.m[0], opt.v[0]):
        _same(s.astype(ml_dtypes.bfloat16).astype(np.float32), s)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(lr=0), "lr must be > 0"), (dict(betas=(0.9,)), "betas must be a pair"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"), (dict(eps=-1), "eps must be >= 0"),
    (dict(momentum_decay=-1), "momentum_decay must be >= 0"),
    (dict(state="fp6"), "state must be one of"), (dict(compute="fp8_e4m3"), "compute must be one of 'fp32'"),
])
def test_optimizers_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nm.NAdam(**kwargs)


# --- training under a recipe -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task():
    return nm.make_task(0, n_train=256, n_test=256)


def test_power_of_two_loss_scale_changes_nothing_in_fp32(task):
    kw = dict(steps=20, loss_divisor=2**20)
    plain = nm.train(nm.Recipe(), task, [1e-2], [0], **kw)
    scaled = nm.train(nm.Recipe(loss_scale=2.0**12), task, [1e-2], [0], **kw)
    np.testing.assert_array_equal(plain.loss, scaled.loss)
    assert plain.flushed.max() == 0


def test_stacked_learning_rates_equal_separate_runs(task):
    kw = dict(steps=15)
    both = nm.train(nm.Recipe(compute="bf16", grad="bf16"), task, [1e-3, 1e-2], [0, 1], **kw)
    alone = nm.train(nm.Recipe(compute="bf16", grad="bf16"), task, [1e-2], [1], **kw)
    # the weights match exactly; the loss curve to float32 rounding, because the evaluation does one
    # matrix product for all models at once, and its summation order depends on their number
    for p_both, p_alone in zip(both.params, alone.params, strict=True):
        np.testing.assert_array_equal(p_both[3], p_alone[0])
    np.testing.assert_allclose(both.loss[:, 1, 1], alone.loss[:, 0, 0], rtol=1e-6)


def test_the_loss_divisor_changes_nothing_in_fp32(task):
    # dividing each rank's loss by 2^20 instead of its micro-batch of 64 rescales every gradient by a
    # power of two, which the update undoes exactly: the same weights, bit for bit
    a = nm.train(nm.Recipe(), task, [1e-2], [0], steps=10)
    b = nm.train(nm.Recipe(), task, [1e-2], [0], steps=10, loss_divisor=2**20)
    for p, q in zip(a.params, b.params, strict=True):
        np.testing.assert_array_equal(p, q)


def test_fp16_without_scaling_flushes_and_dynamic_scaling_does_not(task):
    kw = dict(steps=10, loss_divisor=2**24)
    none = nm.train(nm.Recipe(compute="fp16", grad="fp16"), task, [3e-3], [0], **kw)
    dynamic = nm.train(nm.Recipe(compute="fp16", grad="fp16", loss_scale="dynamic"), task, [3e-3], [0], **kw)
    assert none.flushed[0, 0] > 0.5 and dynamic.flushed[0, 0] < 0.05


def test_dynamic_scaling_backs_off_after_an_overflow(task):
    run = nm.train(nm.Recipe(compute="fp16", grad="fp16", loss_scale="dynamic"), task, [3e-3], [0], steps=12,
                   init_scale=2.0**40, growth_interval=1000)
    assert run.skipped[0, 0] > 0
    assert run.loss_scale[0, 0] == 2.0**40 and run.loss_scale[-1, 0] < 2.0**40
    assert np.all(np.diff(run.loss_scale[:, 0]) <= 0)


def test_bf16_weights_hold_bf16_values(task):
    run = nm.train(nm.Recipe(compute="bf16", grad="bf16", weights="bf16"), task, [1e-3], [0], steps=5)
    for p in run.params:
        _same(p.astype(ml_dtypes.bfloat16).astype(np.float32), p)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(compute="fp6"), "compute must be one of"), (dict(grad="int8"), "grad must be one of"),
    (dict(loss_scale="auto"), "loss_scale must be one of 'dynamic'"),
    (dict(loss_scale=-2.0), "loss_scale must be > 0"),
    (dict(rounding="stochastic"), "rounding 'stochastic' or 'kahan' needs unscaled low-precision weights"),
    (dict(optimizer="lamb"), "optimizer must be one of 'adam', 'nadam', 'sgdm'"),
])
def test_recipes_reject_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nm.Recipe(**kwargs)


def test_clipping_matches_torch_clip_grad_norm():
    import torch

    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(shape).astype(np.float32) for shape in ((3, 4, 5), (3, 5))]
    sizes = np.float32([0.01, 1.0, 30.0])  # three models' norms: about 0.05, 5 and 150
    grads = [g * sizes.reshape((3,) + (1,) * (g.ndim - 1)) for g in grads]
    ours, cut = nm.clip_by_norm(grads, 1.0)
    for k in range(3):
        theirs = [torch.from_numpy(g[k].copy()) for g in grads]
        params = [torch.zeros_like(t, requires_grad=True) for t in theirs]
        for p, t in zip(params, theirs, strict=True):
            p.grad = t
        torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        for o, p in zip(ours, params, strict=True):
            np.testing.assert_allclose(o[k], p.grad.numpy(), rtol=1e-6)
    assert cut.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        nm.clip_by_norm(grads, 0.0)


def test_clipping_that_never_bites_changes_nothing_and_one_that_always_does_counts_every_step(task):
    plain = nm.train(nm.Recipe(), task, [1e-2], [0], steps=10)
    loose = nm.train(nm.Recipe(), task, [1e-2], [0], steps=10, clip_norm=1e6)
    tight = nm.train(nm.Recipe(), task, [1e-2], [0], steps=10, clip_norm=1e-3)
    for p, q in zip(plain.params, loose.params, strict=True):
        np.testing.assert_array_equal(p, q)
    assert plain.clipped[0, 0] == loose.clipped[0, 0] == 0 and tight.clipped[0, 0] == 10


def test_train_rejects_bad_arguments(task):
    with pytest.raises(ValueError, match="lrs must be > 0"):
        nm.train(nm.Recipe(), task, [0.0], [0])
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        nm.train(nm.Recipe(), task, [1e-3], [])
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
        nm.train(nm.Recipe(), task, [1e-3], [0], steps=0)


def test_task_is_seeded_and_balanced_enough():
    a, b = nm.make_task(3, n_train=500, n_test=100), nm.make_task(3, n_train=500, n_test=100)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.classes == 4 and np.bincount(a.y_train).min() > 50


# --- block accumulation, delayed scaling, schedules, serving ------------------------------------------


def _block_dot_reference(a, b, bits: int, block: int) -> float:
    """The block accumulator in exact rational arithmetic: align to the largest exponent among the
    running sum and the block's products, truncate each to ``bits`` fraction bits below it, add,
    truncate the sum to ``bits`` fraction bits."""
    from fractions import Fraction

    def trunc_to(v: Fraction, quantum: Fraction) -> Fraction:
        return Fraction(math.trunc(v / quantum)) * quantum

    def lead(v: Fraction) -> int:  # e with 2^e <= |v| < 2^(e+1)
        e = 0
        v = abs(v)
        while v >= 2:
            v, e = v / 2, e + 1
        while v < 1:
            v, e = v * 2, e - 1
        return e

    acc = Fraction(0)
    prods = [Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)]
    for i in range(0, len(prods), block):
        terms = [acc, *prods[i:i + block]]
        big = max(abs(t) for t in terms)
        if big == 0:
            continue
        quantum = Fraction(2) ** (lead(big) - bits)
        total = sum(trunc_to(t, quantum) for t in terms)
        acc = trunc_to(total, Fraction(2) ** (lead(total) - bits)) if total else Fraction(0)
    return float(acc)


@pytest.mark.parametrize(("bits", "block"), [(5, 4), (13, 16), (8, 1)])
def test_block_dot_matches_exact_rational_arithmetic(bits, block):
    rng = np.random.default_rng(8)
    a = nm.quantize(rng.standard_normal((6, 48)), "fp8_e4m3")
    b = nm.quantize(rng.standard_normal((6, 48)), "fp8_e4m3")
    got = nm.block_dot(a, b, bits, block)
    want = [_block_dot_reference(x, y, bits, block) for x, y in zip(a, b, strict=True)]
    np.testing.assert_array_equal(got, np.float32(want))


def test_block_dot_is_exact_for_small_integers_and_promotion_restarts_the_sum():
    a = np.arange(1, 65, dtype=float)
    assert nm.block_dot(a, np.ones(64), 20, 16) == a.sum()
    # 2 fraction bits: 1 + 1 + … truncates once the sum passes 8; promotion every 16 keeps each part small
    ones = np.ones(64)
    assert nm.block_dot(ones, ones, 2, 1) < 64
    assert nm.block_dot(ones, ones, 2, 1, promote_every=4) == 64
    with pytest.raises(ValueError, match="promote_every must be None or a multiple of block = 16"):
        nm.block_dot(ones, ones, 10, 16, promote_every=24)


def test_block_accumulation_errors_agree_with_block_dot():
    errors = nm.block_accumulation_errors(64, 13, 16, trials=3, inputs="gaussian")
    assert errors.shape == (3, 4)
    rng = np.random.default_rng([0, 4])  # the generator accumulation errors draw from
    a = nm.quantize(rng.standard_normal((3, 64)), "fp8_e4m3").astype(float)
    b = nm.quantize(rng.standard_normal((3, 64)), "fp8_e4m3").astype(float)
    exact = (a * b).sum(axis=1)
    np.testing.assert_allclose(errors[:, -1], np.abs(nm.block_dot(a, b, 13, 16) - exact) / np.abs(exact))


def test_delayed_scaling_uses_the_previous_steps_amax():
    recipe = nm.Recipe(compute="fp8_e4m3", scaling="delayed", amax_history=2)
    cast = nm._Caster(recipe, 1)
    first = np.array([[1000.0, 0.3]], np.float32)
    second = np.array([[10.0, 0.3]], np.float32)
    third = np.array([[10.0, 0.3]], np.float32)
    # step 1: no history, scale 1: 1000 saturates to E4M3's 448
    np.testing.assert_array_equal(cast(first, "fp8_e4m3", "x", -1),
                                  nm.quantize(first, "fp8_e4m3", saturate=True))
    for t in (second, third):  # steps 2 and 3: the scale comes from the amax 1000 of step 1
        cast.new_step()
        scale = np.float32(448.0 / 1000.0)
        np.testing.assert_array_equal(cast(t, "fp8_e4m3", "x", -1),
                                      nm.quantize(t * scale, "fp8_e4m3", saturate=True) / scale)
    cast.new_step()  # step 4: the history of two steps has forgotten the 1000
    scale = np.float32(448.0 / 10.0)
    np.testing.assert_array_equal(cast(third, "fp8_e4m3", "x", -1),
                                  nm.quantize(third * scale, "fp8_e4m3", saturate=True) / scale)


def test_learning_rate_schedule_by_hand():
    assert nm.lr_factor(0, 100) == 1.0
    assert nm.lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert nm.lr_factor(0, 100, "cosine") == 1.0
    assert nm.lr_factor(4, 100, "constant", warmup=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule must be one of 'constant', 'cosine'"):
        nm.lr_factor(0, 10, "step")


def test_serving_an_fp32_recipe_is_plain_accuracy(task):
    run = nm.train(nm.Recipe(), task, [1e-2], [0, 1], steps=10)
    np.testing.assert_array_equal(nm.served_accuracy(run.params, task.x_test, task.y_test, nm.Recipe()),
                                  nm.accuracy(run.params, task.x_test, task.y_test))


def test_a_spike_shows_in_delayed_but_not_current_scaling_error(task):
    kw = dict(steps=12, spike=(6, 2.0**8))
    fp8 = dict(compute="fp8_e4m3", grad="fp8_e5m2")
    current = nm.train(nm.Recipe(**fp8, scaling="tensor"), task, [3e-3], [0], **kw)
    delayed = nm.train(nm.Recipe(**fp8, scaling="delayed"), task, [3e-3], [0], **kw)
    # E5M2 keeps about 2 fraction bits: a current-scaled cast errs by at most about 2^-3 per value
    assert current.error_trace[6, 0] < 0.15
    assert delayed.error_trace[6, 0] > 0.5  # the spike saturates against last step's scale


def test_wgrad_defaults_follow_the_gradient_format():
    assert nm.Recipe(grad="fp16").wgrad_format == "fp16"
    assert nm.Recipe(grad="fp8_e5m2").wgrad_format == "bf16"
    assert nm.Recipe(grad="fp8_e5m2", wgrad="fp32").wgrad_format == "fp32"
    with pytest.raises(ValueError, match="compute 'int8' needs scaling"):
        nm.Recipe(compute="int8")


# --- reading a learning-rate optimum out of paired runs (chipbook.tuning) ---------------------------


def test_lr_optimum_finds_the_vertex_of_an_exact_parabola():
    from chipbook import tuning
    lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2])
    centres = np.array([2e-3, 5e-3])  # one per seed: loss = (log10 lr − log10 centre)² + 0.5
    loss = (np.log10(lrs)[:, None] - np.log10(centres)[None, :]) ** 2 + 0.5
    assert tuning.lr_optimum(lrs, loss) == pytest.approx(centres, rel=1e-9)
    assert np.isnan(tuning.lr_optimum(lrs[:3], -loss[:3])).all()  # opens downward: no minimum
    with pytest.raises(ValueError, match="loss must have shape"):
        tuning.lr_optimum(lrs[:2], loss[:2])


def test_paired_difference_and_ratio_by_hand():
    from chipbook import tuning
    mean, se = tuning.paired_difference([1.0, 2.0, 4.0], [0.5, 1.0, 2.0])  # differences 0.5, 1, 2
    assert mean == pytest.approx(3.5 / 3)
    assert se == pytest.approx(np.sqrt(((0.5 - 7 / 6) ** 2 + (1 - 7 / 6) ** 2 + (2 - 7 / 6) ** 2) / 2 / 3))
    ratio, rel_se = tuning.paired_ratio([2.0, 8.0], [1.0, 2.0])  # ratios 2 and 4: geometric mean √8
    assert ratio == pytest.approx(np.sqrt(8.0))
    assert rel_se == pytest.approx(np.log(2.0) / 2)  # |log 4 − log 2| / 2 = sd / √2 with sd = log2/√2
    with pytest.raises(ValueError, match="paired vectors"):
        tuning.paired_difference([1.0, 2.0], [1.0])


# --- few random bits, fused or separate rounding, errors relative to Σ|a_i b_i| ------------------------


def test_stochastic_rounding_with_few_random_bits_rounds_up_at_the_truncated_probability():
    """With r random bits a value p of a gap above the lower neighbour rounds up with probability
    floor(p·2^r)/2^r: counted over many draws."""
    gap = float(nm.spacing(1.0, "bf16"))
    rng = np.random.default_rng(0)
    for p, r, expected in [(0.3, 2, 0.25), (0.3, 4, 4 / 16), (0.2, 2, 0.0), (0.2, 8, 51 / 256)]:
        x = np.full(200_000, 1.0 + p * gap, dtype=np.float32)
        up = (nm.quantize_stochastic(x, "bf16", rng, random_bits=r) > 1.0).mean()
        assert up == pytest.approx(expected, abs=0.004), (p, r)
    x = np.full(200_000, 1.0 + 0.3 * gap, dtype=np.float32)
    assert (nm.quantize_stochastic(x, "bf16", rng) > 1.0).mean() == pytest.approx(0.3, abs=0.004)
    with pytest.raises(ValueError, match="random_bits"):
        nm.quantize_stochastic(x, "bf16", rng, random_bits=0)


def test_separate_rounding_is_fused_accumulation_of_rounded_products():
    """fused=False equals rounding each product first (by round_mantissa) and accumulating those
    exactly-representable products fused; FP8 products (at most 8 significant bits) are unaffected
    at 13 bits, bf16 products are not."""
    rng = np.random.default_rng(1)
    a, b = (nm.quantize(rng.standard_normal((16, 256)), "bf16") for _ in range(2))
    separate = nm.dot_accumulate(a, b, 13, fused=False)
    by_hand = nm.dot_accumulate(nm.round_mantissa(a.astype(np.float64) * b, 13), np.ones(256), 13)
    np.testing.assert_array_equal(separate, by_hand)
    assert np.any(separate != nm.dot_accumulate(a, b, 13))
    a8, b8 = nm.quantize(rng.random((4, 256)), "fp8_e4m3"), nm.quantize(rng.random((4, 256)), "fp8_e4m3")
    np.testing.assert_array_equal(nm.dot_accumulate(a8, b8, 13, fused=False), nm.dot_accumulate(a8, b8, 13))
    with pytest.raises(ValueError, match="fused"):
        nm.dot_accumulate(a, b, 13, fused=1)


def test_errors_relative_to_the_sum_of_magnitudes():
    """For positive products Σ|a_i b_i| is the sum itself; for Gaussian ones it is larger, so the
    error relative to it is smaller, by exactly |s| / Σ|a_i b_i|."""
    uniform = nm.accumulation_errors(64, [10], [None], trials=4)
    again = nm.accumulation_errors(64, [10], [None], trials=4, normalise="abs")
    np.testing.assert_array_equal(again, uniform)
    rel = nm.accumulation_errors(64, [10], [None], trials=4, inputs="gaussian")
    absn = nm.accumulation_errors(64, [10], [None], trials=4, inputs="gaussian", normalise="abs")
    a, b = nm._fp8_vectors((4, 64), "gaussian", np.random.default_rng([0, 4]))
    ratio = np.abs(np.cumsum(a * b, axis=-1)) / np.cumsum(np.abs(a * b), axis=-1)
    np.testing.assert_allclose(absn[0, 0], rel[0, 0] * ratio, rtol=1e-12)
    blocks = nm.block_accumulation_errors(64, 10, 16, inputs="gaussian", trials=4, normalise="abs")
    blocks_rel = nm.block_accumulation_errors(64, 10, 16, inputs="gaussian", trials=4)
    np.testing.assert_allclose(blocks, blocks_rel * ratio[:, 15::16], rtol=1e-12)
    with pytest.raises(ValueError, match="normalise"):
        nm.accumulation_errors(64, [10], [None], normalise="max")
