"""chipbook.fmt: how numbers are written in the prose, against hand-written expectations."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipbook import fmt


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (3.1499e23, 3, "3.15 × 10²³"),
    (3.14e23, 3, "3.14 × 10²³"),
    (9.9996e5, 3, "1.00 × 10⁶"),  # rounding carries into the next power
    (1.5, 3, "1.50"),
    (-2e-3, 3, "-2.00 × 10⁻³"),
    (0, 3, "0"),
    (9.8e16, 2, "9.8 × 10¹⁶"),
])
def test_sci(value, digits, expected):
    assert fmt.sci(value, digits) == expected


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (4.68e13, 2, "47 trillion"),
    (999.6e9, 2, "1.0 trillion"),  # rounds before choosing the scale
    (1.75e11, 2, "180 billion"),
    (3e11, 2, "300 billion"),
    (1.3e15, 2, "1.3 quadrillion"),
    (1234567, 3, "1.23 million"),
    (12, 2, "12"),
])
def test_words(value, digits, expected):
    assert fmt.words(value, digits) == expected


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (1670.4, 3, "1,670"),
    (0.0534, 2, "0.053"),
    (21.27, 2, "21"),
    (9.96, 2, "10"),
])
def test_num(value, digits, expected):
    assert fmt.num(value, digits) == expected


@pytest.mark.parametrize(("value", "expected"), [(0.4132, "41%"), (0.0034, "0.34%"), (1.0, "100%"),
                                                 (0.999, "100%")])
def test_pct(value, expected):
    assert fmt.pct(value) == expected


@given(st.floats(min_value=1e-30, max_value=1e30))
def test_sci_round_trips_to_its_digits(value):
    text = fmt.sci(value, 3)
    mantissa, _, power = text.partition(" × 10")
    exponent = int(power.translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))) if power else 0
    assert math.isclose(float(mantissa) * 10.0**exponent, value, rel_tol=5e-3)


@pytest.mark.parametrize("func", [fmt.sci, fmt.words, fmt.num, fmt.pct])
@pytest.mark.parametrize("bad", [math.nan, math.inf, "3", None])
def test_bad_values_name_the_parameter(func, bad):
    with pytest.raises(ValueError, match="value"):
        func(bad)


@pytest.mark.parametrize("func", [fmt.sci, fmt.words, fmt.num, fmt.pct])
def test_bad_digits(func):
    with pytest.raises(ValueError, match="digits"):
        func(1.0, 0)


def test_frame_formats_numbers_and_keeps_text():
    import pandas as pd

    table = pd.DataFrame({"name": ["a", "b", "c"], "x": [3.14159e23, float("nan"), 0.61849],
                          "n": [30674, 5, 12_345_678], "ok": [True, False, True],
                          "f": [1670.4, 2.0, 4.2e-5], "inf": [math.inf, -math.inf, 0.0]})
    shown = fmt.frame(table, digits=3)
    assert shown.to_dict("list") == {
        "name": ["a", "b", "c"],
        "x": ["3.14 × 10²³", "–", "0.618"],
        "n": ["30,674", "5", "1.23 × 10⁷"],
        "ok": ["yes", "no", "yes"],
        "f": ["1,670", "2", "4.20 × 10⁻⁵"],
        "inf": ["∞", "−∞", "0"],
    }
    assert fmt.frame(table, missing="n/a").loc[1, "x"] == "n/a"
    assert "e+" not in fmt.frame(table).to_string()
