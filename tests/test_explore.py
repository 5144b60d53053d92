"""chipbook.explore: explorables that work with no kernel.

The frames must be the figures of their grid points, nested in Tabs one level per parameter, and
each control jslinked to every Tab of its level (and no other), since in the published page the
link is all that turns a slider into a new frame.
"""

from __future__ import annotations

import io
import itertools
import re

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import pytest
from ipywidgets.widgets.widget_link import Link
from PIL import Image

from chipbook import explore
from chipbook.explore import Param

matplotlib.use("Agg")

DPI = 30  # small frames keep the tests fast
ALT = "A line whose slope and offset change with the controls"


def plot_toy(slope=1.0, offset=0.0, colour="C0", title=""):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [offset, offset + slope, offset + 2 * slope], color=colour)
    ax.set_ylim(-5, 5)
    ax.set_title(title)
    return fig


def _png(**kwargs) -> bytes:
    fig = plot_toy(**kwargs)
    try:
        return explore.figure_png(fig, dpi=DPI)
    finally:
        plt.close(fig)


@pytest.fixture
def links(monkeypatch):
    """Every Link that explorable() makes, recorded as ipywidgets makes it."""
    made = []
    real = widgets.jslink

    def recording(a, b):
        link = real(a, b)
        made.append(link)
        return link

    monkeypatch.setattr(widgets, "jslink", recording)
    return made


@pytest.fixture
def constructed():
    """Every widget constructed while the test runs (ipywidgets' public construction hook)."""
    seen = []
    widgets.Widget.on_widget_constructed(seen.append)
    yield seen
    widgets.Widget.on_widget_constructed(None)


PARAMS = [
    Param("slope", "slope (units/step)", [-1.0, 0.0, 2.0], shown=["−1", "0", "2"]),
    Param("offset", "offset (units)", [0.0, 1.5]),
    Param("colour", "colour", ["C0", "C1"], buttons=True),
]


def _parts(ex):
    """(controls, frames, what follows the frames): the frames are the explorable's one Tab."""
    stacks = [i for i, child in enumerate(ex.children) if isinstance(child, widgets.Tab)]
    assert len(stacks) == 1
    i = stacks[0]
    return list(ex.children[:i]), ex.children[i], list(ex.children[i + 1:])


def _stacks_by_level(root):
    levels, current = [], [root]
    while current and isinstance(current[0], widgets.Tab):
        levels.append(current)
        current = [child for node in current for child in node.children]
    return levels, current


@pytest.mark.parametrize("n_params", [1, 2, 3])
def test_grid_nesting_links_and_frames(n_params, links, constructed):
    params = PARAMS[:n_params]
    ex = explore.explorable(plot_toy, params, fixed={"title": "toy"}, dpi=DPI, alt=ALT)
    controls, frames, _ = _parts(ex)
    assert len(controls) == n_params

    # one Tab level per parameter, each node with one child per value of its parameter
    levels, leaves = _stacks_by_level(frames)
    assert len(levels) == n_params
    expected_nodes = 1
    for param, nodes in zip(params, levels, strict=True):
        assert len(nodes) == expected_nodes
        assert all(len(node.children) == len(param.values) and node.selected_index == 0 for node in nodes)
        expected_nodes *= len(param.values)
    assert len(leaves) == expected_nodes and all(isinstance(leaf, widgets.Image) for leaf in leaves)

    # each control is linked, index to selected_index, to every Tab at its level and to nothing else
    assert all(isinstance(link, Link) for link in links)
    made_links = [w for w in constructed if isinstance(w, Link)]
    assert {id(x) for x in made_links} == {id(x) for x in links}
    for control, nodes in zip(controls, levels, strict=True):
        mine = [link for link in links if link.source[0] is control]
        assert all(link.source[1] == "index" and link.target[1] == "selected_index" for link in mine)
        assert sorted(id(link.target[0]) for link in mine) == sorted(id(node) for node in nodes)
    assert len(links) == sum(len(nodes) for nodes in levels)

    # the frame reached by choosing value indices (i, j, k) is the figure of those values
    for index in itertools.product(*(range(len(p.values)) for p in params)):
        node = frames
        for i in index:
            node = node.children[i]
        kwargs = {p.name: p.values[i] for p, i in zip(params, index, strict=True)}
        assert node.value == _png(title="toy", **kwargs), index


def test_controls_show_the_labels():
    ex = explore.explorable(plot_toy, [PARAMS[0], PARAMS[2]], dpi=DPI, alt=ALT)
    slope, colour = _parts(ex)[0]
    assert isinstance(slope, widgets.SelectionSlider) and slope.options == ("−1", "0", "2")
    assert slope.description == "slope (units/step)" and slope.index == 0
    assert PARAMS[1].control().options == ("0.0", "1.5")  # values shown as str() by default
    assert isinstance(colour, widgets.ToggleButtons) and colour.options == ("C0", "C1")


def test_frames_differ_between_values_and_repeat_exactly():
    pngs = [_png(slope=s) for s in (-1.0, 0.0, 2.0)]
    assert len(set(pngs)) == 3
    assert _png(slope=2.0) == pngs[2]  # the same figure drawn again gives the same bytes


def test_repr_is_stable_and_names_no_widget():
    first = explore.explorable(plot_toy, PARAMS[:2], dpi=DPI, alt=ALT)
    second = explore.explorable(plot_toy, PARAMS[:2], dpi=DPI, alt=ALT)
    text = first._repr_mimebundle_()["text/plain"]
    assert text == second._repr_mimebundle_()["text/plain"] == repr(first)
    assert text == "Explorable(plot_toy: slope [3] × offset [2], 6 frames)"
    ids = {w.model_id for w in (first, *first.children, *second.children)}
    assert not any(model_id in text for model_id in ids)
    assert not re.search(r"[0-9a-f]{32}", text)


def test_alt_text_follows_the_frames():
    ex = explore.explorable(plot_toy, PARAMS[:1], dpi=DPI, alt="A line whose slope <b>changes</b> & more")
    _, _, after = _parts(ex)
    assert len(after) == 1 and isinstance(after[0], widgets.HTML)
    style, _, text = after[0].value.partition("</style>")
    assert style.startswith("<style>") and ".widget-tab-bar { display: none" in style
    assert text == "A line whose slope &lt;b&gt;changes&lt;/b&gt; &amp; more"  # shown as text
    assert "chipbook-alt" in after[0]._dom_classes


@pytest.mark.parametrize("alt", ["", "   "])
def test_alt_text_is_required(alt):
    with pytest.raises(ValueError, match="alt"):
        explore.explorable(plot_toy, PARAMS[:1], dpi=DPI, alt=alt)


@pytest.mark.parametrize(
    ("params", "fixed", "message"),
    [
        ([], None, "1 to 3 parameters"),
        ([*PARAMS, Param("title", "t", ["a", "b"])], None, "1 to 3 parameters"),
        ([PARAMS[0], Param("slope", "again", [1, 2])], None, "distinct names"),
        ([PARAMS[0]], {"slope": 1.0}, "fixed sets explored parameters"),
        ([Param("slope", "s", list(range(10))), Param("offset", "o", list(range(10)))], None, "frames"),
    ],
)
def test_explorable_errors(params, fixed, message):
    with pytest.raises(ValueError, match=message):
        explore.explorable(plot_toy, params, fixed=fixed, dpi=DPI, alt=ALT)


def test_the_frame_limit_is_inclusive():
    side = int(explore.MAX_FRAMES ** 0.5)
    assert side * side <= explore.MAX_FRAMES < (side + 1) * (side + 1)
    with pytest.raises(ValueError, match=rf"{(side + 1) ** 2} frames; at most {explore.MAX_FRAMES}"):
        explore.explorable(plot_toy, [Param("slope", "s", list(range(side + 1))),
                                      Param("offset", "o", list(range(side + 1)))], alt=ALT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [1]}, "at least 2 values"),
        ({"values": []}, "at least 2 values"),
        ({"values": [1, 2], "shown": ["a", "a"]}, "label each value differently"),
        ({"values": [1, "1"]}, "label each value differently"),  # same text on the slider
        ({"values": [1, 2, 3], "shown": ["a", "b"]}, "one label per value"),
        ({"name": "not an identifier", "values": [1, 2]}, "identifier"),
        ({"values": [1, 2], "start": 2}, "start"),
        ({"values": [1, 2], "start": -1}, "start"),
        ({"values": [1, 2], "start": True}, "start"),
    ],
)
def test_param_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Param(**{"name": "x", "label": "x", **kwargs})


@pytest.mark.parametrize("colors", [2, 8, 96])
def test_figure_png_is_a_png_with_a_reduced_palette(colors):
    fig = plot_toy(slope=1.0, title="palette")
    fig.axes[0].imshow([[0, 1], [2, 3]], extent=(0, 2, -5, 5), cmap="viridis")  # many colours
    try:
        raw = explore.figure_png(fig, dpi=DPI, colors=colors)
    finally:
        plt.close(fig)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(raw))
    image.load()
    assert image.format == "PNG" and image.mode == "P"
    assert image.size == (3 * DPI, 2 * DPI)
    used = image.getcolors(maxcolors=256)
    assert used is not None and len(used) <= colors


def test_figure_png_argument_checks():
    fig = plot_toy()
    try:
        with pytest.raises(ValueError, match="dpi"):
            explore.figure_png(fig, dpi=10)
        with pytest.raises(ValueError, match="colors"):
            explore.figure_png(fig, colors=1)
        with pytest.raises(ValueError, match="dpi"):
            explore.figure_png(fig, dpi=80.0)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(("values", "buttons"), [
    (["H100", "MI300X"], True),          # names: categories
    ([None, 128], True),                 # "never" or a number: not a scale
    ([1, 2.5, 10], False),               # numbers: a slider
    ([True, False], True),               # truth values are not a scale either
])
def test_names_get_buttons_and_numbers_a_slider(values, buttons):
    control = Param("x", "x", values).control()
    assert isinstance(control, widgets.ToggleButtons if buttons else widgets.SelectionSlider)
    # an explicit choice wins
    forced = Param("x", "x", values, buttons=not buttons).control()
    assert isinstance(forced, widgets.SelectionSlider if buttons else widgets.ToggleButtons)


def test_explorable_opens_on_the_start_value(links):
    params = [Param("slope", "slope", [-1.0, 0.0, 2.0], start=2), Param("offset", "offset", [0.0, 1.5])]
    ex = explore.explorable(plot_toy, params, dpi=DPI, alt=ALT)
    (slope, offset), frames, _ = _parts(ex)
    assert slope.index == 2 and offset.index == 0
    levels, _ = _stacks_by_level(frames)
    assert [node.selected_index for node in levels[0]] == [2]
    assert [node.selected_index for node in levels[1]] == [0, 0, 0]
    shown = frames.children[frames.selected_index]
    assert shown.children[shown.selected_index].value == _png(slope=2.0, offset=0.0)


@pytest.mark.parametrize("height", [2.0, 3.34375, 2.0125])  # x 80 dpi: 160, 267.5 and 161 pixels
def test_figure_png_has_the_size_of_matplotlibs_own_png(height):
    fig, ax = plt.subplots(figsize=(4.0, height))
    ax.plot([0, 1], [0, 1])
    try:
        ours = Image.open(io.BytesIO(explore.figure_png(fig, dpi=80)))
        reference = io.BytesIO()
        fig.savefig(reference, format="png", dpi=80)
    finally:
        plt.close(fig)
    assert ours.size == Image.open(reference).size
