"""Execute notebooks in order, each from a fresh kernel, and save them with their widget state.

Usage: python scripts/execute_notebooks.py NOTEBOOK [NOTEBOOK ...]
Prints each notebook's execution time. Cell timings are not recorded, so that a re-run that
computes the same outputs leaves the file unchanged. A chapter (a notebook in notebooks/) and the
first page (book/intro.ipynb) first have
the first use of each glossary term linked afresh (chipbook.terms.relink_terms, Markdown only), so that a term
added to the glossary reaches every chapter when the chapters are next executed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from chipbook.terms import relink_terms


def run(notebook: nbformat.NotebookNode, folder: Path, timeout: int = 600) -> float:
    """Execute ``notebook`` in memory from a fresh kernel started in ``folder``, saving its widget
    state in its metadata; return the seconds it took."""
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def execute(path: Path) -> float:
    """Execute the notebook at ``path`` in place from a fresh kernel; return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    if path.resolve().parent.name == "notebooks" or path.name == "intro.ipynb":
        relink_terms(notebook)
    seconds = run(notebook, path.parent)
    nbformat.write(notebook, path)
    return seconds


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: execute_notebooks.py NOTEBOOK [NOTEBOOK ...]")
    for name in paths:
        seconds = execute(Path(name))
        print(f"{name}: executed in {seconds:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
