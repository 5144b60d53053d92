"""Reading a learning-rate optimum out of paired-seed runs (chapter "Low-precision training").

Two runs are *paired* when they share the seed of their initial weights and of their data order, so
that their difference cancels most of the seed-to-seed noise. The optimum of a loss against the
learning rate is located between grid points by the vertex of a parabola in log(lr) through the
points around it, the step of successive parabolic interpolation [brent1973algorithms, chapter 5];
paired differences are summarised by their mean and its standard error (the sample standard
deviation over √n, as in Student's paired t test).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from chipbook import _checks


def lr_optimum(lrs: ArrayLike, loss: ArrayLike) -> np.ndarray:
    """The learning rate at the vertex of the least-squares parabola in log10(lr) through ``loss``
    (shape (learning rates, seeds), at least three learning rates), one per seed. A seed whose
    parabola opens downward has no minimum: NaN."""
    lrs = np.asarray(_checks.positive("lrs", lrs), dtype=np.float64).ravel()
    loss = np.asarray(_checks.finite("loss", loss), dtype=np.float64)
    if lrs.size < 3 or loss.ndim != 2 or loss.shape[0] != lrs.size:
        raise ValueError(f"loss must have shape (learning rates ≥ 3, seeds) with one row per lr; got lrs "
                         f"{lrs.size}, loss {loss.shape}")
    a, b, _ = np.polyfit(np.log10(lrs), loss, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(a > 0, 10.0 ** (-b / (2 * a)), np.nan)
    return vertex


def paired_difference(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Mean and standard error of the paired differences ``a − b`` (equal-length vectors, one entry
    per seed, at least two)."""
    a = np.asarray(_checks.finite("a", a), dtype=np.float64).ravel()
    b = np.asarray(_checks.finite("b", b), dtype=np.float64).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError(f"a and b must be paired vectors of equal length ≥ 2, got {a.size} and {b.size}")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def paired_ratio(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Geometric-mean ratio ``a / b`` of paired positive values and the relative standard error of
    that ratio (the standard error of the mean log ratio, for a small one ≈ the ratio's relative SE)."""
    a, b = _checks.positive("a", a), _checks.positive("b", b)
    mean, se = paired_difference(np.log(a), np.log(b))
    return float(np.exp(mean)), se
