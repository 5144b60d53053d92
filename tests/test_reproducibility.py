"""What keeps the tests independent of the CPU: nbval leaves rendered images out of its comparison
(tests/nbval_images.py), so every figure a chapter glues or explores must be tested by reading its
artists back; and `make nbval-simd` lowers numpy's SIMD level with the environment that
scripts/lower_simd.py prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import chipbook.figures as figure_modules
from scripts.lower_simd import lower_environment
from tests.nbval_images import NOT_COMPARED, is_image

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
FIGURE_TESTS = [*sorted((REPO / "tests").glob("test_figures*.py")), Path(__file__)]


def _figure_functions() -> set[str]:
    """The names of the plot_… functions in chipbook.figures' modules."""
    names = set()
    for path in Path(figure_modules.__file__).parent.glob("*.py"):
        names |= set(re.findall(r"^def (plot_\w+)\(", path.read_text(encoding="utf-8"), re.MULTILINE))
    return names


def _called(notebook: Path) -> set[str]:
    """The plot_… names that the notebook's code cells call."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return set(re.findall(r"\b(plot_\w+)\(", code))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_every_figure_a_chapter_draws_is_tested_by_its_artists(notebook: Path) -> None:
    """nbval does not compare images, so each chipbook figure a chapter draws (glued or explored) must
    be named in a test that reads its artists back."""
    tested = "\n".join(path.read_text(encoding="utf-8") for path in FIGURE_TESTS)
    drawn = _called(notebook) & _figure_functions()
    assert drawn, f"{notebook.name} draws no chipbook figure: the check below would be empty"
    untested = sorted(name for name in drawn if not re.search(rf"\b{name}\(", tested))
    assert not untested, f"{notebook.name} draws figures no test reads back: {untested}"


@pytest.mark.parametrize("mime", ["image/png", "image/svg+xml", "application/papermill.record/image/png"])
def test_images_plain_or_glued_are_not_compared(mime: str) -> None:
    assert is_image(mime)
    assert mime in NOT_COMPARED


@pytest.mark.parametrize("mime", ["text/plain", "text/html", "text/markdown",
                                  "application/papermill.record/text/markdown",
                                  "application/papermill.record/text/plain"])
def test_text_plain_or_glued_is_still_compared(mime: str) -> None:
    assert not is_image(mime)
    assert mime not in NOT_COMPARED


def test_lower_simd_switches_off_every_found_feature_and_lowers_openblas_on_x86() -> None:
    assert lower_environment(["X86_V3", "X86_V4", "AVX512_ICL"], "x86_64") == {
        "NPY_DISABLE_CPU_FEATURES": "X86_V3,X86_V4,AVX512_ICL", "OPENBLAS_CORETYPE": "Sandybridge"}


def test_lower_simd_on_arm_sets_no_openblas_core() -> None:
    environment = lower_environment(["ASIMDHP", "ASIMDDP"], "aarch64")
    assert environment == {"NPY_DISABLE_CPU_FEATURES": "ASIMDHP,ASIMDDP"}


def test_lower_simd_with_nothing_beyond_the_baseline_switches_nothing_off() -> None:
    assert "NPY_DISABLE_CPU_FEATURES" not in lower_environment([], "x86_64")
