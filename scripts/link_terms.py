"""Link the first use of each glossary term in the chapters to the glossary (chipbook.terms).

    python scripts/link_terms.py notebooks/*.ipynb

Only Markdown cells change, so the notebooks' outputs stay valid; the script is idempotent: a term
already linked in a notebook is left alone. Re-run it after a chapter gains a new term, or after a
term is added to chipbook.terms.TERMS and book/glossary.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from chipbook.terms import link_terms


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        notebook = nbformat.read(path, as_version=4)
        changed = link_terms(notebook)
        if changed:
            nbformat.write(notebook, path)
        print(f"{path}: {changed} cells linked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
