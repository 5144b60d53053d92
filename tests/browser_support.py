"""Shared by the browser tests (tests/test_browser.py) and the benchmark (scripts/bench.py).

Serve the built book on 127.0.0.1, find and launch a headless Chromium with Playwright, list the
book's pages, read what they embed (widget views, explorables, math), and drive an explorable's
controls while reading which frame it shows. A frame is identified by the SHA-256 of its decoded
pixels, not by its ``blob:`` address, which differs on every render even for the same image.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from playwright.sync_api import Browser, Locator, Page, Playwright
from playwright.sync_api import Error as PlaywrightError

#: Where to look for a browser, in order, before searching PATH. CHROMIUM, when set, comes first.
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_HELP = (f"no Chromium: install one at {' or '.join(CHROMIUM_PATHS)} or on PATH, or set CHROMIUM "
                 "to its path")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
#: Files at the top of the built book that are Sphinx's machinery, not pages of the book.
NOT_PAGES = {"genindex.html", "search.html"}
#: How long a page may take to draw its widgets and typeset its math, and a control to show a frame.
SETTLE_MS = 15_000
FRAME_MS = 3_000
REDIRECTS = 3  # how many navigations a page may make on its own while loading (index.html: one)

#: The screens the browser tests read the book on: a laptop, and a phone (390 CSS px wide, as an
#: iPhone 12 to 15 in portrait; emulated as a touch device at its pixel ratio).
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True,
              "has_touch": True},
}
#: The narrowest a slider's track may be: a reader must be able to move its thumb (CSS px).
MIN_TRACK_PX = 150

#: Where the book's notebooks live, in the repository (and under _build/html/_sources).
NOTEBOOK_FOLDERS = ("notebooks", "book")

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
EXPLORABLE_CLASS = "chipbook-explorable"
CONTROLS = ":scope > .widget-slider, :scope > .widget-toggle-buttons"


# --- the server and the browser -------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    """Does not print a traceback when the browser drops a connection it no longer needs."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 at a free port, in a thread; yield its base URL
    (ending in "/") and stop the server on exit."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def find_chromium() -> str | None:
    """The path of a Chromium (or Google Chrome) executable, or None when there is none.
    The environment variable CHROMIUM, when set, names the executable to use (see CHROMIUM_HELP)."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for path in CHROMIUM_PATHS:
        if Path(path).is_file():
            return path
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Playwright, executable: str) -> Browser:
    """Launch headless Chromium with a fresh profile, its background traffic switched off."""
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), headless=True)


# --- what the built book holds ---------------------------------------------------------------------


def html_pages(site: Path) -> list[str]:
    """The book's pages under ``site``, as paths relative to it: every .html file except the
    index and search pages and the files under top-level folders named ``_…`` (_static, _sources)."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        relative = path.relative_to(site)
        if relative.parts[0].startswith("_") or relative.as_posix() in NOT_PAGES:
            continue
        pages.append(relative.as_posix())
    return pages


def _scripts(html: str, mime: str) -> list[Any]:
    """The JSON bodies of the page's ``<script type=mime>`` elements."""
    pattern = re.compile(rf'<script type="{re.escape(mime)}">(.*?)</script>', re.DOTALL)
    return [json.loads(body) for body in pattern.findall(html)]


def has_widgets(html: str) -> bool:
    """Whether the page embeds saved widget state (and so needs the widget JavaScript)."""
    return f'type="{WIDGET_STATE}"' in html


def has_math(html: str) -> bool:
    """Whether the page's source holds math for MathJax to typeset."""
    return 'class="math' in html


def explorable_views(html: str) -> int:
    """How many explorables the page displays: the models with the explorable class in the widget
    trees of the page's views (an explorable may be displayed inside another box)."""
    models: dict[str, Any] = {}
    for state in _scripts(html, WIDGET_STATE):
        models.update(state.get("state", {}))

    def count(model_id: str) -> int:
        state = models.get(model_id, {}).get("state", {})
        children = [ref.removeprefix("IPY_MODEL_") for ref in state.get("children", [])]
        return (EXPLORABLE_CLASS in state.get("_dom_classes", [])) + sum(map(count, children))

    return sum(count(view["model_id"]) for view in _scripts(html, WIDGET_VIEW))


# --- page JavaScript ------------------------------------------------------------------------------

#: Waits until every widget view on the page is drawn and MathJax (where the page loads it) has
#: typeset the page; throws after SETTLE_MS.
SETTLE_JS = """
async ([viewType, timeoutMs]) => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const deadline = performance.now() + timeoutMs;
  const views = [...document.querySelectorAll(`script[type="${viewType}"]`)];
  while (!views.every((view) => view.parentElement.querySelector(".jupyter-widgets"))) {
    if (performance.now() > deadline) throw new Error("the page's widgets were not drawn");
    await sleep(20);
  }
  if (document.querySelector('script[src*="mathjax"]')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (performance.now() > deadline) throw new Error("MathJax did not start");
      await sleep(20);
    }
    await MathJax.startup.promise;
  }
}
"""

#: Defines window.chipbookFrames, helpers that read an explorable's visible frame:
#: frame(root) -> {images, src, hash}; waitForFrame(root, {unlike|like: hash}, ms) -> frame;
#: armTimer(root, ms) sets window.chipbookTimer, a promise of the milliseconds from the next key
#: press or click to the moment a new frame is visible and decoded (null if none within ms).
FRAMES_JS = """
() => {
  if (window.chipbookFrames) return;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const visible = (root) => [...root.querySelectorAll("img")].filter((img) => img.checkVisibility());
  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

  async function frame(root) {
    const images = visible(root);
    if (images.length !== 1) return { images: images.length, src: null, hash: null };
    const img = images[0];
    try { await img.decode(); } catch (error) { return { images: 1, src: img.src, hash: null }; }
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    return { images: 1, src: img.src, hash: hex(await crypto.subtle.digest("SHA-256", pixels)) };
  }

  async function waitForFrame(root, want, timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const shown = await frame(root);
      const done = shown.hash && ("like" in want ? shown.hash === want.like : shown.hash !== want.unlike);
      if (done || performance.now() > deadline) return shown;
      await sleep(10);
    }
  }

  function armTimer(root, timeoutMs) {
    const before = visible(root)[0] || null;
    const beforeSrc = before && before.src;
    let start = null;
    let done = false;
    const onInput = () => { if (start === null) start = performance.now(); };
    window.addEventListener("keydown", onInput, true);
    window.addEventListener("click", onInput, true);
    window.chipbookTimer = new Promise((resolve) => {
      const finish = (ms) => {
        if (done) return;
        done = true;
        observer.disconnect();
        clearTimeout(timer);
        window.removeEventListener("keydown", onInput, true);
        window.removeEventListener("click", onInput, true);
        resolve(ms);
      };
      const check = async () => {
        const now = visible(root);
        if (start === null || done || now.length !== 1) return;
        if (now[0] === before && now[0].src === beforeSrc) return;
        try { await now[0].decode(); } catch (error) { return; }
        finish(performance.now() - start);
      };
      const observer = new MutationObserver(check);
      observer.observe(root, { subtree: true, childList: true, attributes: true });
      const timer = setTimeout(() => finish(null), timeoutMs);
    });
  }

  window.chipbookFrames = { frame, waitForFrame, armTimer };
}
"""


def open_page(page: Page, url: str, *, idle: bool = False) -> None:
    """Load ``url`` and wait until its widgets are drawn and its math typeset, and with ``idle``
    also until the network has been idle for half a second (to see late requests)."""
    page.goto(url, wait_until="load")
    for _ in range(REDIRECTS):
        try:
            page.evaluate(SETTLE_JS, [WIDGET_VIEW, SETTLE_MS])
            break
        except PlaywrightError as error:  # a page that redirects (index.html) navigates meanwhile
            if "context was destroyed" not in error.message:
                raise
            page.wait_for_load_state("load")
    if idle:
        page.wait_for_load_state("networkidle")


# --- explorables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What an explorable shows: how many images are visible and, when exactly one is, its address
    and the hash of its pixels (None when it is not exactly one decodable image)."""

    images: int
    src: str | None
    hash: str | None


def _aria(handle: Locator, name: str) -> float:
    """A slider handle's numeric ARIA attribute (aria-valuenow, -valuemin, -valuemax)."""
    value = handle.get_attribute(f"aria-{name}")
    if value is None:
        raise ValueError(f"the slider handle has no aria-{name}")
    return float(value)


@dataclass(frozen=True)
class Control:
    """One control of an explorable: a slider (moved with the arrow keys) or toggle buttons
    (clicked). ``size`` is how many values it selects between."""

    locator: Locator
    kind: Literal["slider", "buttons"]
    size: int

    def position(self) -> int:
        """The index of the selected value."""
        if self.kind == "slider":
            handle = self.locator.locator(".noUi-handle")
            return round(_aria(handle, "valuenow") - _aria(handle, "valuemin"))
        active = self.locator.locator(".widget-toggle-button").evaluate_all(
            "(buttons) => buttons.map((button) => button.classList.contains('mod-active'))")
        return active.index(True)

    def select(self, index: int) -> None:
        """Move to value ``index`` as a reader would: arrow keys, one step at a time, or a click."""
        if self.kind == "buttons":
            self.locator.locator(".widget-toggle-button").nth(index).click()
            return
        handle = self.locator.locator(".noUi-handle")
        steps = index - self.position()
        for _ in range(abs(steps)):
            handle.press("ArrowRight" if steps > 0 else "ArrowLeft")


def explorables(page: Page) -> list[Locator]:
    """The page's drawn explorables."""
    found = page.locator(f".{EXPLORABLE_CLASS}")
    return [found.nth(i) for i in range(found.count())]


def reveal(explorable: Locator) -> None:
    """Open the folded sections (<details>: dropdowns, hidden cells) that hold the explorable and
    scroll it into view, so that a reader could use it."""
    explorable.evaluate("""(root) => {
      for (let node = root; node; node = node.parentElement) if (node.tagName === "DETAILS") node.open = true;
    }""")
    explorable.scroll_into_view_if_needed()


def controls(explorable: Locator) -> list[Control]:
    """The explorable's controls, in order. A slider's values are counted from its ARIA range
    (a SelectionSlider's value is an index, one step apart); toggle buttons are counted."""
    found = []
    for element in explorable.locator(CONTROLS).all():
        handle = element.locator(".noUi-handle")
        if handle.count():
            span = _aria(handle, "valuemax") - _aria(handle, "valuemin")
            found.append(Control(element, "slider", round(span) + 1))
        else:
            found.append(Control(element, "buttons", element.locator(".widget-toggle-button").count()))
    return found


#: What the explorable occupies on screen: each slider track's width, each visible frame's left and
#: right edge, and the page's scrollable and visible widths (CSS px).
GEOMETRY_JS = """
(root) => {
  const box = (element) => element.getBoundingClientRect();
  return {
    tracks: [...root.querySelectorAll(".noUi-target")].map((track) => box(track).width),
    frames: [...root.querySelectorAll("img")].filter((img) => img.checkVisibility())
      .map((img) => [box(img).left, box(img).right]),
    scroll_width: document.documentElement.scrollWidth,
    client_width: document.documentElement.clientWidth,
  };
}
"""


@dataclass(frozen=True)
class Geometry:
    """Where an explorable's parts are on screen (see GEOMETRY_JS)."""

    tracks: list[float]
    frames: list[list[float]]
    scroll_width: int
    client_width: int


def geometry(explorable: Locator) -> Geometry:
    """Measure the explorable and the page it is on."""
    return Geometry(**explorable.evaluate(GEOMETRY_JS))


def install_frame_helpers(page: Page) -> None:
    """Define window.chipbookFrames (see FRAMES_JS) in the loaded page."""
    page.evaluate(FRAMES_JS)


def wait_for_frame(explorable: Locator, *, unlike: str | None = None, like: str | None = None) -> Frame:
    """Wait (up to FRAME_MS) until the explorable shows a frame unlike, or like, the given hash (with
    neither: any decodable frame); return the frame it shows then, which the caller checks."""
    want = {"like": like} if like is not None else {"unlike": unlike}
    return Frame(**explorable.evaluate(
        "(root, [want, ms]) => window.chipbookFrames.waitForFrame(root, want, ms)", [want, FRAME_MS]))


def time_move(page: Page, explorable: Locator, control: Control, index: int) -> float | None:
    """Move ``control`` to value ``index`` and return the milliseconds, measured in the page, from the
    key press or click to the new frame being visible and decoded; None if no new frame came."""
    explorable.evaluate("(root, ms) => window.chipbookFrames.armTimer(root, ms)", FRAME_MS)
    control.select(index)
    return page.evaluate("() => window.chipbookTimer")
