"""Glossary links: the terms list against the glossary page and the chapters (chipbook.terms)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from chipbook import terms

REPO = Path(__file__).resolve().parents[1]
# the chapters and the first page
CHAPTERS = [*sorted((REPO / "notebooks").glob("*.ipynb")), REPO / "book" / "intro.ipynb"]


def _glossary_terms() -> set[str]:
    """The terms the glossary page defines: the unindented lines of its {glossary} block."""
    page = (REPO / "book" / "glossary.md").read_text(encoding="utf-8")
    block = re.search(r"^```\{glossary\}\n(.*?)^```", page, re.DOTALL | re.MULTILINE)
    assert block, "book/glossary.md has no glossary block"
    return {line.strip() for line in block[1].splitlines()
            if line.strip() and not line[0].isspace() and not line.startswith(":")}  # not its options


def _notebook(*cells: str) -> dict:
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": text} for text in cells]}


def test_the_terms_list_is_the_glossary() -> None:
    assert set(terms.TERMS) == _glossary_terms()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.name)
def test_every_term_a_chapter_uses_links_to_the_glossary_at_its_first_use(chapter: Path) -> None:
    """Unlinking the chapter's terms and linking them afresh gives the chapter back: every term used in
    its prose is linked, at its first use, and only there."""
    notebook = json.loads(chapter.read_text(encoding="utf-8"))
    markdown = [cell for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
    linked = ["".join(cell["source"]) for cell in markdown]
    assert any("{term}" in text for text in linked), f"{chapter.name} links no glossary term"
    for cell, text in zip(markdown, linked, strict=True):
        cell["source"] = terms.unlink_terms(text)
    terms.link_terms(notebook)
    assert ["".join(cell["source"]) for cell in markdown] == linked


def test_the_first_use_in_prose_is_linked_and_the_rest_left_alone() -> None:
    notebook = _notebook("## The KV cache\n\n`KV cache` and $KV cache$ and {glue:md}`KV cache`.",
                         "Then the KV cache, and the KV cache again; MFU and HBM.")
    assert terms.link_terms(notebook) == 1
    assert notebook["cells"][0]["source"].startswith("## The KV cache")
    assert notebook["cells"][1]["source"] == ("Then the {term}`KV cache <KV cache>`, and the KV cache again; "
                                              "{term}`MFU <MFU>` and {term}`HBM <HBM>`.")


def test_a_heading_is_not_prose_but_the_text_under_it_is() -> None:
    notebook = _notebook("# The KV cache\n\nWhy the KV cache grows.\n\n(kv-label)=\nAnd MFU.")
    assert terms.link_terms(notebook) == 1
    assert notebook["cells"][0]["source"] == (
        "# The KV cache\n\nWhy the {term}`KV cache <KV cache>` grows.\n\n(kv-label)=\nAnd {term}`MFU <MFU>`.")


def test_the_body_of_an_admonition_or_dropdown_is_prose_but_its_title_and_options_are_not() -> None:
    notebook = _notebook("```{admonition} The KV cache\n:class: MFU\nWhy the KV cache grows.\n```",
                         "::::{dropdown} MFU\nThe MFU.\n```{math}\nMFU\n```\n::::")
    terms.link_terms(notebook)
    assert notebook["cells"][0]["source"] == (
        "```{admonition} The KV cache\n:class: MFU\nWhy the {term}`KV cache <KV cache>` grows.\n```")
    assert notebook["cells"][1]["source"] == (
        "::::{dropdown} MFU\nThe {term}`MFU <MFU>`.\n```{math}\nMFU\n```\n::::")


def test_fenced_blocks_links_and_directive_options_are_not_prose() -> None:
    text = ("```{glue:figure} fig_x\n:name: fig-kv-cache\n:alt: The KV cache.\n\nThe KV cache.\n```\n\n"
            "[the KV cache](https://example.org) and <span title=\"KV cache\">x</span>.")
    notebook = _notebook(text)
    assert terms.link_terms(notebook) == 0
    assert notebook["cells"][0]["source"] == text


def test_linking_twice_changes_nothing_and_words_match_in_any_case() -> None:
    notebook = _notebook("Prefill, then decode.")
    terms.link_terms(notebook)
    once = copy.deepcopy(notebook)
    assert terms.link_terms(notebook) == 0
    assert notebook == once
    assert once["cells"][0]["source"] == "{term}`Prefill <Prefill>`, then {term}`decode <Decode>`."


def test_a_longer_term_wins_over_one_inside_it() -> None:
    notebook = _notebook("All-to-all traffic.")
    terms.link_terms(notebook, {"All-to-all": r"(?i)\ball-to-all\b", "All": r"(?i)\ball\b"})
    assert notebook["cells"][0]["source"] == "{term}`All-to-all <All-to-all>` traffic."


def test_a_malformed_notebook_is_refused() -> None:
    with pytest.raises(ValueError, match="notebook"):
        terms.link_terms({"cells": "none"})


def test_relinking_moves_a_link_to_the_first_use_and_keeps_other_cells() -> None:
    notebook = _notebook("The MFU of a run.", "Its {term}`MFU <MFU>` again.", "No term here.")
    assert terms.relink_terms(notebook) == 2
    assert [cell["source"] for cell in notebook["cells"]] == [
        "The {term}`MFU <MFU>` of a run.", "Its MFU again.", "No term here."]
    assert terms.relink_terms(notebook) == 0
    with pytest.raises(ValueError, match="notebook"):
        terms.relink_terms({"cells": None})


@pytest.mark.parametrize(("term", "anchor"), [
    ("KV cache", "term-KV-cache"), ("Zipf's law", "term-Zipf-s-law"), ("6ND", "term-6ND"),
    ("H100-equivalents", "term-H100-equivalents")])
def test_glossary_ids_are_sphinxs(term: str, anchor: str) -> None:
    # the ids Sphinx wrote for these terms in the built glossary page
    assert terms.glossary_id(term) == anchor


def test_glossary_id_of_an_unknown_term_is_refused() -> None:
    with pytest.raises(ValueError, match="term"):
        terms.glossary_id("Not a term")


def test_html_links_the_first_use_of_each_term_across_texts() -> None:
    pending = {term: terms.PATTERNS[term] for term in ("KV cache", "MFU")}
    first = terms.link_html("a <b> KV cache, a KV cache", pending, "g.html")
    assert first == ('a &lt;b&gt; <a class="reference internal" href="g.html#term-KV-cache">'
                     '<span class="xref std std-term">KV cache</span></a>, a KV cache')
    assert list(pending) == ["MFU"]
    assert terms.link_html("KV cache and MFU", pending, "g.html").count("<a ") == 1 and not pending
