"""What the book's Sphinx extension (book/_ext/chipbook_sphinx.py) does to the built site: the widget
bundle served without its unused modules and source maps, pages without fontawesome.js and with lazy
images, downloads that start with the hint cell. The browser tests check the built pages still work."""

from __future__ import annotations

import json
import re
from pathlib import Path

from book._ext.chipbook_sphinx import (
    HINT_TAG,
    add_download_hint,
    lighten_page,
    trim_widget_bundle,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = next((REPO / "book" / "_widgets" / "ipywidgets").glob("embed-amd-*.js"))


def _module(name: str, body: str) -> str:
    file = name.rsplit("/", 1)[-1]
    return (f"/*! For license information please see {file}.js.LICENSE.txt */\n"
            f'define("{name}",["module"],(e=>{body}));\n//# sourceMappingURL={file}.js.map;\n\n')


def test_trim_drops_the_ipywidgets_7_modules_and_the_stylesheets_source_maps() -> None:
    css = 'i.push([e.id,".a { b: c }\\n","",{version:3,sources:["x.css"],names:[],mappings:"AA{;}\\"B"}])'
    bundle = (_module("@jupyter-widgets/base", "1") + _module("@jupyter-widgets/base7", "2")
              + _module("@jupyter-widgets/controls7", "3") + _module("@jupyter-widgets/html-manager", css))
    expected = (_module("@jupyter-widgets/base", "1")
                + _module("@jupyter-widgets/html-manager", 'i.push([e.id,".a { b: c }\\n","",null])'))
    assert trim_widget_bundle(bundle) == expected
    assert trim_widget_bundle(expected) == expected


def test_the_trimmed_bundle_keeps_every_module_an_ipywidgets_8_page_loads() -> None:
    trimmed = trim_widget_bundle(BUNDLE.read_text(encoding="utf-8"))
    assert re.findall(r'^define\("([^"]+)"', trimmed, re.MULTILINE) == [
        "@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/html-manager",
        "@jupyter-widgets/html-manager/dist/libembed-amd"]
    assert "{version:3,sources:[" not in trimmed
    assert "base7" not in re.findall(r'define\("[^"]+",\[[^\]]*\]', trimmed)[2]  # html-manager's imports


def test_pages_lose_fontawesome_js_and_load_images_lazily() -> None:
    page = ('<head><script defer src="../_static/scripts/fontawesome.js?digest=55c2"></script>\n'
            '<script src="x.js"></script></head><img src="a.png"><img loading="eager" src="b.png">')
    assert lighten_page(page) == ('<head><script src="x.js"></script></head>'
                                  '<img loading="lazy" src="a.png"><img loading="eager" src="b.png">')


def test_a_download_starts_with_the_hint_cell_once(tmp_path: Path) -> None:
    path = tmp_path / "chapter.ipynb"
    cell = {"cell_type": "markdown", "id": "a1", "metadata": {}, "source": ["# Title"]}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    add_download_hint(path)
    add_download_hint(path)
    cells = json.loads(path.read_text())["cells"]
    assert [c["id"] for c in cells] == [HINT_TAG, "a1"]
    assert "make lab" in cells[0]["source"] and "pip install -e ." in cells[0]["source"]
