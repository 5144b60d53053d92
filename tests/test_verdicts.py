"""The claim map's verdicts (book/verdicts.csv) against what each chapter states, and the map's cards."""

from __future__ import annotations

import re

import pytest

from chipbook import verdicts

CLAIMS = verdicts.load()
CHAPTERS = sorted({c.chapter for c in CLAIMS if c.chapter})


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_states_the_verdicts_of_the_claim_map(chapter: str) -> None:
    in_file = {c.claim: c.verdict for c in CLAIMS if c.chapter == chapter}
    assert verdicts.stated_verdicts(chapter) == in_file


def test_every_chapter_is_on_the_map() -> None:
    chapters = sorted(p.stem for p in verdicts.NOTEBOOKS.glob("*.ipynb"))
    claimed = {chapter: verdicts.stated_verdicts(chapter) for chapter in chapters
               if chapter in CHAPTERS}
    assert set(CHAPTERS) <= set(chapters)
    assert all(claimed.values())


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.chapter], ids=lambda c: c.claim)
def test_each_card_links_to_a_section_or_figure_of_its_chapter(claim: verdicts.Claim) -> None:
    assert claim.target in verdicts.section_ids(claim.chapter)


def test_the_map_has_every_verdict_of_the_scale_it_uses_and_the_untested_claims() -> None:
    assert {c.verdict for c in CLAIMS} <= set(verdicts.SCALE)
    untested = {c.claim for c in CLAIMS if c.verdict in ("not tested", "not testable here")}
    # the essay's claims that the book does not test stay on the map, marked as such, and so do its
    # conclusion (5a), NVIDIA's dominance (5b) and the software side of it (5c)
    assert {"hbm", "history"} <= untested
    assert {"5a", "5b", "5c"} <= {c.claim for c in CLAIMS}


def test_every_finding_is_filled_with_the_chapters_numbers() -> None:
    values = {chapter: verdicts.chapter_values(chapter) for chapter in CHAPTERS}
    page = verdicts.dashboard(CLAIMS, values)
    assert "{" not in re.sub(r"<[^>]+>", "", page)
    assert page.count('class="chipbook-card"') == len(CLAIMS)
    # 1a's finding quotes the chapter's break-even range as the chapter glues it.
    assert values["01-market-size"]["be_lo"] in page


def test_the_map_links_each_glossary_term_once_unless_the_page_already_does() -> None:
    claims = [verdicts.Claim("1a", "larger", "Decode & prefill <fast>.", "supported",
                             "The KV cache; then decode and the KV cache again.", "", ""),
              verdicts.Claim("1b", "larger", "Prefill once more.", "supported", "MFU.", "", "")]
    page = verdicts.dashboard(claims, {}, linked=["mfu"])
    links = re.findall(r'<a class="reference internal" href="glossary.html#([^"]+)">', page)
    assert links == ["term-Decode", "term-Prefill", "term-KV-cache"]
    assert "&amp; " in page and "&lt;fast&gt;" in page  # the text around the links is escaped
    assert "Prefill once more." in page and ">MFU<" not in page


PROSE = """## 3. A section
**1a is supported elsewhere**, not here.

## Verdict

**Break-even (claim 1a): supported.** Text that says partly supported later.

**Ten-to-one (claim 1b): partly supported.** More.

**2a, contradicted.** And **a bold phrase with no claim: supported**.

**4b, not testable here.**

## Try it

**1c: supported.**
"""


def test_verdicts_are_read_from_the_bold_lead_ins_of_the_verdict_section() -> None:
    assert verdicts.verdicts_in(PROSE) == {"1a": "supported", "1b": "partly supported",
                                           "2a": "contradicted", "4b": "not testable here"}


def test_prose_without_a_verdict_section_is_refused() -> None:
    with pytest.raises(ValueError, match="Verdict"):
        verdicts.verdicts_in("## Results\n**1a: supported.**")


def test_a_finding_naming_a_value_the_chapter_does_not_glue_is_refused() -> None:
    claim = verdicts.Claim("1a", "larger", "x", "supported", "about {nope} times", "01-market-size",
                           "verdict")
    with pytest.raises(ValueError, match="nope"):
        verdicts.finding(claim, {"be_lo": "1"})


def test_reading_time_counts_words_at_the_given_speed() -> None:
    words = sum(len("".join(c["source"]).split()) for c in verdicts._notebook("01-market-size")["cells"]
                if c["cell_type"] == "markdown")
    minutes = verdicts.reading_minutes("01-market-size", words_per_minute=100)
    assert minutes % 5 == 0 and minutes - 5 < words / 100 <= minutes
    with pytest.raises(ValueError, match="words_per_minute"):
        verdicts.reading_minutes("01-market-size", words_per_minute=0)
