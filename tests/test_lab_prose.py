"""chipbook.lab, the prose as JupyterLab shows it: each role becomes what a reader of the HTML reads
(the expected strings are written out here by hand), and saving gives back the file's Markdown."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from chipbook import lab

REPO = Path(__file__).resolve().parents[1]
BIB = """
@article{brown2020language,
  author = {Tom B. Brown and Benjamin Mann and Nick Ryder},
  title = {Language Models are Few-Shot Learners},
  year = {2020},
  url = {https://arxiv.org/abs/2005.14165}
}
@misc{shoeybi2019megatron,
  author = {Mohammad Shoeybi and Mostofa Patwary},
  title = {Megatron-LM},
  year = {2019},
  doi = {10.48550/arXiv.1909.08053}
}
@misc{nvidia2024h100,
  organization = {{NVIDIA}},
  title = {H100 Tensor Core GPU},
  year = {2024}
}
"""


def _glue_output(name: str, data: dict[str, str]) -> dict:
    return {"output_type": "display_data", "metadata": {"scrapbook": {"name": name, "mime_prefix":
            lab.GLUE_PREFIX}}, "data": {lab.GLUE_PREFIX + mime: value for mime, value in data.items()}}


def _notebook(*markdown: str) -> dict:
    outputs = [_glue_output("ex_small", {"text/markdown": "1.5", "text/plain": "<Markdown>"}),
               _glue_output("ratio", {"text/plain": "3.14159"}),
               _glue_output("label", {"text/plain": "'Groq'"}),
               _glue_output("links", {"text/markdown": "{doc}`02-other` first", "text/plain": "<Markdown>"}),
               _glue_output("fig_a", {"image/png": "iVBORw0KGgo=\n", "text/plain": "<Figure>"})]
    cells = [{"cell_type": "markdown", "metadata": {}, "source": text} for text in markdown]
    cells.append({"cell_type": "code", "metadata": {}, "source": "glue(...)", "outputs": outputs,
                  "execution_count": 1})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def references(tmp_path: Path) -> dict[str, lab.Reference]:
    path = tmp_path / "references.bib"
    path.write_text(BIB, encoding="utf-8")
    return lab.load_bibliography([path])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with a second chapter, which defines equation eq-other as its second equation."""
    other = _notebook("# Other chapter\n\n```{math}\n:label: eq-first\na\n```\n",
                      "```{math}\n:label: eq-other\nb\n```")
    (tmp_path / "02-other.ipynb").write_text(json.dumps(other), encoding="utf-8")
    return tmp_path


def _shown(text: str, references, folder) -> str:
    notebook = _notebook(text)
    lab.present(notebook, references, folder)
    return notebook["cells"][0]["source"]


def test_bibliography_gives_author_year(references) -> None:
    assert references["brown2020language"] == lab.Reference("Brown et al.", "2020", "https://arxiv.org/abs/2005.14165")
    assert references["shoeybi2019megatron"] == lab.Reference(
        "Shoeybi and Patwary", "2019", "https://doi.org/10.48550/arXiv.1909.08053")
    assert references["nvidia2024h100"] == lab.Reference("NVIDIA", "2024", "")


@pytest.mark.parametrize(("text", "expected"), [
    ("About {glue:md}`ex_small` tokens.", "About 1.5 tokens."),
    ("Ratio {glue:text}`ratio:.2f` and {glue}`ex_small`.", "Ratio 3.14 and 1.5."),
    ("Chip {glue:text}`label`.", "Chip 'Groq'."),  # a string's text form, as myst-nb shows it
    ("As shown {cite:p}`brown2020language`.",
     "As shown ([Brown et al., 2020](https://arxiv.org/abs/2005.14165))."),
    ("{cite:t}`nvidia2024h100` says so.", "NVIDIA (2024) says so."),
    ("Two {cite:p}`nvidia2024h100, shoeybi2019megatron`.",
     "Two (NVIDIA, 2024; [Shoeybi and Patwary, 2019](https://doi.org/10.48550/arXiv.1909.08053))."),
    ("Unknown {cite:p}`nobody1900`.", "Unknown ([nobody1900?])."),
    ("See {doc}`the other chapter <02-other>`.", "See [the other chapter](02-other.ipynb)."),
    ("See {doc}`02-other`.", "See [Other chapter](02-other.ipynb)."),
    ("Equation {eq}`eq-other` there.", "Equation [(2)](02-other.ipynb) there."),
    ("Missing {glue:md}`nothing`.", "Missing [nothing: not computed; run the notebook]."),
    ("Read {glue:md}`links:myst`.", "Read [Other chapter](02-other.ipynb) first."),  # MyST inside the value
    ("The {term}`KV cache <KV cache>` grows.", "The KV cache grows."),
    ("Read {term}`MFU` as utilisation.", "Read MFU as utilisation."),
])
def test_roles_read_as_in_the_html(text: str, expected: str, references, folder) -> None:
    assert _shown(text, references, folder) == expected


def test_own_equations_are_left_to_jupyterlab_myst(references, folder) -> None:
    text = "```{math}\n:label: eq-here\nx\n```\n\nBy {eq}`eq-here`."
    notebook = _notebook(text)
    assert lab.present(notebook, references, folder) == 0
    assert notebook["cells"][0]["source"] == text


def test_glued_figure_becomes_a_myst_figure_of_the_saved_image(references, folder) -> None:
    text = "```{glue:figure} fig_a\n:name: fig-a\n:alt: Bars.\n\nThe caption.\n```\n\nAfter."
    assert _shown(text, references, folder) == (":::{figure} data:image/png;base64,iVBORw0KGgo=\n"
                                                ":name: fig-a\n:alt: Bars.\n\nThe caption.\n:::\n\nAfter.")


def test_saving_restores_the_files_markdown_unless_the_reader_edited_it(references, folder) -> None:
    notebook = _notebook("About {glue:md}`ex_small` tokens.", "Cites {cite:p}`brown2020language`.", "Plain.")
    original = copy.deepcopy(notebook)
    assert lab.present(notebook, references, folder) == 2
    notebook["cells"][1]["source"] = "My own words."
    lab.restore(notebook)
    assert notebook["cells"][0] == original["cells"][0]
    assert notebook["cells"][1]["source"] == "My own words."
    assert notebook["cells"][1]["metadata"] == {}
    assert notebook["cells"][2] == original["cells"][2]


PAGES = [*sorted((REPO / "notebooks").glob("*.ipynb")), REPO / "book" / "intro.ipynb"]


@pytest.mark.parametrize("chapter", PAGES, ids=lambda path: path.name)
def test_every_chapter_reads_without_glue_cite_or_doc_roles(chapter: Path) -> None:
    """Every glue, cite and doc role of the chapters resolves: to saved outputs, to entries of the
    book's bibliography, to notebooks that exist."""
    notebook = json.loads(chapter.read_text(encoding="utf-8"))
    references = lab.load_bibliography([REPO / "book" / "references.bib"])
    lab.present(notebook, references, chapter.parent)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            for marker in ("{glue", "{cite", "{doc}", "{term}", "not computed; run the notebook", "?])"):
                assert marker not in text, f"{chapter.name}: {marker!r} left in {text[:200]!r}"


@pytest.mark.parametrize("notebook", [None, {}, {"cells": "not a list"}])
def test_a_malformed_notebook_is_refused(notebook, references, folder) -> None:
    with pytest.raises(ValueError, match="notebook must be"):
        lab.present(notebook, references, folder)


def test_a_missing_bibliography_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="paths must name BibTeX files"):
        lab.load_bibliography([tmp_path / "missing.bib"])
