"""Link each glossary term to the glossary (book/glossary.md) at its first use in a chapter.

:data:`TERMS` maps each term of the glossary to the pattern of its uses in prose. :func:`link_terms`
rewrites a notebook's Markdown cells so that the first use of each term becomes a ``{term}`` role
(``{term}`KV cache <KV cache>```), leaving alone what is not prose: headings, fenced blocks
(code, math, directives with their options and captions), inline math and code, roles (glue,
citations, existing terms), links and HTML. A term already linked anywhere in the notebook is left as
it is, so running it twice changes nothing. :func:`relink_terms` removes every link first and links
afresh, which moves a link to an earlier first use; scripts/link_terms.py applies it to the chapters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from chipbook.lab import cell_source

#: Each glossary term and the pattern of its uses. An all-capitals or digit pattern matches as
#: written; a word pattern matches in any case.
TERMS: dict[str, str] = {
    "6ND": r"\b6ND\b",
    "amax": r"\bamax\b",
    "Accelerator-hours": r"(?i)\baccelerator-hours?\b",
    "All-reduce": r"(?i)\ball-reduces?\b",
    "All-to-all": r"(?i)\ball-to-all\b",
    "Algorithm bandwidth": r"(?i)\balgorithm bandwidth\b",
    "Bus bandwidth": r"(?i)\bbus bandwidth\b",
    "Bisection bandwidth": r"(?i)\bbisection\b",
    "Compute-optimal": r"(?i)\bcompute-optimal\b",
    "Critical batch size": r"(?i)\bcritical batch size\b",
    "Data parallelism": r"(?i)\bdata parallelism\b",
    "Expert parallelism": r"(?i)\bexpert parallelism\b",
    "Fat tree": r"(?i)\bfat trees?\b",
    "H100-equivalents": r"(?i)\bH100-equivalents?\b",
    "InfiniBand": r"\bInfiniBand\b",
    "Log-uniform": r"(?i)\blog-uniform(?:ly)?\b",
    "LoRA": r"\bLoRA\b",
    "Micro-batch": r"(?i)\bmicro-batch(?:es)?\b",
    "NCCL": r"\bNCCL\b",
    "NVLink": r"\bNVLink\b",
    "Parallel layout": r"\bTP\d+(?: CP\d+)? PP\d+ DP\d+\b|(?i:\bparallel layouts?\b)",
    "Pipeline parallelism": r"(?i)\bpipeline parallelism\b",
    "TDP": r"\bTDP\b",
    "ZeRO": r"\bZeRO\b",
    "bf16": r"(?i)\bbf16\b",
    "Decode": r"(?i)\bdecode\b",
    "E4M3": r"\bE4M3\b",
    "E5M2": r"\bE5M2\b",
    "E8M0": r"\bE8M0\b",
    "FP8": r"\bFP8\b",
    "Grouped-query attention": r"(?i)\bgrouped-query attention\b",
    "Halving-doubling": r"(?i)\bhalving-doubling\b",
    "HBM": r"\bHBM\b",
    "Held-out loss": r"(?i)\bheld-out loss\b",
    "In-network reduction": r"(?i)\bin-network reduction\b",
    "Kahan summation": r"\bKahan\b",
    "KV cache": r"\bKV cache\b",
    "Loss scaling": r"(?i)\bloss scaling\b",
    "Master weights": r"(?i)\bmaster (?:weights?|copy)\b",
    "MFU": r"\bMFU\b",
    "Mixture of experts": r"(?i)\bmixture[- ]of[- ]experts\b",
    "MLA": r"\bMLA\b",
    "Monte Carlo": r"\bMonte Carlo\b",
    "MX": r"\bMX\b",
    "NAdam": r"\bNAdam\b",
    "One-shot and two-shot all-reduce": r"(?i)\b(?:one|two)-shot\b",
    "Prefill": r"(?i)\bprefill\b",
    "Recomputation": r"(?i)\brecomputation\b",
    "Ridge point": r"(?i)\bridge point\b",
    "Roofline": r"(?i)\broofline\b",
    "Scale-up": r"(?i)\bscale-up\b",
    "Scale-out": r"(?i)\bscale-out\b",
    "SRAM": r"\bSRAM\b",
    "Stochastic rounding": r"(?i)\bstochastic rounding\b",
    "Subnormal": r"(?i)\bsubnormals?\b",
    "Swamping": r"(?i)\bswamping\b",
    "Tensor core": r"(?i)\btensor cores?\b",
    "TF32": r"\bTF32\b",
    "Tensor parallelism": r"(?i)\btensor parallelism\b",
    "Torus": r"(?i)\btor(?:us|i)\b",
    "ulp": r"\bulp\b",
    "Zipf's law": r"\bZipf(?:'s law)?\b",
}
PATTERNS = {term: re.compile(pattern) for term, pattern in TERMS.items()}

#: Directives whose body is prose: their fences, titles and options are not, what they hold is.
PROSE_DIRECTIVES = ("admonition", "note", "tip", "important", "warning", "seealso", "dropdown")

#: What is not prose, in the order tried: fenced blocks (other than prose directives, of which only the
#: fence lines and options), headings, target labels, display and inline math, roles, inline code,
#: links and HTML tags.
_NOT_PROSE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})(?!\{(?:" + "|".join(PROSE_DIRECTIVES) + r")\}).*?^(?P=fence)[ \t]*$"
    r"|^(?:`{3,}|:{3,})[^\n]*$|^:[\w-]+:[^\n]*$"
    r"|^#[^\n]*$|^\([^\n]*\)=[ \t]*$"
    r"|\$\$.*?\$\$|\$[^$\n]+\$"
    r"|\{[\w:-]+\}`[^`]*`|`[^`\n]*`"
    r"|!?\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]+>",
    re.DOTALL | re.MULTILINE)
_TERM_ROLE = re.compile(r"\{term\}`(?P<text>[^`<]*?)\s*(?:<(?P<target>[^`>]+)>)?`")


def linked_terms(text: str) -> set[str]:
    """The glossary terms (lower case, as Sphinx matches them) that ``text``'s {term} roles name."""
    return {(m["target"] or m["text"]).strip().lower() for m in _TERM_ROLE.finditer(text)}


def _prose_spans(text: str) -> list[tuple[int, int]]:
    spans, position = [], 0
    for match in _NOT_PROSE.finditer(text):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, len(text)))
    return spans


def _link_cell(text: str, pending: dict[str, re.Pattern[str]]) -> str:
    """Link in ``text`` the first use of each term of ``pending``, removing it from ``pending``."""
    found: list[tuple[int, int, str, re.Pattern[str]]] = []
    for start, end in _prose_spans(text):
        for term, pattern in list(pending.items()):
            match = pattern.search(text, start, end)
            if match:
                found.append((match.start(), match.end(), term, pattern))
                del pending[term]
    kept: list[tuple[int, int, str]] = []
    # Earliest first; of two uses that start together, the longer.
    for start, end, term, pattern in sorted(found, key=lambda use: (use[0], -use[1])):
        if kept and start < kept[-1][1]:
            pending[term] = pattern  # inside a longer term's use: its next use is linked instead
            continue
        kept.append((start, end, term))
    for start, end, term in reversed(kept):
        text = f"{text[:start]}{{term}}`{text[start:end]} <{term}>`{text[end:]}"
    return text


def link_terms(notebook: dict[str, Any], terms: Mapping[str, str] | None = None) -> int:
    """Link the first use of each glossary term in the notebook's Markdown cells, in place; return how
    many cells changed. Terms the notebook already links are skipped."""
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError("notebook must be a notebook's JSON dictionary, with a list of cells under 'cells'")
    patterns = PATTERNS if terms is None else {t: re.compile(p) for t, p in terms.items()}
    cells = [cell for cell in notebook["cells"] if cell.get("cell_type") == "markdown"]
    already = set().union(*(linked_terms(cell_source(cell)) for cell in cells))
    pending = {term: pattern for term, pattern in patterns.items() if term.lower() not in already}
    changed = 0
    for cell in cells:
        if not pending:
            break
        original = cell_source(cell)
        linked = _link_cell(original, pending)
        if linked != original:
            cell["source"] = linked
            changed += 1
    return changed


def unlink_terms(text: str) -> str:
    """``text`` with every {term} role replaced by the text it shows."""
    return _TERM_ROLE.sub(lambda m: m["text"] or m["target"], text)


def glossary_id(term: str) -> str:
    """The HTML id Sphinx gives a glossary term: "term-" and the term with every run of other
    characters than letters and digits made one hyphen ("KV cache" -> "term-KV-cache")."""
    if term not in TERMS:
        raise ValueError(f"term must be one of the glossary's terms, got {term!r}")
    return "term-" + re.sub(r"[^A-Za-z0-9]+", "-", term).strip("-")


def link_html(text: str, pending: dict[str, re.Pattern[str]], glossary: str) -> str:
    """``text`` as escaped HTML with the first use of each term of ``pending`` linked to its entry in
    the glossary page at ``glossary`` (a relative URL), removing the linked terms from ``pending``
    (so that, passed along several texts, only each term's first use on a page is linked)."""
    found = []
    for term, pattern in list(pending.items()):
        match = pattern.search(text)
        if match:
            found.append((match.start(), match.end(), term))
    kept: list[tuple[int, int, str]] = []
    for start, end, term in sorted(found, key=lambda use: (use[0], -use[1])):
        if kept and start < kept[-1][1]:
            continue  # inside a longer term's use: left for a later text
        kept.append((start, end, term))
        del pending[term]
    out, position = [], 0
    for start, end, term in kept:
        href = html.escape(f"{glossary}#{glossary_id(term)}")
        out.append(html.escape(text[position:start]))
        out.append(f'<a class="reference internal" href="{href}"><span class="xref std std-term">'
                   f"{html.escape(text[start:end])}</span></a>")
        position = end
    out.append(html.escape(text[position:]))
    return "".join(out)


def relink_terms(notebook: dict[str, Any]) -> int:
    """Remove every {term} role from the notebook's Markdown cells and link each term's first use
    afresh (:func:`link_terms`), in place; return how many cells changed."""
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError("notebook must be a notebook's JSON dictionary, with a list of cells under 'cells'")
    cells = [cell for cell in notebook["cells"] if cell.get("cell_type") == "markdown"]
    before = [cell_source(cell) for cell in cells]
    for cell, text in zip(cells, before, strict=True):
        cell["source"] = unlink_terms(text)
    link_terms(notebook)
    return sum(cell_source(cell) != text for cell, text in zip(cells, before, strict=True))
