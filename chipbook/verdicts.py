"""The book's verdicts on the essay's claims, kept in one place (``book/verdicts.csv``), and the claim
map that the first page draws from them. The file holds the book's own conclusions, not facts from a
source, so it lives with the book's pages rather than under data/.

Each row of the file is one claim of the essay: the part of its argument it belongs to, the claim in
our words, the verdict on a fixed scale (:data:`SCALE`), one line on what the essay gets right or
wrong, and where the chapter decides it (a section heading or a figure's name). The line may name the
chapter's glued values in braces, ``{be_lo}``, which :func:`finding` fills in from the chapter's saved
outputs, so that the map shows the numbers the chapter shows.

:func:`stated_verdicts` reads the verdicts the chapters themselves state, in the bold lead-ins of their
"Verdict" sections ("**2a, supported.**", "**Ten-to-one (claim 1b): partly supported.**"), so that a
test can hold the file and the chapters to the same verdicts.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from chipbook import data, terms
from chipbook.lab import as_text, glued

NOTEBOOKS = data.ROOT / "notebooks"
VERDICTS = data.ROOT / "book" / "verdicts.csv"
#: The fixed scale of verdicts, from the essay's side to the untested.
SCALE = ("supported", "partly supported", "contradicted", "not testable here", "not tested")
#: The parts of the essay's argument: its three reasons and its conclusion (and its other claims).
PARTS = {
    "larger": "Inference is possibly the larger market",
    "easier": "Inference is easier: memory, network and numerics",
    "nvidia": "NVIDIA dominates training",
    "conclusion": "The conclusion",
    "context": "The essay's other claims",
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_CLAIM = re.compile(r"\b(\d[a-z])\b")
_VERDICT = re.compile("|".join(sorted(SCALE, key=len, reverse=True)))
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


@dataclass(frozen=True)
class Claim:
    """One row of book/verdicts.csv."""

    claim: str
    part: str
    statement: str
    verdict: str
    finding: str
    chapter: str
    target: str


def load() -> list[Claim]:
    """The claims of book/verdicts.csv in order, each verdict checked against :data:`SCALE`, each part
    against :data:`PARTS`, each tested claim's chapter against the notebooks; a bad row raises
    DataError naming its line."""
    columns = [field.name for field in Claim.__dataclass_fields__.values()]
    claims = []
    with VERDICTS.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames != columns:
            raise data.DataError(f"{VERDICTS.name}:1: header must be {columns}, got {reader.fieldnames}")
        for row in reader:
            where = f"{VERDICTS.name}:{reader.line_num}"
            claim = Claim(**row)
            if claim.verdict not in SCALE:
                raise data.DataError(f"{where}: verdict must be one of {SCALE}, got {claim.verdict!r}")
            if claim.part not in PARTS:
                raise data.DataError(f"{where}: part must be one of {sorted(PARTS)}, got {claim.part!r}")
            tested = claim.verdict not in ("not testable here", "not tested")
            if tested and not (NOTEBOOKS / f"{claim.chapter}.ipynb").is_file():
                raise data.DataError(f"{where}: chapter must name a notebook, got {claim.chapter!r}")
            claims.append(claim)
    if len({c.claim for c in claims}) != len(claims):
        raise data.DataError(f"{VERDICTS.name}: claim identifiers must be unique")
    return claims


@cache
def _notebook(chapter: str) -> dict[str, Any]:
    path = NOTEBOOKS / f"{chapter}.ipynb"
    if not path.is_file():
        raise ValueError(f"chapter must name a notebook in notebooks/, got {chapter!r}")
    return json.loads(path.read_text(encoding="utf-8"))


def chapter_values(chapter: str) -> dict[str, str]:
    """The values the chapter's saved outputs glue, by name, as its prose shows them (their Markdown
    form, else their text)."""
    values = {}
    for name, mimes in glued(_notebook(chapter)).items():
        if "text/markdown" in mimes:
            values[name] = as_text(mimes["text/markdown"]).strip()
        elif "text/plain" in mimes:  # a repr: a string's quotes are not part of the value
            text = as_text(mimes["text/plain"]).strip()
            values[name] = text[1:-1] if len(text) > 1 and text[0] == text[-1] == "'" else text
    return values


def finding(claim: Claim, values: Mapping[str, str]) -> str:
    """The claim's finding with each ``{name}`` replaced by the chapter's glued value."""
    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise ValueError(f"finding of claim {claim.claim} names {match[1]!r}, which "
                             f"{claim.chapter or 'no chapter'} does not glue")
        return values[match[1]]
    return _PLACEHOLDER.sub(value, claim.finding)


def verdicts_in(prose: str) -> dict[str, str]:
    """The verdict a chapter's prose states for each claim, read from the bold lead-ins of its
    "## Verdict" section: the first claim identifier (1a, 2b, …) in a bold span, and the first verdict
    of :data:`SCALE` after it (the longest phrase where two overlap, "partly supported" before
    "supported"). A claim stated twice keeps its first verdict."""
    start = re.search(r"^## (?:\d+\.\s*)?Verdict.*$", prose, re.MULTILINE)
    if start is None:
        raise ValueError("prose must have a '## Verdict' section")
    section = prose[start.end():]
    end = re.search(r"^#{1,2} ", section, re.MULTILINE)
    section = section[:end.start()] if end else section
    stated: dict[str, str] = {}
    for span in _BOLD.findall(section):
        claim = _CLAIM.search(span)
        verdict = _VERDICT.search(span.lower(), claim.end()) if claim else None
        if claim and verdict:
            stated.setdefault(claim[1], verdict[0])
    return stated


def stated_verdicts(chapter: str) -> dict[str, str]:
    """The verdicts the chapter's "Verdict" section states (:func:`verdicts_in`), by claim."""
    return verdicts_in("\n".join(as_text(cell["source"]) for cell in _notebook(chapter)["cells"]
                                  if cell["cell_type"] == "markdown"))


def section_ids(chapter: str) -> set[str]:
    """The HTML ids a link can point at in the chapter: its headings' ids as Sphinx makes them, and its
    figures' names."""
    from docutils.nodes import make_id

    ids = set()
    for cell in _notebook(chapter)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = as_text(cell["source"])
        ids |= {make_id(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", source, re.MULTILINE)}
        ids |= set(re.findall(r"^:name:\s*(\S+)", source, re.MULTILINE))
    return ids


def _badge(verdict: str) -> str:
    kind = verdict.replace(" ", "-")
    return f'<span class="chipbook-badge chipbook-badge-{kind}">{html.escape(verdict.capitalize())}</span>'


def card(claim: Claim, values: Mapping[str, str], *, page: str = "../notebooks",
         pending: dict[str, re.Pattern[str]] | None = None, glossary: str = "glossary.html") -> str:
    """One claim of the map as an HTML card: its identifier and badge, the claim, the finding with the
    chapter's numbers, and a link to the section or figure that decides it. Where ``pending`` is
    given, the first use in the claim and finding of each of its glossary terms links to the glossary
    page (:func:`chipbook.terms.link_html`), and the linked terms leave ``pending``."""
    pending = {} if pending is None else pending
    statement = terms.link_html(claim.statement, pending, glossary)
    found = terms.link_html(finding(claim, values), pending, glossary)
    link = ""
    if claim.chapter:
        href = f"{page}/{claim.chapter}.html" + (f"#{claim.target}" if claim.target else "")
        title = claim.chapter.split("-", 1)[1].replace("-", " ").capitalize()
        link = (f'<a class="chipbook-card-link" href="{html.escape(href)}">'
                f"{html.escape(title)}: see where this is decided</a>")
    return (f'<div class="chipbook-card" data-claim="{html.escape(claim.claim)}" '
            f'data-verdict="{html.escape(claim.verdict)}">'
            f'<div class="chipbook-card-head">'
            f'<span class="chipbook-card-id">{html.escape(claim.claim)}</span>'
            f"{_badge(claim.verdict)}</div>"
            f'<p class="chipbook-card-claim">{statement}</p>'
            f'<p class="chipbook-card-finding">{found}</p>{link}</div>')


def dashboard(claims: list[Claim], values: Mapping[str, Mapping[str, str]], *,
              linked: Iterable[str] = ()) -> str:
    """The claim map as HTML: one group of cards per part of the essay's argument, in PARTS' order.
    ``values`` maps each chapter to its glued values. The first use in the map of each glossary term
    not in ``linked`` (terms the page links already, lower case) links to the glossary."""
    done = {term.lower() for term in linked}
    pending = {term: pattern for term, pattern in terms.PATTERNS.items() if term.lower() not in done}
    groups = []
    for part, title in PARTS.items():
        cards = [card(c, values.get(c.chapter, {}), pending=pending) for c in claims if c.part == part]
        if cards:
            groups.append(f'<section class="chipbook-map-part"><h3>{html.escape(title)}</h3>'
                          f'<div class="chipbook-cards">{"".join(cards)}</div></section>')
    return f'<div class="chipbook-map">{"".join(groups)}</div>'


def reading_minutes(chapter: str, words_per_minute: int = 200) -> int:
    """Minutes to read the chapter's prose (its Markdown cells, equations and figures not counted) at
    ``words_per_minute``, rounded up to the next five; 200 to 250 words a minute is the usual estimate
    for technical text."""
    if words_per_minute <= 0:
        raise ValueError(f"words_per_minute must be positive, got {words_per_minute}")
    words = sum(len(as_text(cell["source"]).split()) for cell in _notebook(chapter)["cells"]
                if cell["cell_type"] == "markdown")
    return 5 * -(-words // (5 * words_per_minute))
