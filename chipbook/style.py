"""One matplotlib style for the whole book.

Figures are drawn at 6.4 × 4 inches and read at phone width, so text is large and lines are thick.
The colours are the Okabe–Ito palette, chosen to stay distinct for the common colour-vision
deficiencies (Okabe & Ito 2008, "Color Universal Design").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import matplotlib as mpl
from cycler import cycler
from matplotlib.figure import Figure

#: Okabe–Ito colours, in the order the book uses them.
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
TRAIN = PALETTE["vermillion"]  # training, everywhere in the book
SERVE = PALETTE["blue"]  # inference, everywhere in the book

RC = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": True,
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "lines.linewidth": 2.2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=list(PALETTE.values())),
    "svg.hashsalt": "chipbook",
}


F = TypeVar("F", bound=Callable[..., Figure])


def use() -> None:
    """Apply the book's style to matplotlib globally (for a reader's own figures)."""
    mpl.rcParams.update(RC)


def styled(plot: F) -> F:
    """Decorate a ``plot_…`` function so that it draws in the book's style whatever the global
    matplotlib settings, and leaves them as they were."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC):
            return plot(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
