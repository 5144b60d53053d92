"""Argument checks shared by chipbook's public functions.

Each check raises ValueError that names the parameter and what is allowed, so that bad input gives a
clear error instead of a wrong number. Checks accept Python numbers and numpy arrays alike and return
a float (for a scalar) or a float array.
"""

from __future__ import annotations

import decimal
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def _is_real(item: Any) -> bool:
    return isinstance(item, (numbers.Real, decimal.Decimal)) and not isinstance(item, (bool, np.bool_))


def _as_float(name: str, value: Any) -> np.ndarray:
    # Text such as "3" would convert silently, and None to NaN: neither is a number.
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, (list, tuple)) and raw.dtype.kind != "O":
        items = np.asarray(value, dtype=object).ravel()  # a list such as [1, True] converts to ints
    else:
        items = raw.ravel() if raw.dtype.kind == "O" else ()
    if raw.dtype.kind == "b" or any(isinstance(v, (bool, np.bool_)) for v in items):
        raise ValueError(f"{name} must be a number, got a boolean")
    if raw.dtype.kind not in "iuf" and not (raw.dtype.kind == "O" and all(map(_is_real, raw.ravel()))):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        arr = raw.astype(float)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {value!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def _out(arr: np.ndarray) -> float | np.ndarray:
    return float(arr) if arr.ndim == 0 else arr


def finite(name: str, value: Any) -> float | np.ndarray:
    """``value`` as float(s), required finite."""
    return _out(_as_float(name, value))


def positive(name: str, value: Any) -> float | np.ndarray:
    """``value`` as float(s), required finite and > 0."""
    arr = _as_float(name, value)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return _out(arr)


def non_negative(name: str, value: Any) -> float | np.ndarray:
    """``value`` as float(s), required finite and >= 0."""
    arr = _as_float(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return _out(arr)


def fraction(name: str, value: Any) -> float | np.ndarray:
    """``value`` as float(s), required in the half-open interval (0, 1]."""
    arr = _as_float(name, value)
    if np.any((arr <= 0) | (arr > 1)):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return _out(arr)


def count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, required whole and >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value``, required to be one of ``allowed`` (a sequence, or a mapping's keys) and of the same
    type, so that ``True`` is not taken for ``1`` nor ``"1"`` for ``1``."""
    options = list(allowed)
    if not any(type(value) is type(option) and value == option for option in options):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value
