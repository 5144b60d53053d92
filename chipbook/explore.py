"""Explorable figures that work with no kernel.

An explorable precomputes one frame (a small PNG drawn by a ``plot_…`` function) for every point of
a grid of parameter values, puts the frames in nested ``ipywidgets.Tab`` widgets, one level per
parameter, and links each control to the Tabs of its level with ``jslink``. The link runs in the
browser, so the published page, which holds the saved widget state and no kernel, still shows the
frame that the controls select. The same widget works in a live kernel.

Why Tab and not Stack: a Stack builds the view of its selected child anew on every change, so each
move of a slider creates an image and waits for the browser to load it (about 40 ms in headless
Chromium on this book's pages). A Tab builds every child's view once and only shows and hides them,
so a move costs a few milliseconds. The tab bars are hidden by a style rule that travels inside
the explorable, so they are hidden in JupyterLab as well as on the published page.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from chipbook import _checks

MAX_FRAMES = 96  # beyond this the page outgrows the book's 3 MB budget

#: Tabs as a frame switcher: no tab bars, no frame around each level; the description (alt text)
#: read by screen readers and not shown.
_STYLE = (
    ".chipbook-explorable .widget-tab-bar { display: none !important; }"
    " .chipbook-explorable .widget-tab-contents { border: none !important; padding: 0 !important; }"
    " .chipbook-alt { position: absolute !important; width: 1px; height: 1px; overflow: hidden;"
    " clip: rect(0 0 0 0); white-space: nowrap; }"
)


@dataclass(frozen=True)
class Param:
    """One explorable parameter: the keyword ``name`` of the plot function, the control's
    ``label`` (with its unit), the ``values`` to precompute and, optionally, how each is shown.

    ``buttons`` chooses toggle buttons instead of a slider; left as None, values that are not all
    numbers (names of chips, links, models or formats, or None) get buttons and numbers a slider.
    ``start`` is the index of the value the explorable opens on: the case the text describes.
    """

    name: str
    label: str
    values: Sequence[Any]
    shown: Sequence[str] | None = None
    buttons: bool | None = None
    start: int = 0
    _labels: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier, got {self.name!r}")
        if len(self.values) < 2:
            raise ValueError(f"values of {self.name!r} must hold at least 2 values")
        shown = [str(v) for v in self.values] if self.shown is None else [str(s) for s in self.shown]
        if len(shown) != len(self.values):
            raise ValueError(f"shown of {self.name!r} must have one label per value")
        if len(set(shown)) != len(shown):
            raise ValueError(f"shown of {self.name!r} must label each value differently")
        if isinstance(self.start, bool) or not isinstance(self.start, int) \
                or not 0 <= self.start < len(self.values):
            raise ValueError(f"start of {self.name!r} must be an index from 0 to {len(self.values) - 1}, "
                             f"got {self.start!r}")
        object.__setattr__(self, "_labels", tuple(shown))
        if self.buttons is None:
            scale = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in self.values)
            object.__setattr__(self, "buttons", not scale)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def control(self) -> widgets.Widget:
        """The control: a slider over the labelled values, or toggle buttons."""
        common = {"options": list(self.labels), "index": self.start, "description": self.label,
                  "tooltip": self.label, "style": {"description_width": "initial"}}
        if self.buttons:
            return widgets.ToggleButtons(**common)
        return widgets.SelectionSlider(continuous_update=True, layout=widgets.Layout(width="95%"), **common)


def figure_png(fig: Figure, *, dpi: int = 80, colors: int = 96) -> bytes:
    """The figure as PNG bytes with a reduced palette (line art loses nothing visible and the
    file shrinks several-fold); the same figure always gives the same bytes, of the size that
    matplotlib's own PNG of it has."""
    _checks.count("dpi", dpi, minimum=20)
    _checks.count("colors", colors, minimum=2)
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=dpi)  # raw pixels: no PNG encoded only to be decoded again
    # The renderer's size in whole pixels: matplotlib truncates width x dpi and height x dpi (a
    # height of 3.34375 in at 80 dpi, 267.5 px, draws 267 rows) unless within 1e-8 of the next whole
    # pixel, so the width is taken the same way and the height read from the bytes it wrote.
    width = math.floor(fig.get_figwidth() * dpi + 1e-8)
    pixels = raw.getbuffer().nbytes // 4
    if width < 1 or pixels % width:
        raise ValueError(f"the figure's raw image of {pixels} pixels is not {width} pixels wide")
    size = (width, pixels // width)
    image = Image.frombuffer("RGBA", size, raw.getvalue(), "raw", "RGBA", 0, 1).convert("RGB")
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


def _share_layout(fig: Figure, layout: list | None) -> list:
    """Give ``fig`` the layout of the explorable's first frame.

    The first frame is laid out by its own layout engine; every later frame of the same shape gets
    the same positions for its axes and title and no layout engine. The frames then line up
    exactly as the reader moves a control, and the engine, which costs more than the rest of the
    drawing, runs once per explorable instead of once per frame.
    """
    if layout is None or len(layout) != len(fig.axes) + 1:
        fig.canvas.draw()  # lays the frame out (the first one, or one of a different shape)
        # The figure's title artist (matplotlib keeps it private; the layout engine moves it too).
        title = fig._suptitle.get_position() if fig._suptitle is not None else None
        return [*(ax.get_position() for ax in fig.axes), title]
    with mpl.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # no engine: positions stay as set below
    for ax, position in zip(fig.axes, layout, strict=False):
        ax.set_position(position)
    if layout[-1] is not None and fig._suptitle is not None:
        fig._suptitle.set_position(layout[-1])
    return layout


class Explorable(widgets.VBox):
    """The controls above the frames, then the frames' description. Its text form names the
    grid, never a widget id, so that a notebook's saved output is the same on every run."""

    def __init__(self, children: list[widgets.Widget], summary: str):
        super().__init__(children)
        self.add_class("chipbook-explorable")
        self._summary = summary

    def __repr__(self) -> str:
        return self._summary


def explorable(
    plot: Callable[..., Figure],
    params: Sequence[Param],
    *,
    fixed: dict[str, Any] | None = None,
    alt: str,
    dpi: int = 80,
) -> Explorable:
    """Build an explorable of ``plot(**fixed, **{p.name: value for p in params})`` over the grid
    of every combination of the parameters' values (one, two or three parameters).

    ``alt`` describes the frames for screen readers: it is placed, visually hidden, after the frames
    (the widget library's image has no alt attribute, and its tooltip breaks the page's renderer).
    """
    params = list(params)
    if not alt.strip():
        raise ValueError("alt must describe the frames in words, for readers who cannot see them")
    if not 1 <= len(params) <= 3:
        raise ValueError(f"params must hold 1 to 3 parameters, got {len(params)}")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"params must have distinct names, got {names}")
    fixed = dict(fixed or {})
    clash = set(fixed) & set(names)
    if clash:
        raise ValueError(f"fixed sets explored parameters: {sorted(clash)}")
    n_frames = 1
    for p in params:
        n_frames *= len(p.values)
    if n_frames > MAX_FRAMES:
        raise ValueError(f"the grid has {n_frames} frames; at most {MAX_FRAMES} are allowed")

    pngs = {}
    layout = None
    for index in itertools.product(*(range(len(p.values)) for p in params)):
        fig = plot(**fixed, **{p.name: p.values[i] for p, i in zip(params, index, strict=True)})
        layout = _share_layout(fig, layout)
        pngs[index] = figure_png(fig, dpi=dpi)
        plt.close(fig)

    controls = [p.control() for p in params]
    levels: list[list[widgets.Tab]] = [[] for _ in params]
    image_layout = widgets.Layout(width="100%", max_width="640px")  # one model shared by every frame

    def nest(prefix: tuple[int, ...]) -> widgets.Widget:
        depth = len(prefix)
        if depth == len(params):
            return widgets.Image(value=pngs[prefix], format="png", layout=image_layout)
        children = [nest((*prefix, i)) for i in range(len(params[depth].values))]
        node = widgets.Tab(children, selected_index=params[depth].start, titles=params[depth].labels)
        levels[depth].append(node)
        return node

    frames = nest(())
    for control, tabs in zip(controls, levels, strict=True):
        for node in tabs:
            widgets.jslink((control, "index"), (node, "selected_index"))

    grid = " × ".join(f"{p.name} [{len(p.values)}]" for p in params)
    described = widgets.HTML(f"<style>{_STYLE}</style>{html.escape(alt)}")
    described.add_class("chipbook-alt")
    summary = f"Explorable({plot.__name__}: {grid}, {n_frames} frames)"
    return Explorable([*controls, frames, described], summary)
