"""The JupyterLab reader path, driven in headless Chromium: `make test-lab` runs it (with the
JupyterLab of requirements-lab.txt, in .venv-lab).

It starts the book's JupyterLab (book/_lab/jupyter_server_config.py) on a free port of 127.0.0.1,
serving a copy of notebooks/ (so that nothing it saves touches the repository), opens each chapter,
runs all its cells, and checks that no cell fails; that the rendered prose shows no raw MyST role
({glue, {cite, {eq, {doc}), no glue name where its value belongs and nothing jupyterlab-myst reports
as not found; that a control of the chapter shows a new frame in the live kernel; and that saving
the notebook writes its Markdown back unchanged. The chapters are the notebooks in notebooks/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed here: run `make test-lab`")
playwright_api = pytest.importorskip("playwright.sync_api")

from tests.browser_support import (  # noqa: E402 (after the skips above)
    CHROMIUM_HELP,
    controls,
    explorables,
    find_chromium,
    install_frame_helpers,
    launch,
    reveal,
    wait_for_frame,
)

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(path.name for path in (REPO / "notebooks").glob("*.ipynb"))
CONFIG = REPO / "book" / "_lab" / "jupyter_server_config.py"
TOKEN = "chipbook-lab-test"
START_S = 120  # JupyterLab's start on a loaded machine
RUN_S = 180  # one chapter: the kernel's start and every cell
RAW_ROLE = re.compile(r"\{(glue|cite|eq|doc)[:}]")
GLUE_ROLE = re.compile(r"\{glue(?::md|:text)?\}`([^`:]+)")
GLUE_FIGURE = re.compile(r"\{glue:figure\}[ \t]+(\S+)")
#: Every cell of a notebook in the page at once (JupyterLab 4 draws only the visible ones by default).
SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
            "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                  "checkForUpdates": False}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text()[-3000:]
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{tail}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}api/status?token={TOKEN}", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {START_S} s:\n{log.read_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def served() -> Iterator[Path]:
    """A copy of the chapters, which JupyterLab serves and may save into."""
    with tempfile.TemporaryDirectory(prefix="chipbook-notebooks-") as scratch:
        for chapter in CHAPTERS:
            shutil.copy(REPO / "notebooks" / chapter, scratch)
        yield Path(scratch)


@pytest.fixture(scope="module")
def lab_url(served: Path) -> Iterator[str]:
    """The book's JupyterLab on a free port of 127.0.0.1, serving the copy of the chapters."""
    with tempfile.TemporaryDirectory(prefix="chipbook-lab-") as scratch:
        home = Path(scratch)
        for name, values in SETTINGS.items():
            path = home / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        environment = os.environ | {"JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
                                    "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
                                    "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                                    "JUPYTER_CONFIG_DIR": str(home / "config"),
                                    "IPYTHONDIR": str(home / "ipython")}
        port = _free_port()
        url = f"http://127.0.0.1:{port}/"
        log = home / "lab.log"
        command = [sys.executable, "-m", "jupyter", "lab", f"--config={CONFIG}", "--no-browser",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={TOKEN}", "--LabApp.expose_app_in_browser=True",
                   "--LabApp.news_url=", "--LabApp.extension_manager=readonly", str(served)]
        if os.geteuid() == 0:  # a CI container
            command.append("--allow-root")
        with log.open("w") as sink:
            server = subprocess.Popen(command, cwd=REPO, env=environment, stdout=sink,
                                      stderr=subprocess.STDOUT)
        try:
            _wait_until_up(url, server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture(scope="module")
def chromium() -> Iterator[playwright_api.Browser]:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(CHROMIUM_HELP, pytrace=False)
        pytest.skip(CHROMIUM_HELP)
    with playwright_api.sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


#: Runs every cell of the notebook JupyterLab shows and waits until the kernel has run them all;
#: returns the error outputs and the text of the rendered Markdown cells.
RUN_ALL_JS = """
async (timeoutMs) => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const app = window.jupyterapp;
  const deadline = performance.now() + timeoutMs;
  let panel = app.shell.currentWidget;
  while (!(panel && panel.sessionContext && panel.content && panel.content.model)) {
    if (performance.now() > deadline) throw new Error("the notebook did not open");
    await sleep(100);
    panel = app.shell.currentWidget;
  }
  await panel.context.ready;
  await panel.sessionContext.ready;
  while (!(panel.sessionContext.session && panel.sessionContext.session.kernel)) {
    if (performance.now() > deadline) throw new Error("no kernel started");
    await sleep(100);
  }
  await app.commands.execute("notebook:run-all-cells");
  const model = panel.content.model;
  const cells = () => Array.from({ length: model.cells.length }, (_, i) => model.cells.get(i));
  const pending = () => cells().filter((cell) => cell.type === "code" && cell.sharedModel.getSource().trim()
                                                 && cell.executionCount === null);
  for (;;) {
    const idle = panel.sessionContext.session.kernel.status === "idle";
    if (idle && pending().length === 0) break;
    if (performance.now() > deadline) throw new Error(`cells still to run: ${pending().length}`);
    await sleep(250);
  }
  const errors = [];
  for (const cell of cells()) {
    if (cell.type !== "code") continue;
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === "error") errors.push(`${output.ename}: ${output.evalue}`);
    }
  }
  const rendered = [...panel.content.node.querySelectorAll(
    ".jp-MarkdownCell .jp-RenderedMarkdown, .jp-MarkdownCell .myst")];
  return {
    errors,
    prose: rendered.map((node) => node.innerText),
    // what jupyterlab-myst marks as unresolved: "Citation Not Found", a reference not found
    unresolved: rendered.flatMap((node) => [...node.querySelectorAll("[title*='not found' i]")])
      .map((node) => node.textContent.trim()),
    images: rendered.reduce((count, node) => count + node.querySelectorAll("img").length, 0),
  };
}
"""


def _prose_names(chapter: str) -> tuple[set[str], int]:
    """The glue names the chapter's Markdown uses in roles that look like no English word (with an
    underscore or a digit: an unresolved role shows its name), and how many glued figures it has."""
    cells = json.loads((REPO / "notebooks" / chapter).read_text(encoding="utf-8"))["cells"]
    markdown = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    names = {name.strip() for name in GLUE_ROLE.findall(markdown)}
    return {name for name in names if re.search(r"[_0-9]", name)}, len(GLUE_FIGURE.findall(markdown))


def _markdown(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_and_reads_in_jupyterlab(lab_url: str, served: Path, chromium, chapter: str) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{lab_url}lab/tree/{chapter}?token={TOKEN}&reset", wait_until="load")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget",
                               timeout=START_S * 1000)
        result = page.evaluate(RUN_ALL_JS, RUN_S * 1000)
        assert not result["errors"], f"{chapter}: cells failed in JupyterLab: {result['errors']}"
        assert result["prose"], f"{chapter}: no rendered Markdown found"
        raw = sorted({match.group(0) for text in result["prose"] for match in RAW_ROLE.finditer(text)})
        assert not raw, f"{chapter}: the prose shows raw MyST roles in JupyterLab: {raw}"
        assert not result["unresolved"], f"{chapter}: unresolved in JupyterLab: {result['unresolved'][:10]}"
        names, figures = _prose_names(chapter)
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", "\n".join(result["prose"])))
        shown = sorted(names & words)
        assert not shown, f"{chapter}: the prose shows glue names where their values belong: {shown[:10]}"
        assert result["images"] >= figures, (
            f"{chapter}: {figures} glued figures in the prose, {result['images']} images rendered")

        install_frame_helpers(page)
        drawn = explorables(page)
        assert drawn, f"{chapter}: no explorable drawn in JupyterLab"
        found = [(explorable, control) for explorable in drawn for control in controls(explorable)]
        assert found, f"{chapter}: no explorable with a slider or toggle buttons"
        explorable, control = found[0]
        reveal(explorable)
        first = wait_for_frame(explorable)
        assert first.hash, f"{chapter}: the explorable shows no frame in JupyterLab"
        control.select(1 if control.position() == 0 else 0)  # away from the value it opened on
        moved = wait_for_frame(explorable, unlike=first.hash)
        assert moved.hash and moved.hash != first.hash, f"{chapter}: the control's move showed no new frame"

        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                               timeout=RUN_S * 1000)
        assert _markdown(served / chapter) == _markdown(REPO / "notebooks" / chapter), (
            f"{chapter}: saving in JupyterLab changed the notebook's Markdown")
    finally:
        context.close()
