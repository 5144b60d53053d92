"""A pytest plugin (loaded for every run by ``addopts`` in pyproject.toml) that keeps nbval from comparing
rendered images byte for byte.

nbval compares each saved output with a fresh run. It already leaves plain ``image/png`` and
``image/jpeg`` out, but not the images that myst-nb's ``glue`` records
(``application/papermill.record/image/png``) nor SVG. A PNG's bytes change with the CPU: numpy's SIMD
kernels differ in the last bit between dispatch levels (AVX-512 or not, x86 or ARM), and antialiasing
turns one ulp into other pixels. So every image output, plain or glued, is left out of the comparison
here; everything a reader reads (text, tables, glued numbers and words, the figure's text form) is
still compared strictly. What a figure shows is tested by reading its artists back
(tests/test_figures*.py).
"""

from __future__ import annotations

import pytest
from nbval.plugin import IPyNbCell

#: The MIME types of rendered images, and the prefix under which myst-nb's glue records an output.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/svg+xml")
GLUE_PREFIX = "application/papermill.record/"
NOT_COMPARED = IMAGE_TYPES + tuple(GLUE_PREFIX + mime for mime in IMAGE_TYPES)


def is_image(mime: str) -> bool:
    """Whether an output of this MIME type is a rendered image (plain or recorded by glue)."""
    return mime.removeprefix(GLUE_PREFIX) in IMAGE_TYPES


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add every image type to the skip list of each notebook that nbval collected."""
    notebooks = {item.parent for item in items if isinstance(item, IPyNbCell)}
    for notebook in notebooks:
        skipped = tuple(getattr(notebook, "skip_compare", ()))
        notebook.skip_compare = skipped + tuple(mime for mime in NOT_COMPARED if mime not in skipped)
