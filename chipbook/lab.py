"""The chapters' prose as JupyterLab shows it: every computed number, citation and chapter link in
place, with no change to the notebooks' Markdown.

The chapters write their prose for myst-nb: a number is a glue role (``{glue:md}`name```), a figure a
``{glue:figure}`` directive, a citation ``{cite:p}`key```, a link to a chapter ``{doc}`Title <file>```,
a glossary term ``{term}`text <Term>``` (shown in Lab as its text).
The HTML build resolves them. jupyterlab-myst, which renders MyST Markdown in JupyterLab (directives,
math, equation references), does not know glue (jupyterlab-myst issue 165) and has no bibliography, so
a reader in JupyterLab would read ``{glue:md}`ex1_small``` where the number belongs.

So the book's JupyterLab (``make lab``; its server configuration is book/_lab/) hands each notebook
to the browser with these roles replaced, in the Markdown cells, by what the HTML shows: the glued
values saved in the notebook's own outputs, "(Author et al., 2020)" linked to the source, a link to
the chapter's notebook, the glued figure as an image. The cell keeps its original source in its
metadata, and saving puts it back, so the file on disk never changes (a cell the reader edited keeps
the edit). jupyterlab-myst numbers a notebook's equations and resolves its references to them; a
reference to another chapter's equation becomes a link to that chapter with the number it shows there.

The functions here are pure: a notebook is the JSON dictionary nbformat reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where a presented cell keeps its original source.
METADATA_KEY = "chipbook_lab"
GLUE_PREFIX = "application/papermill.record/"

_ROLE = re.compile(r"\{(?P<role>glue(?::md|:text)?|cite(?::p|:t)?|doc|eq|term)\}`(?P<text>[^`]*)`")
#: A displayed equation, as jupyterlab-myst numbers them: a {math} directive (its :label: option) or
#: a $$ block with a "(label)" after it.
_EQUATION = re.compile(r"^(?:`{3,}|:{3,})\{math\}[^\n]*\n"
                       r"(?:(?::[\w-]+:[^\n]*\n)*?:label:[ \t]*(?P<label>\S+))?"
                       r"|^\$\$.*?\$\$[ \t]*(?:\((?P<dollar>[\w-]+)\))?", re.DOTALL | re.MULTILINE)
_GLUE_FIGURE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{glue:figure\}[ \t]+(?P<name>\S+)[ \t]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.DOTALL | re.MULTILINE)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_HEADING = re.compile(r"^#\s+(.+)$", re.MULTILINE)
_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")


@dataclass(frozen=True)
class Reference:
    """A bibliography entry as an author-year citation shows it."""

    authors: str  # "Brown et al.", "Shoeybi and Patwary", "Nvidia"
    year: str
    url: str = ""


# --- what a notebook holds -----------------------------------------------------------------------


def _check_notebook(notebook: Any) -> None:
    if not isinstance(notebook, Mapping) or not isinstance(notebook.get("cells"), list):
        raise ValueError("notebook must be a notebook's JSON dictionary, with a list of cells under 'cells'")


def glued(notebook: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The values the notebook's saved outputs glue, by name: each a dictionary of MIME type (without
    glue's record prefix) to data."""
    _check_notebook(notebook)
    values: dict[str, dict[str, Any]] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is None:
                continue
            data = output.get("data", {})
            values[name] = {mime.removeprefix(GLUE_PREFIX): value for mime, value in data.items()}
    return values


def as_text(data: Any) -> str:
    """An output's data or a cell's source as one string (nbformat may store it as a list of lines)."""
    return "".join(data) if isinstance(data, list) else str(data)


def cell_source(cell: Mapping[str, Any]) -> str:
    """A notebook cell's source as one string."""
    return as_text(cell.get("source", ""))


def equation_numbers(notebook: Mapping[str, Any]) -> dict[str, int]:
    """The number jupyterlab-myst gives each labelled equation of the notebook: displayed equations
    are counted in order through its Markdown cells, from 1."""
    _check_notebook(notebook)
    numbers = {}
    count = 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for match in _EQUATION.finditer(cell_source(cell)):
            count += 1
            label = match["label"] or match["dollar"]
            if label:
                numbers[label] = count
    return numbers


def notebook_title(notebook: Mapping[str, Any]) -> str | None:
    """The text of the notebook's first level-1 heading, or None when it has none."""
    _check_notebook(notebook)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            heading = _HEADING.search(cell_source(cell))
            if heading:
                return heading.group(1).strip()
    return None


# --- the bibliography ----------------------------------------------------------------------------


def _clean(text: str) -> str:
    """A BibTeX field without its protective braces."""
    return text.replace("{", "").replace("}", "").strip()


def _authors(last_names: list[str]) -> str:
    """Author-year style: one name, two joined by "and", three or more as the first "et al."."""
    if len(last_names) == 1:
        return last_names[0]
    if len(last_names) == 2:
        return f"{last_names[0]} and {last_names[1]}"
    return f"{last_names[0]} et al."


def load_bibliography(paths: Iterable[Path]) -> dict[str, Reference]:
    """Every entry of the BibTeX files, by key, as an author-year citation shows it: the authors'
    last names (or, for an entry without authors, its organization, institution, publisher or title),
    the year and the entry's URL or DOI."""
    from pybtex.database import parse_file  # only JupyterLab's server needs the bibliography

    references = {}
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"paths must name BibTeX files; {path} is not a file")
        for key, entry in parse_file(str(path)).entries.items():
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_clean(" ".join(person.last_names) or " ".join(person.first_names)) for person in people]
            names = [name for name in names if name.lower() != "others"]
            if not names:
                fields = ("organization", "institution", "publisher", "title")
                fallback = next((entry.fields[f] for f in fields if f in entry.fields), key)
                names = [_clean(fallback)]
            doi = entry.fields.get("doi", "")
            url = entry.fields.get("url", "") or (f"https://doi.org/{doi}" if doi else "")
            references[key] = Reference(_authors(names), _clean(entry.fields.get("year", "n.d.")), url)
    return references


def cite(keys: str, references: Mapping[str, Reference], *, textual: bool = False) -> str:
    """A citation of the comma-separated ``keys`` as Markdown: "(Brown et al., 2020; Touvron et al.,
    2023)", or with ``textual`` "Brown et al. (2020)"; each linked to its source where it has one.
    An unknown key is shown as itself, marked, so the reader sees it is missing."""
    parts = []
    for key in (k.strip() for k in keys.split(",") if k.strip()):
        reference = references.get(key)
        if reference is None:
            parts.append(f"[{key}?]")
            continue
        shown = reference.authors + (f" ({reference.year})" if textual else f", {reference.year}")
        parts.append(f"[{shown}]({reference.url})" if reference.url else shown)
    return "; ".join(parts) if textual else f"({'; '.join(parts)})"


# --- one Markdown cell ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the roles of one notebook's prose resolve against."""

    glue: Mapping[str, Mapping[str, Any]]
    references: Mapping[str, Reference]
    folder: Path  # the notebook's folder, where {doc} targets are found
    equations: Mapping[str, int]  # the notebook's own labelled equations

    def equation(self, label: str) -> str | None:
        """An {eq} role to an equation of another notebook in the folder, as a link "(n)" to that
        notebook, n as jupyterlab-myst numbers it there; None for the notebook's own equations, which
        jupyterlab-myst resolves itself (and for a label found nowhere, which it reports)."""
        if label in self.equations:
            return None
        for path in sorted(self.folder.glob("*.ipynb")):
            number = equation_numbers(json.loads(path.read_text(encoding="utf-8"))).get(label)
            if number is not None:
                return f"[({number})]({path.name})"
        return None

    def glue_value(self, name: str, *, markdown: bool, spec: str = "") -> str:
        """A glued value as the HTML shows it: its Markdown form (glue:md), else its text form,
        formatted by ``spec`` (glue:text's "name:spec"). A name no output glues is marked."""
        value = self.glue.get(name)
        if value is None:
            return f"[{name}: not computed; run the notebook]"
        if markdown and "text/markdown" in value:
            return as_text(value["text/markdown"])
        text = as_text(value.get("text/plain", "")).strip()
        return format(float(text), spec) if spec else text

    def doc_link(self, text: str) -> str:
        """A {doc} role as a Markdown link to the notebook (or Markdown page) it names."""
        titled = _TITLED.match(text.strip())
        target, title = (titled["target"], titled["title"]) if titled else (text.strip(), "")
        for suffix in (".ipynb", ".md"):
            path = self.folder / f"{target}{suffix}"
            if path.is_file():
                break
        else:
            return title or target
        if not title and suffix == ".ipynb":
            title = notebook_title(json.loads(path.read_text(encoding="utf-8"))) or target
        return f"[{title or target}]({target}{suffix})"

    def figure(self, name: str, body: str) -> str:
        """A {glue:figure} directive as a MyST figure of the glued image, with its options (name,
        alt text) and caption."""
        value = self.glue.get(name, {})
        mime = next((m for m in _IMAGES if m in value), None)
        if mime is None:
            return f"[figure {name}: not computed; run the notebook]"
        data = as_text(value[mime]).replace("\n", "")
        if mime == "image/svg+xml":
            data = base64.b64encode(data.encode()).decode()
        return f":::{{figure}} data:{mime};base64,{data}\n{body}:::"


def present_markdown(source: str, context: Context) -> str:
    """The Markdown with its glue, cite and doc roles and its glued figures resolved."""
    source = _GLUE_FIGURE.sub(lambda m: context.figure(m["name"], m["body"]), source)

    def role(match: re.Match[str]) -> str:
        kind, text = match["role"], match["text"]
        if kind in {"glue", "glue:md"}:  # "name:myst": the value is MyST, whose own roles resolve too
            name, _, form = text.strip().partition(":")
            value = context.glue_value(name, markdown=True)
            return present_markdown(value, context) if form == "myst" else value
        if kind == "glue:text":
            name, _, spec = text.strip().partition(":")
            return context.glue_value(name, markdown=False, spec=spec)
        if kind.startswith("cite"):
            return cite(text, context.references, textual=kind == "cite:t")
        if kind == "eq":
            return context.equation(text.strip()) or match.group(0)
        if kind == "term":  # the glossary is a page of the HTML book: Lab shows the word itself
            titled = _TITLED.match(text.strip())
            return titled["title"] if titled else text.strip()
        return context.doc_link(text)

    return _ROLE.sub(role, source)


# --- a whole notebook, and back ------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def present(notebook: dict[str, Any], references: Mapping[str, Reference], folder: Path) -> int:
    """Resolve the roles of every Markdown cell of ``notebook`` in place, keeping each changed cell's
    original source in its metadata; return how many cells changed."""
    _check_notebook(notebook)
    if not folder.is_dir():
        raise ValueError(f"folder must be the notebook's folder, got {folder}, which is not a folder")
    context = Context(glued(notebook), references, folder, equation_numbers(notebook))
    changed = 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        original = cell_source(cell)
        shown = present_markdown(original, context)
        if shown != original:
            cell["source"] = shown
            cell.setdefault("metadata", {})[METADATA_KEY] = {"source": original, "shown": _digest(shown)}
            changed += 1
    return changed


def restore(notebook: dict[str, Any]) -> None:
    """Undo :func:`present` in place before the notebook is saved: a cell still showing what was
    presented gets its original source back; a cell the reader edited keeps the edit."""
    _check_notebook(notebook)
    for cell in notebook.get("cells", []):
        kept = cell.get("metadata", {}).pop(METADATA_KEY, None)
        if kept is not None and _digest(cell_source(cell)) == kept["shown"]:
            cell["source"] = kept["source"]
