"""Test settings shared by every test file.

Property tests run with a fixed seed (hypothesis's derandomize) and no per-example deadline, so a run
of `make test` is repeatable and a slow machine does not fail a correct property: a property that
fails once fails every time, on every machine. Figures that a test draws are closed after it.
"""

import matplotlib.pyplot as plt
import pytest
from hypothesis import settings

settings.register_profile("book", derandomize=True, deadline=None, max_examples=60)
settings.load_profile("book")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
