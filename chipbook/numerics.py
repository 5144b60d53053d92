"""Low-precision number formats, rounding, accumulation and optimizers (chapter "Low-precision
training").

Sources:

* Formats: IEEE 754 binary32/binary16; bfloat16 [kalamkar2019bfloat16]; TF32 (binary32's 8 exponent
  bits with 10 fraction bits); FP8 E4M3 and E5M2 [micikevicius2022fp8]; FP4 E2M1 and the MX block
  formats [ocp2023mx, rouhani2023microscaling]. Casts use ml_dtypes where it has the format.
* Mixed precision, loss scaling and fp32 master weights [micikevicius2018mixed]; stochastic rounding
  [gupta2015deep]; Kahan-compensated weight updates [kahan1965pracniques, zamirai2020revisiting].
* Limited-precision accumulation and its promotion to fp32 every N_C products
  [deepseekai2024deepseekv3, section 3.3.2]; the error bound of recursive summation [higham2002accuracy];
  block fused multiply-add with alignment truncation, as measured on tensor cores
  [fasi2021numerical, blanchard2020mixed].
* Per-tensor scaling from the current amax or from an amax history (Transformer Engine's delayed
  scaling) [nvidia2024te]; the MX scale rounded up instead of the OCP floor rule [mishra2025recipes];
  the cosine learning-rate schedule [loshchilov2017sgdr].
* Optimizers as in PyTorch's ``torch.optim`` (Adam [kingma2015adam], NAdam with momentum decay
  [dozat2016incorporating, pytorch2024nadam], SGD with momentum), in the same float32 operation order.

Every value is held in a float32 (or float64) array; "a value in format F" means a float32 that F can
represent exactly. Inputs of ``quantize`` are first rounded to float32, as hardware receives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike

from chipbook import _checks


@dataclass(frozen=True)
class Format:
    """A number format: its bits, its largest finite value, its smallest normal and subnormal
    magnitudes, and what a round-to-nearest cast does with a value beyond ``max``: ``"inf"``
    (IEEE-style overflow to ±inf), ``"nan"`` (FP8 E4M3 "fn" has no infinity) or ``"saturate"``
    (FP4 E2M1 and int8 have neither, so a cast clamps to ±max)."""

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float
    min_normal: float
    min_subnormal: float
    overflow: str
    dtype: object = field(default=None, repr=False)

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal value."""
        return int(np.log2(self.min_normal))

    @property
    def emax(self) -> int:
        """Exponent of the largest normal value (the MX spec's emax_elem)."""
        return int(np.floor(np.log2(self.max)))

    @property
    def epsilon(self) -> float:
        """Gap between 1 and the next larger value (the relative precision of a normal value is half
        this, the unit roundoff)."""
        return 2.0 ** -self.mantissa_bits


def _fmt(name: str, bits: int, e: int, m: int, overflow: str, dtype: object,
         top: float | None = None) -> Format:
    bias = 2 ** (e - 1) - 1
    emin = 1 - bias
    largest = top if top is not None else (2 - 2.0**-m) * 2.0**bias  # IEEE-style: emax = bias
    return Format(name, bits, e, m, largest, 2.0**emin, 2.0 ** (emin - m), overflow, dtype)


FORMATS: dict[str, Format] = {
    "fp32": _fmt("fp32", 32, 8, 23, "inf", np.float32),
    "tf32": _fmt("tf32", 19, 8, 10, "inf", None),
    "bf16": _fmt("bf16", 16, 8, 7, "inf", ml_dtypes.bfloat16),
    "fp16": _fmt("fp16", 16, 5, 10, "inf", np.float16),  # cast by _round_float32; tested against numpy
    # E4M3 "fn": the all-ones exponent holds numbers, only S.1111.111 is NaN, so the top is 1.75 · 2^8.
    "fp8_e4m3": _fmt("fp8_e4m3", 8, 4, 3, "nan", ml_dtypes.float8_e4m3fn, top=448.0),
    "fp8_e5m2": _fmt("fp8_e5m2", 8, 5, 2, "inf", ml_dtypes.float8_e5m2),
    # E2M1 has no infinity or NaN: every exponent holds numbers, the top is 1.5 · 2^2.
    "fp4_e2m1": _fmt("fp4_e2m1", 4, 2, 1, "saturate", ml_dtypes.float4_e2m1fn, top=6.0),
    # Symmetric int8: the integers -127 … 127 (a scale maps them to real values).
    "int8": Format("int8", 8, 0, 7, 127.0, 1.0, 1.0, "saturate", np.int8),
}
_ML_DTYPES = {np.dtype(f.dtype) for f in FORMATS.values()}
FLOAT_FORMATS = tuple(n for n in FORMATS if n != "int8")
MX_FORMATS = ("fp8_e4m3", "fp8_e5m2", "fp4_e2m1")
SCALINGS = ("none", "tensor", "channel", "mx")
MX_BLOCK = 32  # OCP MX v1.0: 32 elements share one E8M0 (power-of-two) scale
E8M0_RANGE = (-127, 127)  # exponents an E8M0 scale can hold (0xFF is NaN)


def get_format(fmt: str) -> Format:
    """The :class:`Format` named ``fmt``; ValueError listing the known names otherwise."""
    return FORMATS[_checks.choice("fmt", fmt, FORMATS)]


def _as_float32(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" and arr.dtype not in _ML_DTYPES:
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def _round_float32(x: np.ndarray, f: Format) -> np.ndarray:
    """Round float32 values to format ``f`` (``f.mantissa_bits`` fraction bits, exponents down to
    ``f.emin``, values past ``f.max`` to ±inf), to nearest with ties to even, for the formats that
    ml_dtypes lacks (tf32, and fp16, which numpy casts slowly).

    Normal range: on the float32 bit pattern, add half the dropped range minus one plus the lowest
    kept bit, then clear the dropped bits; a carry out of the fraction moves into the exponent, which
    is exactly rounding up to the next binade. Subnormal range (|x| < 2^emin): scale by a power of two
    so the spacing 2^(emin − m) becomes 1, round to the nearest integer (ties to even), scale back;
    both scalings are exact. NaN and ±inf pass unchanged.
    """
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    drop = 23 - f.mantissa_bits
    bits = flat.view(np.uint32)
    keep = (bits >> np.uint32(drop)) & np.uint32(1)
    half = np.uint32((1 << (drop - 1)) - 1)
    normal = ((bits + half + keep) & np.uint32(0xFFFFFFFF ^ ((1 << drop) - 1))).view(np.float32)
    step = np.float32(2.0 ** (f.emin - f.mantissa_bits))
    with np.errstate(invalid="ignore", over="ignore"):  # huge or infinite values; replaced below
        sub = np.rint(flat / step) * step
    out = np.where(np.abs(flat) < np.float32(f.min_normal), sub, normal)
    out = np.where(np.abs(out) > np.float32(f.max), np.copysign(np.float32(np.inf), flat), out)
    return np.where(np.isfinite(flat), out, flat).reshape(np.shape(x))


def quantize(x: ArrayLike, fmt: str, *, saturate: bool = False) -> np.ndarray:
    """Round ``x`` to the nearest value of format ``fmt`` (ties to even) and return it as float32.

    Overflow, with ``saturate=False``: fp32, tf32, bf16, fp16 and fp8_e5m2 round values beyond the
    format's range to ±inf; fp8_e4m3 (the "fn" variant, max 448) to NaN, as ml_dtypes casts do;
    fp4_e2m1 and int8 have no inf or NaN and clamp to ±max. With ``saturate=True`` every format
    clamps to ±max first (the OCP FP8 spec allows either behaviour; training recipes saturate).
    NaN stays NaN. Values are rounded to float32 first. int8 is the integer grid -127 … 127.
    """
    f = get_format(fmt)
    if not isinstance(saturate, bool):
        raise ValueError(f"saturate must be True or False, got {saturate!r}")
    x32 = _as_float32("x", x)
    if saturate or f.overflow == "saturate":
        x32 = np.clip(x32, np.float32(-f.max), np.float32(f.max))  # NaN passes through clip
    if f.name == "fp32":
        return x32.copy()
    if f.name in ("tf32", "fp16"):
        return _round_float32(x32, f)
    if f.name == "int8":
        return np.rint(x32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is the format's behaviour, stated above
        out = x32.astype(f.dtype).astype(np.float32)
    if f.overflow == "saturate":
        out = np.where(np.isnan(x32), np.float32(np.nan), out)  # E2M1 has no NaN; keep it visible
    return out


def spacing(x: ArrayLike, fmt: str) -> np.ndarray:
    """Gap between the two values of ``fmt`` that enclose ``|x|`` (the unit in the last place at
    |x|), from the format's parameters: 2^(max(e, emin) − mantissa_bits) for |x| in [2^e, 2^(e+1))."""
    f = get_format(fmt)
    a = np.abs(np.asarray(x, dtype=np.float64))
    if f.name == "int8":
        return np.ones_like(a)
    _, e = np.frexp(a)
    return np.ldexp(1.0, np.maximum(e - 1, f.emin) - f.mantissa_bits)


def quantize_stochastic(x: ArrayLike, fmt: str, rng: np.random.Generator,
                        random_bits: int | None = None) -> np.ndarray:
    """Stochastic rounding [gupta2015deep]: round ``x`` down or up to one of the two enclosing values
    of ``fmt`` with probability proportional to its distance from the other, so that the expected
    result is ``x``. Values beyond the range saturate to ±max; NaN and ±inf pass as they are.

    With ``random_bits = r``, as hardware does it with an r-bit random number: an r-bit uniform
    integer R is added to the first r bits dropped below the kept ones and the sum is truncated, so
    the value rounds up with probability floor(p·2^r)/2^r instead of p (p: the distance to the lower
    value in units of the gap). The expected result then falls short of ``x`` by up to 2^-r of a gap,
    and a remainder below 2^-r of a gap never rounds up [croci2022stochastic, arar2026limited]."""
    f = get_format(fmt)
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy Generator (np.random.default_rng(seed))")
    if random_bits is not None:
        random_bits = _checks.count("random_bits", random_bits)
        if random_bits > 32:
            raise ValueError(f"random_bits must be None or 1 … 32, got {random_bits}")
    x64 = _as_float32("x", x).astype(np.float64)
    a = np.abs(x64)
    step = spacing(a, fmt)
    with np.errstate(invalid="ignore"):
        down = np.floor(a / step) * step
        up_prob = (a - down) / step
        if random_bits is None:
            up = rng.random(a.shape) < up_prob
        else:
            levels = 2**random_bits
            up = rng.integers(0, levels, size=a.shape) < np.floor(up_prob * levels)
        rounded = np.where(up, down + step, down)
    rounded = np.minimum(rounded, f.max)
    out = np.where(np.isfinite(x64), np.copysign(rounded, x64), x64)
    return out.astype(np.float32)


MX_RULES = ("floor", "ceil")


def mx_scale_exponent(amax: ArrayLike, fmt: str, rule: str = "floor") -> np.ndarray:
    """The E8M0 exponent of an MX block's shared scale X = 2^e from the block's largest magnitude
    ``amax``. ``rule="floor"``: e = floor(log2 amax) − emax_elem, the OCP MX v1.0 rule
    [ocp2023mx, rouhani2023microscaling, Algorithm 1]; it maps amax into [2^emax, 2^(emax+1)), so a
    block whose amax/X lands above the element format's largest value is clamped. ``rule="ceil"``:
    e = ceil(log2(amax / max_elem)), the scale rounded up ("round to infinity") as Mishra et al.
    recommend for MXFP8 pre-training [mishra2025recipes], so that amax/X never exceeds max_elem.
    Exponents are clipped to E8M0's range; a block of zeros gets X = 1."""
    f = get_format(_checks.choice("fmt", fmt, MX_FORMATS))
    _checks.choice("rule", rule, MX_RULES)
    amax = np.asarray(amax, dtype=np.float64)
    safe = np.where(amax > 0, amax, 1.0)
    if rule == "floor":
        e = np.floor(np.log2(safe)) - f.emax
    else:
        m, ex = np.frexp(safe / f.max)  # exact: ceil(log2 y) = ex − 1 when y is a power of two, else ex
        e = np.where(m == 0.5, ex - 1, ex)
    e = np.where(amax > 0, e, 0)
    return np.clip(e, *E8M0_RANGE).astype(np.int64)


def quantize_scaled(x: ArrayLike, fmt: str, scaling: str = "tensor", *, batch_dims: int = 0,
                    block: int = MX_BLOCK, axis: int = -1, rule: str = "floor") -> np.ndarray:
    """Quantize ``x`` to ``fmt`` through a scale, and return the dequantized values (float32).

    ``scaling``: ``"none"`` (a plain saturating cast); ``"tensor"``: one float32 scale per tensor,
    max/amax, so the largest magnitude lands on the format's largest value (FP8 recipes with
    per-tensor scaling, [micikevicius2022fp8]); ``"channel"``: one such scale per slice along the
    last axis (int8 weights, one per output column when the last axis holds outputs); ``"mx"``: OCP
    MX blocks of ``block`` consecutive elements along ``axis`` (for a matrix product, its reduction
    axis), each with the power-of-two scale of :func:`mx_scale_exponent` under ``rule``, elements
    quantized as V/X with saturation [ocp2023mx, rouhani2023microscaling, Algorithm 1]. An axis
    whose length is not a multiple of ``block`` ends in a shorter block, as zero padding would give.
    The first ``batch_dims`` axes index independent tensors (stacked models), each scaled on its own.
    """
    f = get_format(fmt)
    _checks.choice("scaling", scaling, SCALINGS)
    batch_dims = _checks.count("batch_dims", batch_dims, minimum=0)
    x32 = _as_float32("x", x)
    if batch_dims > x32.ndim:
        raise ValueError(f"batch_dims must be at most x.ndim = {x32.ndim}, got {batch_dims}")
    if scaling == "none":
        return quantize(x32, fmt, saturate=True)
    if scaling == "mx":
        block = _checks.count("block", block)
        _checks.choice("fmt", fmt, MX_FORMATS)
        _checks.choice("rule", rule, MX_RULES)
        if x32.ndim == 0 or not -x32.ndim <= axis < x32.ndim:
            raise ValueError(f"axis must index an axis of x (shape {x32.shape}), got {axis}")
        moved = np.moveaxis(x32, axis, -1)
        n = moved.shape[-1]
        pad = -n % block
        if pad:
            moved = np.concatenate([moved, np.zeros((*moved.shape[:-1], pad), np.float32)], axis=-1)
        blocks = moved.reshape(*moved.shape[:-1], (n + pad) // block, block)
        amax = np.max(np.abs(blocks), axis=-1, keepdims=True)
        scale = np.ldexp(1.0, mx_scale_exponent(amax, fmt, rule)).astype(np.float32)
        out = (quantize(blocks / scale, fmt, saturate=True) * scale).reshape(moved.shape)[..., :n]
        return np.moveaxis(out, -1, axis)
    if scaling == "tensor":
        axes = tuple(range(batch_dims, x32.ndim))
    else:
        if x32.ndim - batch_dims < 1:
            raise ValueError("channel scaling needs at least one axis beyond the batch axes")
        axes = tuple(range(batch_dims, x32.ndim - 1))
    amax = np.max(np.abs(x32), axis=axes, keepdims=True) if axes else np.abs(x32)
    scale = np.where(amax > 0, np.float32(f.max) / np.where(amax > 0, amax, 1), 1).astype(np.float32)
    return quantize(x32 * scale, fmt, saturate=True) / scale


def mx_block_max_error(x: ArrayLike, fmt: str, rule: str = "floor",
                       block: int = MX_BLOCK) -> dict[str, float]:
    """What MX quantization does to the largest element of each block of ``block`` consecutive
    values along the last axis of ``x``: the share of blocks whose largest magnitude, divided by
    the block's scale, lies above the element format's largest value (so the cast clamps it), the
    mean relative error of that element over those blocks, and over all blocks."""
    x32 = _as_float32("x", x)
    block = _checks.count("block", block)
    if x32.ndim == 0 or x32.shape[-1] % block:
        raise ValueError(f"the last axis of x must be a multiple of block = {block}, got {np.shape(x32)}")
    f = get_format(_checks.choice("fmt", fmt, MX_FORMATS))
    blocks = x32.reshape(-1, block)
    blocks = blocks[np.any(blocks != 0, axis=1)]
    if len(blocks) == 0:
        raise ValueError("x must hold at least one block with a non-zero value")
    amax = np.max(np.abs(blocks), axis=1).astype(np.float64)
    scale = np.ldexp(1.0, mx_scale_exponent(amax, fmt, rule))
    clamped = amax / scale > f.max
    q = np.abs(quantize(amax / scale, fmt, saturate=True)).astype(np.float64) * scale
    err = np.abs(q - amax) / amax
    return {"clamped": float(clamped.mean()), "error_clamped": float(err[clamped].mean()) if clamped.any()
            else 0.0, "error": float(err.mean())}


def round_mantissa(x: ArrayLike, bits: int, mode: str = "nearest") -> np.ndarray:
    """Round float64 values to ``bits`` fraction bits (``bits`` + 1 significant bits) with an
    unbounded exponent: to nearest with ties to even, or towards zero (``mode="truncate"``)."""
    bits = _checks.count("bits", bits)
    if bits > 52:
        raise ValueError(f"bits must be at most 52 (float64), got {bits}")
    _checks.choice("mode", mode, ("nearest", "truncate"))
    m, e = np.frexp(np.asarray(x, dtype=np.float64))
    scaled = np.ldexp(m, bits + 1)
    return np.ldexp(np.rint(scaled) if mode == "nearest" else np.trunc(scaled), e - bits - 1)


def dot_accumulate(a: ArrayLike, b: ArrayLike, bits: ArrayLike, promote_every: ArrayLike | None = None,
                   mode: str = "nearest", *, prefixes: bool = False, fused: bool = True) -> np.ndarray:
    """Dot products along the last axis with a running sum rounded to ``bits`` fraction bits after
    every addition. ``fused=True``: each product enters the addition exact and the sum is rounded
    once, a fused multiply-add (the products of FP8 or BF16 inputs are exact in fp32);
    ``fused=False``: each product is first rounded to ``bits`` fraction bits (same ``mode``), a
    multiply and an add rounded separately [higham2002accuracy, section 2.6]. A product of FP8 inputs
    has at most 8 significant bits, so with 7 or more fraction bits the two agree exactly.

    With ``promote_every = N`` the limited-precision partial sum is added to an fp32 accumulator and
    restarted every N products, as DeepSeek-V3 does on H800 tensor cores with N = 128
    [deepseekai2024deepseekv3]. ``bits`` and ``promote_every`` may be arrays broadcast against the
    leading axes of the products (one accumulator per row); ``promote_every`` of 0 or None means never.
    With ``prefixes=True`` the result has the last axis kept: entry k is the dot product of the first
    k + 1 elements, as the accumulator holds it then.
    """
    prods = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    if prods.ndim == 0 or prods.shape[-1] < 1:
        raise ValueError("a and b must have at least one element along their last axis")
    _checks.choice("mode", mode, ("nearest", "truncate"))
    if not isinstance(fused, bool):
        raise ValueError(f"fused must be True or False, got {fused!r}")
    lead = prods.shape[:-1]
    bits_arr = np.broadcast_to(np.asarray(bits), lead)
    if bits_arr.dtype.kind not in "iu" or np.any(bits_arr < 1) or np.any(bits_arr > 52):
        raise ValueError(f"bits must be whole numbers in 1 … 52, got {bits!r}")
    if not fused:
        m, e = np.frexp(prods)
        shift = bits_arr.astype(np.int64)[..., None] + 1
        prods = np.ldexp((np.rint if mode == "nearest" else np.trunc)(np.ldexp(m, shift)), e - shift)
    every = np.broadcast_to(np.asarray(0 if promote_every is None else promote_every), lead)
    if every.dtype.kind not in "iu" or np.any(every < 0):
        raise ValueError(f"promote_every must be None or whole numbers >= 0, got {promote_every!r}")
    every = every.astype(np.int64)
    shift = bits_arr.astype(np.int64) + 1
    rounder = np.rint if mode == "nearest" else np.trunc
    acc = np.zeros(lead, dtype=np.float32)
    partial = np.zeros(lead)
    out = np.empty(prods.shape) if prefixes else None
    for k in range(prods.shape[-1]):
        m, e = np.frexp(partial + prods[..., k])
        partial = np.ldexp(rounder(np.ldexp(m, shift)), e - shift)
        total = acc + partial  # float64: the promotion below rounds it to fp32
        promote = (every > 0) & ((k + 1) % np.maximum(every, 1) == 0)
        acc = np.where(promote, total.astype(np.float32), acc)
        partial = np.where(promote, 0.0, partial)
        if prefixes:
            out[..., k] = np.where(every > 0, total.astype(np.float32), partial)
    if prefixes:
        return out
    return np.where(every > 0, (acc + partial).astype(np.float32), partial)


def block_dot(a: ArrayLike, b: ArrayLike, bits: int, block: int = 16, promote_every: int | None = None, *,
              prefixes: bool = False) -> np.ndarray:
    """Dot products along the last axis as a matrix unit with a block fused multiply-add computes
    them [fasi2021numerical, blanchard2020mixed]: the products are exact; every ``block`` products
    are added to the running sum in one step, in which all ``block`` + 1 terms are aligned to the
    largest of their exponents and each is truncated (towards zero) to a multiple of 2^(E − ``bits``),
    where 2^E is the leading bit of the largest term (the bits shifted out of the adder are dropped);
    the exact sum of the aligned terms is then normalised and truncated to ``bits`` fraction bits. With
    ``promote_every = N`` (a multiple of ``block``) the running sum is added to an fp32 register and
    restarted every N products, as DeepSeek-V3 does [deepseekai2024deepseekv3]. A last partial block
    is padded with zeros. With ``prefixes=True`` the last axis of the result holds the sum after
    each block (K = block, 2·block, …)."""
    bits = _checks.count("bits", bits)
    if bits > 40:
        raise ValueError(f"bits must be at most 40 (the aligned sum must stay exact in float64), got {bits}")
    block = _checks.count("block", block)
    every = 0 if promote_every is None else _checks.count("promote_every", promote_every)
    if every % block:
        raise ValueError(f"promote_every must be None or a multiple of block = {block}, "
                         f"got {promote_every!r}")
    prods = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    if prods.ndim == 0 or prods.shape[-1] < 1:
        raise ValueError("a and b must have at least one element along their last axis")
    pad = -prods.shape[-1] % block
    if pad:
        prods = np.concatenate([prods, np.zeros((*prods.shape[:-1], pad))], axis=-1)
    lead, n_blocks = prods.shape[:-1], prods.shape[-1] // block
    groups = prods.reshape(*lead, n_blocks, block)
    acc, promoted = np.zeros(lead), np.zeros(lead, np.float32)
    out = np.empty((*lead, n_blocks), np.float32) if prefixes else None
    for j in range(n_blocks):
        terms = np.concatenate([acc[..., None], groups[..., j, :]], axis=-1)
        _, e = np.frexp(np.max(np.abs(terms), axis=-1, keepdims=True))  # largest term in [2^(e-1), 2^e)
        quantum = np.ldexp(1.0, e - 1 - bits)
        acc = round_mantissa(np.sum(np.trunc(terms / quantum) * quantum, axis=-1), bits, "truncate")
        if every and (j + 1) * block % every == 0:
            promoted, acc = (promoted + acc).astype(np.float32), np.zeros(lead)
        if prefixes:
            out[..., j] = (promoted + acc).astype(np.float32)
    return out if prefixes else (promoted + acc).astype(np.float32)


def summation_bound(k, bits: int) -> np.ndarray:
    """Higham's bound on the relative error of recursive summation of k terms of one sign, each
    addition rounded to nearest with unit roundoff u = 2^-(bits+1): γ_{k−1} = (k−1)u / (1 − (k−1)u)
    [higham2002accuracy, chapter 4] (∞ where (k−1)u ≥ 1)."""
    bits = _checks.count("bits", bits)
    k = np.asarray(_checks.positive("k", k))
    nu = (k - 1) * 2.0 ** -(bits + 1)
    return np.where(nu < 1, nu / np.where(nu < 1, 1 - nu, 1), np.inf)


# --- optimizers ---------------------------------------------------------------------------------


class _Arithmetic:
    """Round each intermediate of the update to ``compute`` and store state in ``state`` (8- and
    4-bit state formats with one scale per tensor; ``batch_dims`` leading axes index independent
    tensors). The final addition to the parameters is in float32: the format the weights are kept
    in is the caller's choice (see :class:`Recipe`)."""

    def __init__(self, compute: str, state: str, batch_dims: int):
        self.compute = _checks.choice("compute", compute, ("fp32", "tf32", "bf16", "fp16"))
        self.state = _checks.choice("state", state, FLOAT_FORMATS)
        self.batch_dims = _checks.count("batch_dims", batch_dims, minimum=0)

    def r(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x if self.compute == "fp32" else quantize(x, self.compute)

    def store(self, x) -> np.ndarray:
        if FORMATS[self.state].bits <= 8:
            return quantize_scaled(x, self.state, "tensor", batch_dims=self.batch_dims)
        return quantize(x, self.state)


def _lr_for(lr: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``lr`` (a scalar, or one per leading index of the parameters) shaped to broadcast against ``p``."""
    return lr.reshape(lr.shape + (1,) * (np.ndim(p) - lr.ndim))


def _hyper(lr, betas, eps):
    lr = np.asarray(_checks.positive("lr", lr), dtype=np.float32)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        beta = _checks.non_negative(f"betas[{i}]", beta)
        if beta >= 1:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")
    return lr, float(betas[0]), float(betas[1]), _checks.non_negative("eps", eps)


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad) [kingma2015adam], in PyTorch's float32 order
    of operations, with state and intermediates optionally in a lower-precision format.

    ``lr`` may be an array over the leading axes of the parameters (one learning rate per stacked
    model).
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, state: str = "fp32",
                 compute: str = "fp32", batch_dims: int = 0):
        self.lr, self.beta1, self.beta2, self.eps = _hyper(lr, betas, eps)
        self.num = _Arithmetic(compute, state, batch_dims)
        self.t = 0
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None

    def _moments(self, grads):
        # As PyTorch: the scalars 1 − β are computed in double precision, then used as float32.
        r, b2 = self.num.r, np.float32(self.beta2)
        one_minus_b1, one_minus_b2 = np.float32(1 - self.beta1), np.float32(1 - self.beta2)
        if self.m is None:
            self.m = [np.zeros_like(g, dtype=np.float32) for g in grads]
            self.v = [np.zeros_like(g, dtype=np.float32) for g in grads]
        self.t += 1
        for i, g in enumerate(grads):
            # exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            self.m[i] = self.num.store(r(self.m[i] + r(one_minus_b1 * r(g - self.m[i]))))
            self.v[i] = self.num.store(r(r(self.v[i] * b2) + r(r(one_minus_b2 * g) * g)))

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The parameters after one step (float32; the inputs are not changed)."""
        grads = [np.asarray(g, dtype=np.float32) for g in grads]
        self._moments(grads)
        r = self.num.r
        bc1 = np.float32(1 - self.beta1**self.t)
        bc2_sqrt = np.float32(np.sqrt(1 - self.beta2**self.t))
        out = []
        for p, m, v in zip(params, self.m, self.v, strict=True):
            step_size = _lr_for(self.lr, p) / bc1
            denom = r(r(r(np.sqrt(v)) / bc2_sqrt) + np.float32(self.eps))
            out.append(np.asarray(p, np.float32) - r(step_size * r(m / denom)))
        return out


class NAdam(Adam):
    """torch.optim.NAdam with momentum decay ψ (no weight decay) [dozat2016incorporating,
    pytorch2024nadam]: μ_t = β1(1 − ½·0.96^(tψ)), and the parameter moves by
    −lr(1 − μ_t)/(1 − ∏_{i≤t} μ_i) · g/d − lr·μ_{t+1}/(1 − ∏_{i≤t+1} μ_i) · m/d with
    d = sqrt(v / (1 − β2^t)) + ε, applied as two float32 additions in that order, as PyTorch does.
    Defaults are PyTorch's: lr 2e-3, betas (0.9, 0.999), eps 1e-8, momentum_decay 4e-3.
    """

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3, *, state: str = "fp32",
                 compute: str = "fp32", batch_dims: int = 0):
        super().__init__(lr, betas, eps, state=state, compute=compute, batch_dims=batch_dims)
        self.psi = _checks.non_negative("momentum_decay", momentum_decay)
        self.mu_product = 1.0

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        grads = [np.asarray(g, dtype=np.float32) for g in grads]
        self._moments(grads)
        r, t = self.num.r, self.t
        mu = self.beta1 * (1 - 0.5 * 0.96 ** (t * self.psi))
        mu_next = self.beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.psi))
        self.mu_product *= mu
        bc2 = np.float32(1 - self.beta2**t)
        out = []
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            lr = _lr_for(self.lr, p)
            coef_g = -lr * np.float32((1 - mu) / (1 - self.mu_product))
            coef_m = -lr * np.float32(mu_next / (1 - self.mu_product * mu_next))
            denom = r(r(np.sqrt(r(v / bc2))) + np.float32(self.eps))
            p = np.asarray(p, np.float32) + r(coef_g * r(g / denom))
            out.append(p + r(coef_m * r(m / denom)))
        return out


class SGDMomentum:
    """torch.optim.SGD with momentum (no dampening, no Nesterov): b ← μb + g (b = g at the first
    step), p ← p − lr·b."""

    def __init__(self, lr=1e-2, momentum=0.9, *, state: str = "fp32", compute: str = "fp32",
                 batch_dims: int = 0):
        self.lr = np.asarray(_checks.positive("lr", lr), dtype=np.float32)
        self.momentum = np.float32(_checks.non_negative("momentum", momentum))
        self.num = _Arithmetic(compute, state, batch_dims)
        self.buf: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        r = self.num.r
        grads = [np.asarray(g, dtype=np.float32) for g in grads]
        if self.buf is None:
            self.buf = [self.num.store(g) for g in grads]
        else:
            self.buf = [self.num.store(r(r(b * self.momentum) + g))
                        for b, g in zip(self.buf, grads, strict=True)]
        return [np.asarray(p, np.float32) - r(_lr_for(self.lr, p) * b)
                for p, b in zip(params, self.buf, strict=True)]


OPTIMIZERS = {"adam": Adam, "nadam": NAdam, "sgdm": SGDMomentum}


# --- a small network trained under a numeric recipe -----------------------------------------------


@dataclass(frozen=True)
class Task:
    """A seeded synthetic classification task: Gaussian inputs labelled by a random teacher network."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def make_task(seed: int = 0, *, n_train: int = 2048, n_test: int = 2048, d_in: int = 32, classes: int = 4,
              noise: float = 0.5) -> Task:
    """Inputs x ~ N(0, I) in ``d_in`` dimensions; label = argmax of a random tanh teacher network's
    logits plus Gaussian noise of standard deviation ``noise`` (so no model reaches zero loss)."""
    seed = _checks.count("seed", seed, minimum=0)
    n_train, n_test = _checks.count("n_train", n_train), _checks.count("n_test", n_test)
    d_in, classes = _checks.count("d_in", d_in), _checks.count("classes", classes, minimum=2)
    noise = _checks.non_negative("noise", noise)
    rng = np.random.default_rng([seed, 0])
    w1 = rng.standard_normal((d_in, 16)) * np.sqrt(2.0 / d_in)
    w2 = rng.standard_normal((16, classes)) * 2.0

    def draw(n):
        x = rng.standard_normal((n, d_in)).astype(np.float32)
        logits = np.tanh(x @ w1) @ w2 + noise * rng.standard_normal((n, classes))
        return x, logits.argmax(axis=1)

    return Task(*draw(n_train), *draw(n_test))


OPTIONS = {
    "compute": ("fp32", "tf32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "int8"),
    "grad": ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2"),
    "scaling": ("none", "tensor", "delayed", "mx"),
    "mx_rule": MX_RULES,
    "wgrad": (None, "fp32", "bf16", "fp16"),
    "weights": (*FLOAT_FORMATS, "int8"),
    "rounding": ("nearest", "stochastic", "kahan"),
    "weight_scaling": ("none", "tensor", "channel"),
    "optimizer": tuple(OPTIMIZERS),
}
TE_AMAX_HISTORY = 1024  # Transformer Engine's DelayedScaling default amax_history_len [nvidia2024te]


@dataclass(frozen=True)
class Recipe:
    """How a training step's numbers are held.

    ``compute``: the format of the matrix-product inputs (weights and activations) in the forward and
    backward passes; ``grad``: the format the backward pass casts activation gradients to before they
    enter a matrix product; ``scaling``: how both are cast: ``"none"`` directly (fp16 and E5M2 overflow
    to inf, which dynamic loss scaling detects), ``"tensor"`` through one scale per tensor from its
    current largest magnitude (current scaling), ``"delayed"`` through one scale per tensor from the
    largest magnitude seen in the last ``amax_history`` steps (Transformer Engine's default
    DelayedScaling [nvidia2024te]: the first step uses a scale of 1, a value past the range saturates),
    or ``"mx"``, OCP MX blocks of 32 along each product's reduction axis with scale rule ``mx_rule``
    (int8 gets one scale per tensor); 16-bit formats are always cast directly; ``wgrad``: the format the
    weight-gradient product writes (None: the gradient format when it has 16 or more bits, else bf16, as
    FP8 GEMMs write their outputs in higher precision); ``acc_bits``: when set, every matrix product
    accumulates in blocks of ``acc_block`` products with alignment truncation to that many fraction bits
    (:func:`block_dot`), otherwise exactly, rounded once to fp32; ``loss_scale``: a static factor or
    ``"dynamic"`` (halve on overflow and skip the step, double after ``growth_interval`` good steps, as
    PyTorch's GradScaler); ``weights``: the format the optimizer's weights are kept in ("fp32" is an
    fp32 master copy), rounded after each update by ``rounding`` (nearest, stochastic, or Kahan
    compensated with a buffer in the same format), through ``weight_scaling`` for 8- and 4-bit formats;
    ``optimizer`` with its ``state`` format and ``state_compute`` arithmetic.
    """

    compute: str = "fp32"
    grad: str = "fp32"
    scaling: str = "none"
    mx_rule: str = "floor"
    amax_history: int = TE_AMAX_HISTORY
    wgrad: str | None = None
    acc_bits: int | None = None
    acc_block: int = 16
    loss_scale: float | str = 1.0
    weights: str = "fp32"
    rounding: str = "nearest"
    weight_scaling: str = "none"
    optimizer: str = "adam"
    state: str = "fp32"
    state_compute: str = "fp32"

    def __post_init__(self) -> None:
        for name, allowed in OPTIONS.items():
            _checks.choice(name, getattr(self, name), allowed)
        if isinstance(self.loss_scale, str):
            _checks.choice("loss_scale", self.loss_scale, ("dynamic",))
        else:
            _checks.positive("loss_scale", self.loss_scale)
        if self.rounding != "nearest" and (self.weights == "fp32" or self.weight_scaling != "none"):
            raise ValueError("rounding 'stochastic' or 'kahan' needs unscaled low-precision weights "
                             f"(weights other than 'fp32', weight_scaling 'none'); got {self}")
        if self.compute == "int8" and self.scaling not in ("tensor", "delayed"):
            raise ValueError(f"compute 'int8' needs scaling 'tensor' or 'delayed', got {self.scaling!r}")
        _checks.count("amax_history", self.amax_history)
        _checks.count("acc_block", self.acc_block)
        if self.acc_bits is not None and not (isinstance(self.acc_bits, int) and 1 <= self.acc_bits <= 40):
            raise ValueError(f"acc_bits must be None or a whole number in 1 … 40, got {self.acc_bits!r}")
        _checks.choice("state", self.state, FLOAT_FORMATS)
        _checks.choice("state_compute", self.state_compute, ("fp32", "tf32", "bf16", "fp16"))

    @property
    def wgrad_format(self) -> str:
        """The format the weight-gradient matrix product writes."""
        if self.wgrad is not None:
            return self.wgrad
        return self.grad if FORMATS[self.grad].bits >= 16 else "bf16"


@dataclass
class Run:
    """The outcome of :func:`train` for a grid of learning rates × seeds (axes in that order)."""

    lrs: np.ndarray
    seeds: tuple[int, ...]
    eval_steps: np.ndarray
    loss: np.ndarray            # (evals, lrs, seeds) training-set loss of the stored weights, in fp32
    test_accuracy: np.ndarray   # (lrs, seeds)
    test_loss: np.ndarray       # (lrs, seeds) fp32 cross-entropy on the held-out (test) examples
    flushed: np.ndarray         # (lrs, seeds) share of non-zero activation gradients the cast made zero
    skipped: np.ndarray         # (lrs, seeds) steps skipped for an overflow
    clipped: np.ndarray         # (lrs, seeds) steps whose gradient norm was clipped
    params: list[np.ndarray]    # final weights, leading axis = lrs × seeds
    grad_sample: np.ndarray     # magnitudes of the first model's activation gradients (unscaled, fp32)
    loss_scale: np.ndarray      # (steps, lrs × seeds) the loss scale used at each step
    flush_trace: np.ndarray     # (steps, lrs × seeds) share of activation gradients flushed, per step
    error_trace: np.ndarray     # (steps, lrs × seeds) relative error (L2) of the activation-gradient casts
    skip_trace: np.ndarray      # (steps, lrs × seeds) True where the step was skipped for an overflow


def init_params(seeds: Sequence[int], d_in: int, hidden: int, classes: int) -> list[np.ndarray]:
    """He-initialised weights and zero biases of a d_in → hidden (ReLU) → classes network, one per
    seed, stacked on a leading axis."""
    w1, w2 = [], []
    for seed in seeds:
        rng = np.random.default_rng([seed, 1])
        w1.append(rng.standard_normal((d_in, hidden)) * np.sqrt(2.0 / d_in))
        w2.append(rng.standard_normal((hidden, classes)) * np.sqrt(1.0 / hidden))
    n = len(seeds)
    return [np.asarray(w1, np.float32), np.zeros((n, hidden), np.float32),
            np.asarray(w2, np.float32), np.zeros((n, classes), np.float32)]


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A matrix product of float32 inputs, accumulated in float64 and rounded once to float32, as a
    tensor core with an fp32 output and wider internal accumulation would give. The single rounding
    also makes the result independent of the BLAS kernel's summation order, so a run gives the same
    float32 numbers on every machine."""
    return np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64)).astype(np.float32)


def _mm_narrow(a: np.ndarray, b: np.ndarray, bits: int, block: int) -> np.ndarray:
    """A stacked matrix product (models, m, k) @ (models, k, n) through :func:`block_dot`."""
    rows = np.asarray(a, np.float64)[..., :, None, :]  # (models, m, 1, k)
    cols = np.swapaxes(np.asarray(b, np.float64), -1, -2)[..., None, :, :]  # (models, 1, n, k)
    return block_dot(rows, cols, bits, block)


def logits(params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The network's logits in float32 for stacked ``params`` (leading model axis) and inputs ``x``
    (shared by every model, or one batch per model)."""
    w1, b1, w2, b2 = (np.asarray(p, np.float32) for p in params)
    if np.ndim(x) == 2:  # one matrix product for every model at once (numpy broadcasts slowly)
        m, d, hidden = w1.shape
        flat = _mm(x, w1.transpose(1, 0, 2).reshape(d, m * hidden))
        pre = flat.reshape(len(x), m, hidden).transpose(1, 0, 2)
    else:
        pre = _mm(x, w1)
    h = np.ascontiguousarray(np.maximum(pre + b1[:, None, :], 0))
    return _mm(h, w2) + b2[:, None, :]


def cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean softmax cross-entropy over the second-to-last axis of logits ``z`` (float64); a model
    whose logits overflowed gets NaN."""
    z = np.where(np.isfinite(z), z, np.nan).astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, np.broadcast_to(y, z.shape[:-1])[..., None], axis=-1)[..., 0]
    return -picked.mean(axis=-1)


def accuracy(params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of ``x`` each stacked model classifies as ``y``."""
    return (logits(params, x).argmax(axis=-1) == y).mean(axis=-1)


class _Caster:
    """Casts of one training step's tensors under a recipe's scaling, one model per leading index.
    For "delayed" scaling it keeps each named tensor's amax history across steps."""

    def __init__(self, recipe: Recipe, n: int):
        self.recipe, self.n = recipe, n
        self.history: dict[str, np.ndarray] = {}
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def new_step(self) -> None:
        self.cache = {}

    def __call__(self, t: np.ndarray, fmt: str, name: str, axis: int) -> np.ndarray:
        """``t`` cast to ``fmt``; ``axis`` is the reduction axis of the product it enters (MX)."""
        scaling = self.recipe.scaling
        if fmt == "fp32":
            return t
        if scaling == "mx" and fmt in MX_FORMATS:
            return quantize_scaled(t, fmt, "mx", axis=axis, rule=self.recipe.mx_rule)
        if (name, fmt) in self.cache:  # one scale per tensor: the same cast serves both products
            return self.cache[(name, fmt)]
        if FORMATS[fmt].bits >= 16:  # 16-bit formats are cast directly, whatever the 8-bit scaling
            scaling = "none"
        if scaling == "tensor" or (scaling == "mx" and fmt == "int8"):
            out = quantize_scaled(t, fmt, "tensor", batch_dims=1)
        elif scaling == "delayed":
            out = self._delayed(t, fmt, name)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                out = quantize(t, fmt)
        self.cache[(name, fmt)] = out
        return out

    def _delayed(self, t: np.ndarray, fmt: str, name: str) -> np.ndarray:
        f = FORMATS[fmt]
        past = self.history.setdefault(name, np.zeros((self.n, self.recipe.amax_history)))
        amax_past = past.max(axis=1)
        scale = np.where(amax_past > 0, f.max / np.where(amax_past > 0, amax_past, 1), 1.0).astype(np.float32)
        scale = scale.reshape((-1,) + (1,) * (t.ndim - 1))
        out = quantize(t * scale, fmt, saturate=True) / scale
        amax_now = np.max(np.abs(t).reshape(self.n, -1), axis=1)
        self.history[name] = np.concatenate([amax_now[:, None], past[:, :-1]], axis=1)
        return out


def _store(old, new, comp, recipe: Recipe, rng):
    fmt = recipe.weights
    if recipe.rounding == "stochastic":
        return quantize_stochastic(new, fmt, rng), comp
    if recipe.rounding == "kahan":
        y = (new - old) - comp
        t = quantize(old + y, fmt)
        return t, quantize((t - old) - y, fmt)
    if recipe.weight_scaling != "none" or FORMATS[fmt].bits <= 8:
        return quantize_scaled(new, fmt, recipe.weight_scaling, batch_dims=1), comp
    return quantize(new, fmt), comp


def _forward(params, xb, recipe: Recipe, cast: _Caster):
    """The forward pass with weights and activations cast as ``recipe`` says: the cast inputs, the
    pre-activation and the logits (float64)."""
    w1, b1, w2, b2 = params
    mm = _matmul(recipe)
    xq, w1q = cast(xb, recipe.compute, "x", -1), cast(w1, recipe.compute, "w1", -2)
    pre = mm(xq, w1q) + b1[:, None, :]
    h = np.maximum(pre, 0)
    hq = cast(h, recipe.compute, "h", -1)
    z = (mm(hq, cast(w2, recipe.compute, "w2", -2)) + b2[:, None, :]).astype(np.float64)
    return h, pre, z


def _matmul(recipe: Recipe):
    if recipe.acc_bits is None:
        return _mm
    return lambda a, b: _mm_narrow(a, b, recipe.acc_bits, recipe.acc_block)


def served_accuracy(params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Test accuracy of stacked models whose forward pass casts weights and activations as
    ``recipe``'s forward pass does (its ``compute`` format, ``scaling`` and accumulator), the same
    tensors a training run under ``recipe`` casts; "delayed" scaling is served as current."""
    if recipe.scaling == "delayed":
        recipe = replace(recipe, scaling="tensor")
    n = len(params[0])
    cast = _Caster(recipe, n)
    _, _, z = _forward(params, np.broadcast_to(np.asarray(x, np.float32), (n, *np.shape(x))), recipe, cast)
    return (z.argmax(axis=-1) == y).mean(axis=-1)


def _gradients(params, xb, yb, recipe: Recipe, scale: np.ndarray, divisor: int, cast: _Caster):
    """One forward and backward pass of every stacked model under ``recipe`` with loss scale
    ``scale`` (one per model) and each rank's loss divided by ``divisor``. Each matrix product's
    inputs are cast along its reduction axis (for MX). Returns the scaled gradients as the backward
    pass wrote them, the activation gradients before and after their cast and the ReLU mask."""
    w2 = params[2]
    mm = _matmul(recipe)
    cast.new_step()
    h, pre, z = _forward(params, xb, recipe, cast)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p = (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)  # float64 softmax, rounded once
    loss_factor = (scale / divisor).astype(np.float32)[:, None, None]
    dz = (p - np.eye(p.shape[-1], dtype=np.float32)[yb]) * loss_factor
    g, c, wg = recipe.grad, recipe.compute, recipe.wgrad_format
    dh = mm(cast(dz, g, "dz", -1), np.swapaxes(cast(w2, c, "w2", -1), 1, 2)) * (pre > 0)  # dgrad, then ReLU'
    dhq = cast(dh, g, "dh", -2)
    dzq = cast(dz, g, "dz", -2)
    with np.errstate(over="ignore", invalid="ignore"):  # fp16 weight gradients may overflow: detected later
        grads = [quantize(mm(np.swapaxes(cast(xb, c, "x", -2), 1, 2), dhq), wg), dhq.sum(axis=1),
                 quantize(mm(np.swapaxes(cast(h, c, "h", -2), 1, 2), dzq), wg), dzq.sum(axis=1)]
    return grads, (dz, dzq), (dh, dhq), pre > 0


def _where(mask: np.ndarray, new, old, shapes) -> list[np.ndarray]:
    """Per stacked model: ``new`` where ``mask`` holds, else ``old``."""
    return [np.where(mask.reshape(s), a, b) for a, b, s in zip(new, old, shapes, strict=True)]


def _flush_counts(before: np.ndarray, after: np.ndarray, mask=True) -> tuple[np.ndarray, np.ndarray]:
    live = (before != 0) & np.isfinite(before) & mask
    axes = tuple(range(1, before.ndim))
    return live.sum(axis=axes), (live & (after == 0)).sum(axis=axes)


def _cast_error(pairs) -> np.ndarray:
    """Per model: ‖after − before‖ / ‖before‖ over the (before, after) pairs, non-finite values left out."""
    num = den = 0.0
    for before, after in pairs:
        ok = np.isfinite(before) & np.isfinite(after)
        diff = np.where(ok, after.astype(np.float64) - before, 0)
        num = num + (diff**2).reshape(len(before), -1).sum(axis=1)
        den = den + (np.where(ok, before, 0).astype(np.float64) ** 2).reshape(len(before), -1).sum(axis=1)
    return np.sqrt(num / np.where(den > 0, den, 1))


def _init(recipe: Recipe, seeds, n_lr, task, hidden):
    params = [np.repeat(p[None], n_lr, axis=0).reshape(n_lr * len(seeds), *p.shape[1:])
              for p in init_params(seeds, task.x_train.shape[1], hidden, task.classes)]
    if recipe.weights != "fp32":
        plain = replace(recipe, rounding="nearest")
        params = [_store(p, p, 0.0, plain, None)[0] for p in params]
    return params


SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup: int = 0) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``steps``: a linear warm-up over the
    first ``warmup`` steps ((step + 1) / warmup), times 1 (``"constant"``) or the cosine decay
    ½(1 + cos(π·step/steps)) to zero [loshchilov2017sgdr]."""
    _checks.choice("schedule", schedule, SCHEDULES)
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return warm * (1.0 if schedule == "constant" else 0.5 * (1 + np.cos(np.pi * step / steps)))


def clip_by_norm(grads: Sequence[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Clip each model's gradients (arrays whose leading axis is the model) to a global L2 norm of
    ``max_norm``, as PyTorch's ``clip_grad_norm_``: every gradient times min(1, max_norm / (norm +
    10⁻⁶)), in float32 [pytorch2024clipgradnorm]. Returns the clipped gradients and, per model,
    whether it was clipped."""
    max_norm = np.float32(_checks.positive("max_norm", max_norm))
    n = grads[0].shape[0]
    norm = np.sqrt(sum(np.square(g, dtype=np.float32).reshape(n, -1).sum(axis=1) for g in grads))
    coef = np.minimum(np.float32(1), max_norm / (norm + np.float32(1e-6))).astype(np.float32)
    return [g * coef.reshape((n,) + (1,) * (g.ndim - 1)) for g in grads], coef < 1


def train(recipe: Recipe, task: Task, lrs, seeds: Sequence[int], *, steps: int = 120, batch: int = 64,
          hidden: int = 32, loss_divisor: int | None = None, eval_every: int = 10, eval_examples: int = 512,
          growth_interval: int = 50, init_scale: float = 2.0**16, schedule: str = "constant", warmup: int = 0,
          spike: tuple[int, float] | None = None, optimizer_kwargs: dict | None = None,
          clip_norm: float | None = None) -> Run:
    """Train one network per (learning rate, seed) under ``recipe``, all at once (vectorised).

    Each step draws a micro-batch of ``batch`` examples, one data-parallel rank's. Its loss is the
    sum of the examples' losses divided by ``loss_divisor``: by default the micro-batch size, the
    mean that frameworks take on each rank before the all-reduce averages the ranks' gradients (so
    the update uses the mean gradient whatever the number of ranks). A larger divisor models a rank
    whose loss averages over more terms than this network has examples, as a language model's
    averages over every token of its micro-batch: each term's gradient carries 1/divisor, which is
    what pushes activation gradients towards underflow [micikevicius2018mixed]; the update still
    uses the mean gradient. Seeds fix the initial weights and the order of the data; the same seed
    gives the same start for every learning rate and recipe. A step with a non-finite gradient is
    skipped for that model (weights and optimizer state stay as they were). ``schedule`` and
    ``warmup`` shape the learning rate (:func:`lr_factor`). ``spike = (step, k)`` multiplies that
    step's loss by k (a gradient spike). ``clip_norm`` clips each model's gradient, once unscaled, to
    that global L2 norm (:func:`clip_by_norm`). The loss curve is the fp32 loss of the stored weights on
    the first ``eval_examples`` training examples, every ``eval_every`` steps.
    """
    lrs = np.atleast_1d(_checks.positive("lrs", lrs)).astype(np.float32)
    seeds = tuple(_checks.count("seed", s, minimum=0) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    steps, batch = _checks.count("steps", steps), _checks.count("batch", batch)
    hidden = _checks.count("hidden", hidden)
    divisor = batch if loss_divisor is None else _checks.count("loss_divisor", loss_divisor)
    eval_every = _checks.count("eval_every", eval_every)
    eval_examples = _checks.count("eval_examples", eval_examples)
    x_eval, y_eval = task.x_train[:eval_examples], task.y_train[:eval_examples]
    growth_interval = _checks.count("growth_interval", growth_interval)
    init_scale = _checks.positive("init_scale", init_scale)
    _checks.choice("schedule", schedule, SCHEDULES)
    warmup = _checks.count("warmup", warmup, minimum=0)
    if clip_norm is not None:
        clip_norm = _checks.positive("clip_norm", clip_norm)
    if spike is not None:
        if not isinstance(spike, (tuple, list)) or len(spike) != 2:
            raise ValueError(f"spike must be None or a pair (step, factor), got {spike!r}")
        spike = (_checks.count("spike step", spike[0], minimum=0), _checks.positive("spike factor", spike[1]))
    n_lr, n_seed = len(lrs), len(seeds)
    n = n_lr * n_seed
    params = _init(recipe, seeds, n_lr, task, hidden)
    comps = [np.zeros_like(p) for p in params]
    shapes = [(n,) + (1,) * (p.ndim - 1) for p in params]
    base_lr = np.repeat(lrs, n_seed)
    opt = OPTIMIZERS[recipe.optimizer](lr=base_lr, state=recipe.state, compute=recipe.state_compute,
                                       batch_dims=1, **(optimizer_kwargs or {}))
    order = np.stack([np.random.default_rng([s, 2]).integers(0, len(task.y_train), (steps, batch))
                      for s in seeds])
    order = np.tile(order, (n_lr, 1, 1))  # (n, steps, batch): model k uses seed k % n_seed
    rng = np.random.default_rng([seeds[0], 3])
    cast = _Caster(recipe, n)
    dynamic = recipe.loss_scale == "dynamic"
    scale = np.full(n, init_scale if dynamic else float(recipe.loss_scale))
    good, skipped, clipped, counts = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int), np.zeros((2, n))
    scale_log, flush_log, error_log = np.empty((steps, n)), np.empty((steps, n)), np.empty((steps, n))
    skip_log = np.zeros((steps, n), bool)
    eval_steps = np.arange(0, steps + 1, eval_every)
    losses, samples = [], []
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is modelled, not an error
        for step in range(steps):
            if step in eval_steps:
                losses.append(cross_entropy(logits(params, x_eval), y_eval))
            scale_log[step] = scale
            idx = order[:, step]
            factor = spike[1] if spike is not None and step == spike[0] else 1.0
            grads, (dz, dzq), (dh, dhq), relu = _gradients(params, task.x_train[idx], task.y_train[idx],
                                                           recipe, scale * factor, divisor, cast)
            now = np.add(_flush_counts(dz, dzq), _flush_counts(dh, dhq, relu))
            counts += now
            flush_log[step] = now[1] / np.maximum(now[0], 1)
            error_log[step] = _cast_error([(dz, dzq), (dh, dhq)])
            if step in (0, steps // 2, steps - 1):  # the first model's activation gradients, unscaled
                unscaled = np.concatenate([dz[0].ravel(), dh[0][relu[0]]]) / scale[0]
                samples.append(np.abs(unscaled.astype(np.float64)))
            unscale = (np.float32(divisor / batch) / scale).astype(np.float32)
            grads = [g * unscale.reshape(shp) for g, shp in zip(grads, shapes, strict=True)]
            finite = np.all([np.isfinite(g).reshape(n, -1).all(axis=1) for g in grads], axis=0)
            grads = _where(finite, grads, [np.float32(0)] * 4, shapes)
            if clip_norm is not None:
                grads, cut = clip_by_norm(grads, clip_norm)
                clipped += cut
            saved = _optimizer_state(opt)
            opt.lr = (base_lr * lr_factor(step, steps, schedule, warmup)).astype(np.float32)
            new = opt.step(params, grads)
            _restore_where(opt, saved, ~finite, shapes)
            if recipe.weights != "fp32":
                stored = [_store(o, w, c, recipe, rng) for o, w, c in zip(params, new, comps, strict=True)]
                new = [st[0] for st in stored]
                comps = _where(finite, [st[1] for st in stored], comps, shapes)
            params = _where(finite, new, params, shapes)
            skipped += ~finite
            skip_log[step] = ~finite
            if dynamic:  # as PyTorch's GradScaler: halve on overflow, double after a run of good steps
                good = np.where(finite, good + 1, 0)
                scale = np.where(finite, scale, scale / 2)
                grow = good >= growth_interval
                scale, good = np.where(grow, scale * 2, scale), np.where(grow, 0, good)
        losses.append(cross_entropy(logits(params, x_eval), y_eval))
        accuracy_ = accuracy(params, task.x_test, task.y_test)
        test_loss = cross_entropy(logits(params, task.x_test), task.y_test)
    grid = (n_lr, n_seed)
    return Run(
        lrs=lrs.astype(np.float64), seeds=seeds, eval_steps=np.append(eval_steps[eval_steps < steps], steps),
        loss=np.asarray(losses).reshape(-1, *grid), test_accuracy=accuracy_.reshape(grid),
        test_loss=test_loss.reshape(grid),
        flushed=(counts[1] / np.maximum(counts[0], 1)).reshape(grid), skipped=skipped.reshape(grid),
        clipped=clipped.reshape(grid),
        params=params, grad_sample=np.concatenate(samples), loss_scale=scale_log,
        flush_trace=flush_log, error_trace=error_log, skip_trace=skip_log,
    )


def _optimizer_state(opt) -> list[list[np.ndarray] | None]:
    names = ("m", "v") if hasattr(opt, "m") else ("buf",)
    return [None if getattr(opt, k) is None else [a.copy() for a in getattr(opt, k)] for k in names]


def _restore_where(opt, saved, mask, shapes) -> None:
    """Undo an optimizer step for the models in ``mask`` (a skipped step leaves the state as it
    was; only the shared step counter advances)."""
    if not mask.any():
        return
    names = ("m", "v") if hasattr(opt, "m") else ("buf",)
    for name, old in zip(names, saved, strict=True):
        new = getattr(opt, name)
        setattr(opt, name, _where(mask, [0.0] * len(new) if old is None else old, new, shapes))


# --- helpers the experiments share -----------------------------------------------------------------


FATES = ("flushed to zero", "subnormal", "normal", "overflow")


def fates(values, fmt: str, scale: float = 1.0) -> dict[str, float]:
    """Share of the non-zero ``values`` that a cast to ``fmt`` after multiplying by ``scale`` sends
    to each fate: flushed to zero, kept as a subnormal (few significant bits), kept as a normal
    number, or overflowed (past the largest value: inf, NaN or, where the format has neither, a
    clamp)."""
    f = get_format(fmt)
    scale = _checks.positive("scale", scale)
    v = np.abs(np.asarray(_checks.finite("values", values), dtype=np.float64)).ravel()
    v = v[v > 0] * scale
    if v.size == 0:
        raise ValueError("values must hold at least one non-zero value")
    with np.errstate(over="ignore"):
        q = np.abs(quantize(v, fmt))
    over = (v > f.max) & ((q > f.max) | ~np.isfinite(q) | (q == f.max))
    over &= v > f.max + spacing(f.max, fmt) / 2  # values that round down to max did not overflow
    zero = q == 0
    sub = ~zero & ~over & (q < f.min_normal)
    return {"flushed to zero": float(zero.mean()), "subnormal": float(sub.mean()),
            "normal": float((~zero & ~sub & ~over).mean()), "overflow": float(over.mean())}


INPUTS = ("uniform", "gaussian")


def _fp8_vectors(shape, inputs: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    _checks.choice("inputs", inputs, INPUTS)
    draw = rng.random if inputs == "uniform" else rng.standard_normal
    return (quantize(draw(shape), "fp8_e4m3").astype(np.float64),
            quantize(draw(shape), "fp8_e4m3").astype(np.float64))


NORMALISATIONS = ("sum", "abs")


def _reference(products: np.ndarray, normalise: str) -> np.ndarray:
    """What an error is relative to, per prefix of ``products``: |s| (``"sum"``) or Σ|a_i b_i|
    (``"abs"``, Higham's normalisation, free of the sum's cancellation [higham2002accuracy, chapter 4])."""
    _checks.choice("normalise", normalise, NORMALISATIONS)
    return np.abs(np.cumsum(products if normalise == "sum" else np.abs(products), axis=-1))


def accumulation_errors(k_max: int, bits: Sequence[int], promote: Sequence[int | None], *, trials: int = 32,
                        seed: int = 0, mode: str = "nearest", inputs: str = "uniform",
                        normalise: str = "sum") -> np.ndarray:
    """Relative error |ŝ − s| / |s| (or |ŝ − s| / Σ|a_i b_i| with ``normalise="abs"``) of every prefix
    (K = 1 … k_max) of ``trials`` dot products of
    FP8 E4M3 vectors, entries uniform in (0, 1) (all products positive: the sum grows steadily and
    the error of rounding to nearest is close to its bound) or standard normal (``inputs="gaussian"``:
    sums that cancel, so truncation errs by more relative to the result), accumulated one product at
    a time (:func:`dot_accumulate`) with each width in ``bits`` and each promotion interval in
    ``promote`` (None: never), against the exact sum. Shape (len(bits), len(promote), trials, k_max)."""
    k_max, trials = _checks.count("k_max", k_max), _checks.count("trials", trials)
    seed = _checks.count("seed", seed, minimum=0)
    _checks.choice("normalise", normalise, NORMALISATIONS)
    a, b = _fp8_vectors((trials, k_max), inputs, np.random.default_rng([seed, 4]))
    nb, npr = len(bits), len(promote)
    bits_grid = np.broadcast_to(np.asarray(bits, dtype=np.int64)[:, None, None], (nb, npr, trials))
    every = np.asarray([0 if p is None else p for p in promote], dtype=np.int64)
    every_grid = np.broadcast_to(every[None, :, None], (nb, npr, trials))
    got = dot_accumulate(np.broadcast_to(a, (nb, npr, trials, k_max)), b, bits_grid, every_grid, mode,
                         prefixes=True)
    exact = np.cumsum(a * b, axis=-1)  # float64: exact to ~1e-16, far below every error measured here
    return np.abs(got - exact) / _reference(a * b, normalise)


def block_accumulation_errors(k_max: int, bits: int, block: int = 16, promote: int | None = None, *,
                              trials: int = 32, seed: int = 0, inputs: str = "uniform",
                              normalise: str = "sum") -> np.ndarray:
    """As :func:`accumulation_errors`, for the block accumulator of :func:`block_dot` (alignment
    truncation to ``bits`` fraction bits, ``block`` products a step, promotion every ``promote``):
    the relative error after each block, K = block, 2·block, … Shape (trials, k_max // block)."""
    k_max, trials = _checks.count("k_max", k_max), _checks.count("trials", trials)
    block = _checks.count("block", block)
    if k_max % block:
        raise ValueError(f"k_max must be a multiple of block = {block}, got {k_max}")
    seed = _checks.count("seed", seed, minimum=0)
    _checks.choice("normalise", normalise, NORMALISATIONS)
    a, b = _fp8_vectors((trials, k_max), inputs, np.random.default_rng([seed, 4]))
    got = block_dot(a, b, bits, block, promote, prefixes=True)
    exact = np.cumsum(a * b, axis=-1)[:, block - 1::block]
    return np.abs(got - exact) / _reference(a * b, normalise)[:, block - 1::block]
