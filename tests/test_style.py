"""chipbook.style: the book's style is applied inside a plot function and nowhere else, and its
palette stays distinguishable for readers with a colour-vision deficiency.

The deficiency check simulates dichromacy with the severity-1.0 matrices of Machado, Oliveira and
Fernandes (2009, "A Physiologically-based Model for Simulation of Color Vision Deficiency", IEEE
TVCG 15(6), supplementary data; the same values colorspacious ships), applied to linear sRGB, and
measures colour differences as CIE 1976 ΔE*ab in CIELAB (D65).
"""

from __future__ import annotations

import io
import itertools

import matplotlib
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from chipbook import style

matplotlib.use("Agg")

MACHADO_2009 = {  # severity 1.0, rows map linear (R, G, B) to the simulated linear RGB
    "protanopia": [[0.152286, 1.052583, -0.204868],
                   [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968],
                     [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779],
                   [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805],   # IEC 61966-2-1
                        [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]])
# A ΔE*ab of about 2.3 is just noticeable (Sharma & Trussell 1997); lines in a chart must be told
# apart at a glance, so this asks for several times that. It is a rule of thumb, not a standard;
# the negative control below shows that it does reject palettes known to confuse these readers.
MIN_DELTA_E = 10.0


def _linear(rgb):
    rgb = np.asarray(rgb, float)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb):
    white = SRGB_TO_XYZ @ np.ones(3)
    xyz = SRGB_TO_XYZ @ np.clip(linear_rgb, 0, 1) / white
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _seen(colour, deficiency):
    matrix = np.eye(3) if deficiency is None else np.array(MACHADO_2009[deficiency])
    return _lab(matrix @ _linear(mcolors.to_rgb(colour)))


def _min_delta_e(colours, deficiency):
    return min((np.linalg.norm(_seen(a, deficiency) - _seen(b, deficiency)), a, b)
               for a, b in itertools.combinations(colours, 2))


def test_colour_helpers_against_reference_values():
    # sRGB red in CIELAB (D65): L 53.24, a 80.09, b 67.20 (Lindbloom's calculator, CIE formulas)
    np.testing.assert_allclose(_seen("#FF0000", None), [53.24, 80.09, 67.20], atol=0.05)
    np.testing.assert_allclose(_seen("#FFFFFF", None), [100, 0, 0], atol=1e-9)
    # the simulation matrices keep white white (rows sum to 1), so only hue information is lost
    for matrix in MACHADO_2009.values():
        np.testing.assert_allclose(np.sum(matrix, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("deficiency", [None, "protanopia", "deuteranopia", "tritanopia"])
def test_palette_stays_distinguishable(deficiency):
    distance, a, b = _min_delta_e(list(style.PALETTE.values()), deficiency)
    assert distance >= MIN_DELTA_E, f"{a} and {b} are {distance:.1f} apart for {deficiency}"


@pytest.mark.parametrize("deficiency", ["protanopia", "deuteranopia", "tritanopia"])
def test_training_and_serving_colours_are_far_apart(deficiency):
    # the two colours every chart of the book contrasts must stay far apart, not merely apart
    distance = np.linalg.norm(_seen(style.TRAIN, deficiency) - _seen(style.SERVE, deficiency))
    assert distance >= 5 * MIN_DELTA_E


def test_negative_control_the_check_rejects_a_confusable_palette():
    # matplotlib's tab10 red/green and orange/green pairs are the textbook confusions
    tab10 = [f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple")]
    assert _min_delta_e(tab10, "deuteranopia")[0] < MIN_DELTA_E
    assert _min_delta_e(tab10, "protanopia")[0] < MIN_DELTA_E


def test_palette_is_okabe_ito():
    # Okabe & Ito 2008, "Color Universal Design": the eight colours, in 0-255 RGB
    okabe_ito = {(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                 (213, 94, 0), (204, 121, 167)}
    got = {tuple(round(255 * c) for c in mcolors.to_rgb(h)) for h in style.PALETTE.values()}
    assert got == okabe_ito


# --- styled() leaves the global settings alone -----------------------------------------------------


@style.styled
def _plot_something(n=3):
    fig, ax = plt.subplots()
    for i in range(n):
        ax.plot([0, 1], [i, i + 1], label=str(i))
    ax.legend()
    return fig


def test_styled_draws_in_the_book_style_and_restores_rcparams():
    with matplotlib.rc_context({"font.size": 5.0, "lines.linewidth": 0.5, "figure.figsize": (2.0, 1.0)}):
        before = dict(matplotlib.rcParams)
        fig = _plot_something()
        fig.savefig(io.BytesIO(), format="png")  # drawing happens after the decorated call returns
        after = dict(matplotlib.rcParams)
        try:
            assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 4.0))
            lines = fig.axes[0].get_lines()
            assert [mcolors.to_hex(line.get_color()) for line in lines] == [
                c.lower() for c in list(style.PALETTE.values())[:3]]
            assert all(line.get_linewidth() == 2.2 for line in lines)
            assert fig.axes[0].xaxis.label.get_fontsize() == 12
        finally:
            plt.close(fig)
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(np.asarray(before[k], dtype=object),
                                                     np.asarray(after[k], dtype=object))]
    assert changed == []
    assert matplotlib.rcParams["font.size"] != 5.0  # and the outer context was restored too


def test_styled_keeps_the_function_name():
    assert _plot_something.__name__ == "_plot_something"


def test_use_applies_the_style_globally():
    with matplotlib.rc_context():
        style.use()
        assert matplotlib.rcParams["font.size"] == 12
        assert matplotlib.rcParams["axes.spines.top"] is False
