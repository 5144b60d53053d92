"""Measure the book against the budgets in BOOK_GUIDE.md: `make bench` runs it.

It times each notebook executed from a fresh kernel (in memory: the committed files are not touched),
the nbval run, and a clean HTML build; then, on the fresh build, it reports each page's size, the
bytes Chromium fetches on a first visit (an empty cache, the page's first screen: images further
down load when the reader scrolls), raw and gzip-compressed as a static host serves them (judged
against the first-visit budget), and the time from a key press or click on an explorable's control
to its new frame, measured in the page (the median move is judged). It prints one row per measurement
beside its budget and writes them to _build/bench.json. Over budget is reported, not an error: the
exit status is 1 only when a measurement failed (a notebook raised, nbval or the build failed, a
control showed no new frame).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from playwright.sync_api import Browser, Page, Request, sync_playwright
from playwright.sync_api import Error as PlaywrightError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import execute_notebooks  # noqa: E402 (needs the repository on sys.path)
from tests.browser_support import (  # noqa: E402
    CHROMIUM_HELP,
    NOTEBOOK_FOLDERS,
    controls,
    explorable_views,
    explorables,
    find_chromium,
    html_pages,
    install_frame_helpers,
    launch,
    open_page,
    reveal,
    serve,
    time_move,
    wait_for_frame,
)

BUILD = REPO / "_build"
SITE = BUILD / "html"
REPORT = BUILD / "bench.json"
BIN = Path(sys.executable).parent
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")

# The budgets of BOOK_GUIDE.md.
NOTEBOOK_S = 10.0
NBVAL_S = 60.0
BUILD_S = 90.0
PAGE_BYTES = 2e6
MOVE_MS = 30.0
FIRST_VISIT_BYTES = 2e6  # compressed as served
#: What a static host (GitHub Pages, nginx, a CDN) compresses before sending: text, scripts, styles,
#: data and SVG. Images and woff2 fonts are compressed already and go as they are.
COMPRESSED_TYPES = ("text/", "application/javascript", "application/x-javascript", "application/json",
                    "application/xml", "image/svg+xml", "font/ttf", "font/otf",
                    "application/vnd.ms-fontobject")
GZIP_LEVEL = 6  # gzip's and most hosts' default


class MeasurementError(Exception):
    """A measurement could not be made: what was measured failed."""


@dataclass(frozen=True)
class Row:
    """One measurement: ``value`` (in ``unit``) is judged against ``budget`` (None: for information
    only); ``shown`` is how it is printed; ``error`` says why a failed measurement (value None) failed."""

    what: str
    value: float | None
    unit: str
    budget: float | None
    shown: str
    error: str = ""

    @property
    def status(self) -> str:
        """ok or over its budget, info (no budget), or FAILED."""
        if self.value is None:
            return "FAILED"
        if self.budget is None:
            return "info"
        return "ok" if self.value <= self.budget else "over"


def show(value: float, unit: str) -> str:
    """A value as the table prints it."""
    if unit == "bytes":
        return f"{value / 1e6:.2f} MB"
    return f"{value:.1f} {unit}"


def failed(what: str, unit: str, budget: float | None, error: Exception) -> Row:
    """The row of a measurement that failed with ``error`` (its message without terminal colours)."""
    return Row(what, None, unit, budget, "failed", ANSI_COLOUR.sub("", f"{type(error).__name__}: {error}"))


def measure(what: str, unit: str, budget: float | None, take: Callable[[], float]) -> Row:
    """Take one measurement; whatever goes wrong becomes a failed row, so the others still run."""
    try:
        value = take()
    except Exception as error:  # a benchmark reports every failure and carries on
        return failed(what, unit, budget, error)
    return Row(what, value, unit, budget, show(value, unit))


# --- (a) notebooks, (b) nbval, (c) the build --------------------------------------------------------


def notebooks() -> list[Path]:
    """The book's notebooks: notebooks/*.ipynb, then book/*.ipynb."""
    return [path for folder in NOTEBOOK_FOLDERS for path in sorted((REPO / folder).glob("*.ipynb"))]


def execute_seconds(path: Path) -> float:
    """Seconds to execute a copy of the notebook, read into memory, from a fresh kernel started in the
    notebook's folder (as `make notebooks` runs it); the copy is discarded."""
    return execute_notebooks.run(nbformat.read(path, as_version=4), path.parent)


def command_seconds(command: list[str]) -> float:
    """Seconds that ``command`` runs in the repository; a non-zero exit is a failed measurement."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise MeasurementError(f"{' '.join(command)} exited {result.returncode}:\n" + "\n".join(tail))
    return seconds


def nbval_seconds() -> float:
    """Seconds for the nbval run of every notebook: `make nbval`, the command CI runs."""
    if not notebooks():
        raise MeasurementError("no notebooks to run")
    return command_seconds(["make", "--no-print-directory", "nbval"])


def clean_build_seconds() -> float:
    """Seconds for the strict HTML build after removing every earlier build output."""
    for name in ("html", "jupyter_execute", ".doctrees"):
        shutil.rmtree(BUILD / name, ignore_errors=True)
    return command_seconds([str(BIN / "jupyter-book"), "build", ".", "--all", "-W", "-n", "--keep-going"])


# --- (d) pages and (e) explorables, in Chromium ---------------------------------------------------


def file_bytes(path: str) -> float:
    """The size of the page's HTML file, which embeds its widget frames."""
    return float((SITE / path).stat().st_size)


@contextlib.contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a new browser context: an empty cache, as on a first visit."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def served_bytes(body: bytes, content_type: str) -> int:
    """The bytes a static host sends for a response: gzip-compressed where it compresses the type
    (COMPRESSED_TYPES) and that is smaller, the body as it is otherwise."""
    if content_type.split(";")[0].strip().lower().startswith(COMPRESSED_TYPES):
        return min(len(body), len(gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)))
    return len(body)


@dataclass(frozen=True)
class Visit:
    """What a first visit to a page fetches: the response bodies' bytes, raw and as served."""

    raw: int
    served: int
    requests: int


def first_visit(browser: Browser, url: str) -> Visit:
    """The response bodies Chromium fetches to show the page on a first visit (an empty cache)."""
    finished: list[Request] = []
    with fresh_page(browser) as page:
        page.on("requestfinished", lambda request: finished.append(request))
        open_page(page, url, idle=True)
        raw = served = 0
        fetched = [request for request in finished if request.url.startswith("http") and request.response()]
        for request in fetched:
            response = request.response()
            try:
                body = response.body()
            except PlaywrightError:  # a page the browser left at once (index.html redirects)
                raw += request.sizes()["responseBodySize"]
                served += request.sizes()["responseBodySize"]
                continue
            raw += len(body)
            served += served_bytes(body, response.header_value("content-type") or "")
        return Visit(raw, served, len(fetched))


def first_visit_row(browser: Browser, url: str, path: str) -> Row:
    """The first visit's bytes as served (judged) beside its raw bytes and requests."""
    what = f"first visit, gzip as served: {path}"
    try:
        visit = first_visit(browser, url)
    except Exception as error:  # a benchmark reports every failure and carries on
        return failed(what, "bytes", FIRST_VISIT_BYTES, error)
    shown = f"{visit.served / 1e6:.2f} MB ({visit.raw / 1e6:.2f} MB raw, {visit.requests} files)"
    return Row(what, float(visit.served), "bytes", FIRST_VISIT_BYTES, shown)


def move_times(page: Page) -> list[float]:
    """Milliseconds from input to new frame for each step of every control of every explorable on
    the loaded page, each control moved through its values from the one it opens on, while the
    others stay where they opened (an explorable may open on any value of a control)."""
    install_frame_helpers(page)
    times = []
    for number, explorable in enumerate(explorables(page), 1):
        reveal(explorable)
        first = wait_for_frame(explorable)
        for control in controls(explorable):
            start = control.position()
            for index in [i for i in range(control.size) if i != start]:
                milliseconds = time_move(page, explorable, control, index)
                if milliseconds is None:
                    raise MeasurementError(f"explorable {number}: no new frame at value {index} of a control")
                times.append(milliseconds)
            control.select(start)
            wait_for_frame(explorable, like=first.hash)
    return times


def slider_row(browser: Browser, base: str, path: str) -> Row:
    """The median and the slowest move to a new frame on one page. The median, a typical move, is
    judged: the slowest of a few dozen moves swings with the machine's load (garbage collection,
    other processes), and is printed beside it."""
    what = f"slider move to new frame: {path}"
    try:
        with fresh_page(browser) as page:
            open_page(page, base + path)
            times = move_times(page)
    except Exception as error:  # a benchmark reports every failure and carries on
        return failed(what, "ms", MOVE_MS, error)
    shown = f"median {statistics.median(times):.1f}, max {max(times):.1f} ms ({len(times)} moves)"
    return Row(what, statistics.median(times), "ms", MOVE_MS, shown)


def browser_rows(pages: list[str]) -> Iterator[Row]:
    """(d) the bytes of a first visit to each page, as served, and (e) the explorables' moves."""
    executable = find_chromium()
    if executable is None:
        yield failed("pages in Chromium", "", None, MeasurementError(CHROMIUM_HELP))
        return
    with_explorables = [path for path in pages if explorable_views((SITE / path).read_text(encoding="utf-8"))]
    with serve(SITE) as base, sync_playwright() as playwright:
        browser = launch(playwright, executable)
        try:
            for path in pages:
                yield first_visit_row(browser, base + path, path)
            for path in with_explorables:
                yield slider_row(browser, base, path)
        finally:
            browser.close()


# --- (f) the experiment tier ---------------------------------------------------------------------


EXPERIMENTS_S = 1800.0  # `make experiments`, the whole book, on the 2-core reference machine


def experiment_rows() -> Iterator[Row]:
    """Each experiment's wall time as its manifest records it (the run that made the committed
    result, on the machine the manifest names), and their sum against the budget of `make
    experiments`; timing them here would mean running them again."""
    results = REPO / "data" / "results"
    total = 0.0
    for path in sorted(results.glob("*.json")):
        info = json.loads(path.read_text(encoding="utf-8"))
        total += info["wall_s"]
        where = f"{info['machine']['cores']} cores, {info['date'][:10]}"
        yield Row(f"experiment {info['name']} (manifest: {where})", info["wall_s"], "s", None,
                  show(info["wall_s"], "s"))
    yield Row("make experiments, all (sum of the manifests)", total, "s", EXPERIMENTS_S, show(total, "s"))


# --- the table ------------------------------------------------------------------------------------


def rows() -> Iterator[Row]:
    """Every measurement, in order: experiments (from their manifests), notebooks, nbval, the clean
    build, then the pages it built."""
    yield from experiment_rows()
    for path in notebooks():
        yield measure(f"execute {path.relative_to(REPO)}", "s", NOTEBOOK_S,
                      functools.partial(execute_seconds, path))
    yield measure("nbval run of all notebooks", "s", NBVAL_S, nbval_seconds)
    yield measure("clean HTML build", "s", BUILD_S, clean_build_seconds)
    pages = html_pages(SITE)
    if not pages:
        yield failed("pages", "bytes", PAGE_BYTES, MeasurementError(f"no pages in {SITE}"))
        return
    for path in pages:
        yield measure(f"page size: {path}", "bytes", PAGE_BYTES,
                      functools.partial(file_bytes, path))
    yield from browser_rows(pages)


def line(what: str, measured: str, budget: str, status: str) -> str:
    """One line of the printed table."""
    return f"{what:<64} {measured:>36} {budget:>10}  {status}"


def main() -> int:
    print(line("what", "measured", "budget", "status"))
    table = []
    for row in rows():
        budget = "-" if row.budget is None else show(row.budget, row.unit)
        print(line(row.what, row.shown, budget, row.status), flush=True)
        if row.error:
            print("    " + row.error.replace("\n", "\n    "))
        table.append(row)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([asdict(row) | {"status": row.status} for row in table], indent=2) + "\n")
    print(f"Wrote {REPORT.relative_to(REPO)}.")
    return 1 if any(row.status == "FAILED" for row in table) else 0


if __name__ == "__main__":
    sys.exit(main())
