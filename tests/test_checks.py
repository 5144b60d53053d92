"""The argument checks every public chipbook function relies on (chipbook._checks).

Each check must return plain floats (or a float array) for good input and raise ValueError naming
the parameter for bad input: a boolean, text, None, NaN, ±inf, or a value outside the allowed range.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from chipbook import _checks

NOT_NUMBERS = ["3", b"3", None, "nan", object(), 1 + 2j, [1, "a"], [[1], [1, 2]], np.array(["1.0"])]
BOOLEANS = [True, False, np.True_, np.array([True, False]), [1.0, True], (2, np.False_)]
NON_FINITE = [math.nan, math.inf, -math.inf, np.array([1.0, np.nan]), [1.0, math.inf], 10**400]


@pytest.mark.parametrize("check", [_checks.positive, _checks.non_negative, _checks.fraction])
@pytest.mark.parametrize("bad", NOT_NUMBERS + BOOLEANS + NON_FINITE, ids=repr)
def test_float_checks_reject_non_numbers_naming_the_parameter(check, bad):
    with pytest.raises(ValueError, match=r"^the_param must be"):
        check("the_param", bad)


@pytest.mark.parametrize("bad", BOOLEANS, ids=repr)
def test_booleans_are_called_booleans(bad):
    with pytest.raises(ValueError, match="the_param must be a number, got a boolean"):
        _checks.positive("the_param", bad)


@pytest.mark.parametrize("bad", NON_FINITE, ids=repr)
def test_non_finite_values_are_called_non_finite(bad):
    with pytest.raises(ValueError, match="the_param must be finite"):
        _checks.positive("the_param", bad)


@pytest.mark.parametrize(
    ("check", "good", "bad", "allowed"),
    [
        (_checks.positive, [1e-300, 1, 2.5, 1e30], [0, -0.0, -1e-9, -5], "> 0"),
        (_checks.non_negative, [0, 0.0, 1e-300, 7], [-1e-300, -1], ">= 0"),
        (_checks.fraction, [1e-12, 0.5, 1], [0, -0.1, 1 + 1e-12, 2], r"in \(0, 1\]"),
    ],
)
def test_range_edges(check, good, bad, allowed):
    for value in good:
        out = check("x", value)
        assert type(out) is float and out == float(value)
    for value in bad:
        with pytest.raises(ValueError, match=rf"^x must be {allowed}, got"):
            check("x", value)


def test_scalars_of_other_numeric_types_become_python_floats():
    for value, expected in [(np.int64(3), 3.0), (np.float32(0.5), 0.5), (Fraction(1, 4), 0.25),
                            (Decimal("2.5"), 2.5), (10**30, 1e30), (np.array(4.0), 4.0)]:
        out = _checks.positive("x", value)
        assert type(out) is float and out == expected


def test_arrays_are_checked_elementwise_and_returned_as_float_arrays():
    out = _checks.positive("x", [1, 2, 3])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(_checks.fraction("x", np.array([[0.1, 1.0], [0.5, 0.25]])),
                                  [[0.1, 1.0], [0.5, 0.25]])
    with pytest.raises(ValueError, match=r"^x must be > 0"):
        _checks.positive("x", [1.0, 2.0, 0.0])  # one bad element fails the whole array
    with pytest.raises(ValueError, match=r"^x must be in \(0, 1\]"):
        _checks.fraction("x", np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"^x must be >= 0"):
        _checks.non_negative("x", np.array([[0.0, -1.0]]))


def test_count_accepts_whole_numbers_only():
    assert _checks.count("n", 1) == 1
    assert _checks.count("n", np.int32(7)) == 7 and type(_checks.count("n", np.int32(7))) is int
    assert _checks.count("n", 0, minimum=0) == 0
    for bad in [0, -3, 2.0, 1.5, "2", None, True, np.True_, np.float64(2), math.nan]:
        with pytest.raises(ValueError, match=r"^n must be a whole number >= 1, got"):
            _checks.count("n", bad)
    with pytest.raises(ValueError, match=r"^dpi must be a whole number >= 20, got 19"):
        _checks.count("dpi", 19, minimum=20)


def test_choice_accepts_only_the_listed_values_and_names_them():
    assert _checks.choice("fmt", "bf16", ("fp32", "bf16")) == "bf16"
    for bad in ["BF16", "", None, 1, ["bf16"], True]:
        with pytest.raises(ValueError, match=r"^fmt must be one of 'fp32', 'bf16'; got"):
            _checks.choice("fmt", bad, ("fp32", "bf16"))
    with pytest.raises(ValueError, match="must be one of 0, 1"):
        _checks.choice("n", 1.0, (0, 1))  # 1.0 == 1, but it is not the whole number listed
