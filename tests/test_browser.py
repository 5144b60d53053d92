"""The built HTML book, driven in headless Chromium: every page loads cleanly and stays on its own
host, math is typeset, every explorable's controls change its frame, the widget JavaScript loads only
where it is needed, and notebook pages offer their notebook for download.

Run `make book` first; `make browser` runs these tests. The pages and explorables are discovered in
_build/html, so the tests grow with the book.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright

from tests.browser_support import (
    CHROMIUM_HELP,
    MIN_TRACK_PX,
    NOTEBOOK_FOLDERS,
    VIEWPORTS,
    Control,
    Frame,
    controls,
    explorable_views,
    explorables,
    find_chromium,
    geometry,
    has_math,
    has_widgets,
    html_pages,
    install_frame_helpers,
    launch,
    open_page,
    reveal,
    serve,
    wait_for_frame,
)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "_build" / "html"
SOURCES = SITE / "_sources"

HTML = {page: (SITE / page).read_text(encoding="utf-8") for page in html_pages(SITE)}
MATH_PAGES = [page for page, html in HTML.items() if has_math(html)]
EXPLORABLE_PAGES = [page for page, html in HTML.items() if explorable_views(html)]
PLAIN_PAGES = [page for page, html in HTML.items() if not has_widgets(html)]
LOCAL_SCHEMES = {"data", "blob"}


def _notebook_sources() -> list[str]:
    """The notebooks the book's pages are built from, as paths in the repository: those copied to
    _sources, and those of the repository's notebooks that have a page (in case their copy is missing)."""
    copied = {path.relative_to(SOURCES).as_posix() for path in SOURCES.rglob("*.ipynb")}
    ours = (path.relative_to(REPO) for folder in NOTEBOOK_FOLDERS for path in (REPO / folder).glob("*.ipynb"))
    paged = {path.as_posix() for path in ours if (SITE / path.with_suffix(".html")).is_file()}
    return sorted(copied | paged)


NOTEBOOK_SOURCES = _notebook_sources()


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    """The built book, served on 127.0.0.1 for the whole session."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE / 'index.html'} is missing: run `make book` first", pytrace=False)
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session; skipped where there is none, except on CI."""
    executable = find_chromium()
    if executable is None:
        reason = f"{CHROMIUM_HELP} (CHROMIUM={os.environ.get('CHROMIUM', '')!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cache or storage shared between tests)."""
    context = chromium.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture(params=list(VIEWPORTS))
def screen_page(request: pytest.FixtureRequest, chromium: Browser) -> Iterator[Page]:
    """A page in a fresh browser context on each screen of VIEWPORTS: a laptop and a phone."""
    context = chromium.new_context(**VIEWPORTS[request.param])
    yield context.new_page()
    context.close()


@dataclass
class PageLog:
    """What a page did while loading: every request's URL, uncaught errors and console errors."""

    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    @classmethod
    def watch(cls, page: Page) -> PageLog:
        log = cls()
        page.on("request", lambda request: log.urls.append(request.url))
        page.on("websocket", lambda socket: log.urls.append(socket.url))
        page.on("pageerror", lambda error: log.errors.append(str(error)))
        page.on("console", log._console)
        return log

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '?')})")

    def foreign_urls(self) -> list[str]:
        """The requested URLs that are neither on 127.0.0.1 nor data:/blob: URLs."""
        return [url for url in self.urls
                if urlparse(url).scheme not in LOCAL_SCHEMES and urlparse(url).hostname != "127.0.0.1"]


# --- every page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(HTML))
def test_page_loads_without_errors_or_foreign_requests(base_url: str, page: Page, path: str) -> None:
    """The page raises no JavaScript error, logs no console error and asks no other host for anything."""
    log = PageLog.watch(page)
    open_page(page, base_url + path, idle=True)
    assert not log.foreign_urls(), f"{path} requested other hosts: {log.foreign_urls()}"
    assert not log.errors, f"uncaught JavaScript errors on {path}: {log.errors}"
    assert not log.console_errors, f"console errors on {path}: {log.console_errors}"


@pytest.mark.parametrize("path", MATH_PAGES)
def test_math_is_typeset(base_url: str, page: Page, path: str) -> None:
    """MathJax typesets every math element of the page, without errors."""
    open_page(page, base_url + path)
    untypeset = page.evaluate(
        "() => [...document.querySelectorAll('.math')].filter((e) => !e.querySelector('mjx-container'))"
        ".map((e) => e.textContent.slice(0, 80))")
    assert page.locator("mjx-container").count() > 0, f"MathJax typeset nothing on {path}"
    assert page.locator("mjx-merror").count() == 0, f"MathJax reports errors in the math of {path}"
    assert not untypeset, f"math left untypeset on {path}: {untypeset}"


@pytest.mark.parametrize("path", PLAIN_PAGES)
def test_pages_without_widgets_load_no_widget_javascript(path: str) -> None:
    """The widget JavaScript (require.js, setup.js, embed-amd: several MB) loads only where widgets are."""
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', HTML[path])
    widget_js = [src for src in sources if "ipywidgets/" in src or "embed-amd" in src]
    assert not widget_js, f"{path} holds no widgets but loads {widget_js}"


# --- explorables ----------------------------------------------------------------------------------


def test_the_book_has_explorables(base_url: str) -> None:
    """The tests below check something: the book displays at least one explorable."""
    assert sum(explorable_views(html) for html in HTML.values()) > 0, "no page of the book has an explorable"


def _describe(shown: Frame) -> str:
    """What is wrong with a frame that has no hash."""
    return "no decodable image" if shown.images == 1 else f"{shown.images} visible images"


def _check_sweep(explorable: Locator, control: Control, first: Frame, where: str) -> None:
    """Move ``control`` through its other values, each step showing a new frame, then back to the
    value it opened on (the case the text describes, not always the first)."""
    start = control.position()
    previous = first
    for index in [i for i in range(control.size) if i != start]:
        control.select(index)
        assert control.position() == index, f"{where}: the control did not move to value {index}"
        shown = wait_for_frame(explorable, unlike=previous.hash)
        assert shown.hash, f"{where}: value {index} shows {_describe(shown)}"
        assert shown.hash != previous.hash, f"{where}: value {index} shows the same frame as the one before"
        previous = shown
    control.select(start)
    back = wait_for_frame(explorable, like=first.hash)
    assert back.hash == first.hash, f"{where}: moving back to value {start} did not bring back its frame"


def _check_fit(explorable: Locator, where: str) -> None:
    """Every slider's track is wide enough to move its thumb, every frame lies within the page's
    width, and the page does not scroll sideways."""
    shown = geometry(explorable)
    narrow = [round(width) for width in shown.tracks if width < MIN_TRACK_PX]
    assert not narrow, f"{where}: slider tracks narrower than {MIN_TRACK_PX} px: {narrow}"
    assert shown.frames, f"{where} shows no frame"
    outside = [edges for edges in shown.frames if edges[0] < 0 or edges[1] > shown.client_width + 0.5]
    assert not outside, f"{where}: frames beyond the page's {shown.client_width} px: {outside}"
    assert shown.scroll_width <= shown.client_width, (
        f"{where}: the page scrolls sideways: {shown.scroll_width} px of content in {shown.client_width} px")


@pytest.mark.parametrize("path", EXPLORABLE_PAGES)
def test_explorables_fit_the_screen_and_every_control_changes_the_frame(
        base_url: str, screen_page: Page, path: str) -> None:
    """On a laptop and on a phone, each explorable fits the screen (see _check_fit), and each of its
    controls, moved through its values while the others stay where the explorable opened, shows a
    new frame at every step and the opening frame again when moved back."""
    open_page(screen_page, base_url + path)
    install_frame_helpers(screen_page)
    drawn = explorables(screen_page)
    assert len(drawn) == explorable_views(HTML[path]), f"{path}: not every explorable was drawn"
    for number, explorable in enumerate(drawn, 1):
        reveal(explorable)
        where = f"{path}, explorable {number}"
        found = controls(explorable)
        assert found, f"{where} has no slider or toggle buttons"
        _check_fit(explorable, where)
        first = wait_for_frame(explorable)
        assert first.hash, f"{where} shows {_describe(first)} at first"
        for which, control in enumerate(found, 1):
            _check_sweep(explorable, control, first, f"{where}, control {which}")


# --- reading ----------------------------------------------------------------------------------------

CAPTIONED_PAGES = [page for page, html in HTML.items() if "<figcaption" in html]
CODE_PAGES = [page for page, html in HTML.items() if "cell_input" in html]


@pytest.mark.parametrize("path", CAPTIONED_PAGES)
def test_captions_are_in_the_text_colour(base_url: str, page: Page, path: str) -> None:
    """Every figure caption, its "Take-away" line included, has the colour of the page's paragraphs,
    not the theme's muted grey."""
    open_page(page, base_url + path)
    colours = page.evaluate("""() => {
      const colour = (e) => getComputedStyle(e).color;
      const body = colour(document.querySelector(".bd-article p"));
      const off = [...document.querySelectorAll(".bd-article figcaption, .bd-article figcaption p")]
        .filter((e) => colour(e) !== body).map((e) => e.textContent.slice(0, 60));
      return {body, off};
    }""")
    assert not colours["off"], f"{path}: captions not in the text colour {colours['body']}: {colours['off']}"


@pytest.mark.parametrize("path", CODE_PAGES)
def test_code_lines_are_not_cut_off(base_url: str, screen_page: Page, path: str) -> None:
    """On a laptop and on a phone, no shown code cell is wider than its box: long lines wrap."""
    open_page(screen_page, base_url + path)
    wide = screen_page.evaluate("""() => [...document.querySelectorAll(".cell_input pre")]
      .filter((pre) => pre.checkVisibility() && pre.scrollWidth > pre.clientWidth + 1)
      .map((pre) => pre.textContent.split("\\n").sort((a, b) => b.length - a.length)[0].slice(0, 60))""")
    assert not wide, f"{path}: code cells cut off at the right edge: {wide}"


# --- notebook downloads ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES)
def test_notebook_pages_offer_their_notebook(base_url: str, page: Page, source: str, tmp_path: Path) -> None:
    """The page's download menu (sphinx-book-theme's button) links to its notebook, which downloads
    as an nbformat 4 notebook: first a cell that says how to get the book's package, then the cells of
    the repository's copy."""
    open_page(page, base_url + source.removesuffix(".ipynb") + ".html")
    page.locator(".dropdown-download-buttons > button").click()
    link = page.locator('.dropdown-download-buttons a[href$=".ipynb"]')
    expect(link).to_be_visible()
    response = page.request.get(urljoin(page.url, link.get_attribute("href") or ""))
    assert response.ok, f"downloading {source} gave HTTP {response.status}"
    downloaded = json.loads(response.text())
    committed = json.loads((REPO / source).read_text(encoding="utf-8"))
    assert downloaded["nbformat"] == 4, f"the download of {source} is not an nbformat 4 notebook"
    hint, *cells = downloaded["cells"]
    sources = ["".join(cell["source"]) for cell in cells]
    assert sources == ["".join(cell["source"]) for cell in committed["cells"]], (
        f"the download of {source} does not hold the repository notebook's cells after its first")
    _check_download_hint("".join(hint["source"]), source, tmp_path)


def _check_download_hint(code: str, source: str, folder: Path) -> None:
    """The downloaded notebook's first cell says how to get the package, and run where the package
    is missing (a bare Python, outside the repository), it fails with that message."""
    for words in ("chipbook", "make lab", "pip install -e ."):
        assert words in code, f"the first cell of the download of {source} does not mention {words!r}"
    bare = subprocess.run([sys.executable, "-S", "-c", code], cwd=folder, capture_output=True, text=True,
                          check=False)
    assert bare.returncode != 0, f"the first cell of the download of {source} ran without chipbook"
    assert "ModuleNotFoundError" in bare.stderr and "make lab" in bare.stderr, (
        f"without chipbook, the first cell of the download of {source} fails with: {bare.stderr[-500:]}")


# --- the claim map on the first page ---------------------------------------------------------------

INTRO = "book/intro.html"


def test_claim_map_reads_as_cards_with_the_verdicts_file(base_url: str, screen_page: Page) -> None:
    """One card per row of book/verdicts.csv, each with its verdict's badge; on a phone the cards
    stack one to a line, each near the screen's width, and nothing overflows sideways."""
    from chipbook import verdicts

    claims = verdicts.load()
    open_page(screen_page, base_url + INTRO)
    cards = screen_page.locator(".chipbook-card")
    expect(cards).to_have_count(len(claims))
    shown = screen_page.evaluate(
        "() => [...document.querySelectorAll('.chipbook-card')].map((c) => [c.dataset.claim,"
        " c.querySelector('.chipbook-badge').textContent, c.getBoundingClientRect().left,"
        " c.getBoundingClientRect().width])")
    assert {claim: badge.lower() for claim, badge, _, _ in shown} == {c.claim: c.verdict for c in claims}
    width = screen_page.evaluate("() => window.innerWidth")
    overflow = screen_page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the first page scrolls sideways by {overflow} px at {width} px"
    if width <= 400:
        assert len({round(left) for _, _, left, _ in shown}) == 1, "cards do not stack in one column"
        assert min(w for _, _, _, w in shown) >= 0.75 * width, "cards are squeezed on a phone"


def test_claim_map_links_land_on_the_deciding_section_or_figure() -> None:
    """Every card's link names a page of the site and an id on that page."""
    page = HTML[INTRO]
    links = re.findall(r'class="chipbook-card-link" href="([^"]+)"', page)
    assert links, "the claim map has no links"
    for link in links:
        target, _, anchor = urljoin(INTRO, link).partition("#")
        assert target in HTML, f"{link} names no page of the site"
        assert anchor and f'id="{anchor}"' in HTML[target], f"{link}: no id {anchor!r} on {target}"


def test_first_page_glossary_links_land_on_their_terms() -> None:
    """Every glossary link of the first page (its prose's {term} roles and the claim map's) names an
    entry of the glossary page, and the claim map links some."""
    page = HTML[INTRO]
    links = re.findall(r'href="([^"]*glossary\.html#term-[^"]+)"', page)
    assert any("chipbook-card" in page[:page.index(link)] for link in links), "the claim map links no term"
    for link in links:
        target, _, anchor = urljoin(INTRO, link).partition("#")
        assert target in HTML and f'id="{anchor}"' in HTML[target], f"{link}: no such glossary entry"
