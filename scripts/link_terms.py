"""Link the first use of each glossary term in the chapters to the glossary (chipbook.terms).

    python scripts/link_terms.py notebooks/*.ipynb

Only Markdown cells change, so the notebooks' outputs stay valid. Every link is removed and each
term's first use linked afresh, so the script is idempotent and moves a link when an earlier use
appears. Re-run it after editing a chapter's prose, or after a term is added to
chipbook.terms.TERMS and book/glossary.md; scripts/execute_notebooks.py runs it on every chapter it
executes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from chipbook.terms import relink_terms


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        notebook = nbformat.read(path, as_version=4)
        changed = relink_terms(notebook)
        if changed:
            nbformat.write(notebook, path)
        print(f"{path}: {changed} cells relinked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
