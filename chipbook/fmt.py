"""How the book writes numbers in its prose: powers of ten, short scales and percentages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from chipbook import _checks

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_SCALES = ((1e15, "quadrillion"), (1e12, "trillion"), (1e9, "billion"), (1e6, "million"),
           (1e3, "thousand"))


def sci(value: float, digits: int = 3) -> str:
    """``value`` in scientific notation with ``digits`` significant digits: 3.15 × 10²³."""
    value = float(_checks.finite("value", value))
    _checks.count("digits", digits)
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = round(value / 10**exponent, digits - 1)
    if abs(mantissa) >= 10:  # rounding carried into the next power
        mantissa, exponent = mantissa / 10, exponent + 1
    if exponent == 0:
        return f"{mantissa:.{digits - 1}f}"
    return f"{mantissa:.{digits - 1}f} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def words(value: float, digits: int = 2) -> str:
    """``value`` on the short scale in words, with ``digits`` significant digits: 47 trillion."""
    value = float(_checks.finite("value", value))
    _checks.count("digits", digits)
    value = float(f"{value:.{digits}g}")  # round first, so 999.6e9 reads 1.0 trillion
    for factor, name in _SCALES:
        if abs(value) >= factor:
            return f"{_significant(value / factor, digits)} {name}"
    return _significant(value, digits)


def num(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits and thousands separators: 1,670 or 0.053."""
    value = float(_checks.finite("value", value))
    _checks.count("digits", digits)
    return _significant(value, digits)


def pct(value: float, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` significant digits: 0.4132 -> 41%."""
    value = float(_checks.finite("value", value))
    _checks.count("digits", digits)
    return f"{_significant(100 * value, digits)}%"


def _significant(value: float, digits: int) -> str:
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    rounded = round(value, decimals)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))  # 9.99 -> 10
    return f"{rounded:,.{decimals}f}"


def frame(table: pd.DataFrame, digits: int = 3, missing: str = "–") -> pd.DataFrame:
    """``table`` for display, written as the prose writes numbers: whole numbers below ten million
    exactly with thousands separators (30,674), other numbers to ``digits`` significant digits
    (0.618, 1,670), very large or small ones as powers of ten (3.15 × 10²³), truth values as
    yes/no, missing values as ``missing``, text unchanged."""
    _checks.count("digits", digits)

    def cell(value):
        if isinstance(value, str):
            return value
        if value is None or pd.isna(value):
            return missing
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value != 0 and not 1e-3 <= abs(value) < 1e7:
            return sci(value, digits)
        if value.is_integer():
            return f"{int(value):,}"
        return _significant(value, digits)

    return table.map(cell)
