"""The book's JupyterLab server (`make lab`, and the JupyterLab browser test): notebooks open with
their prose's numbers, citations, chapter links and glued figures in place, and are saved unchanged.

The contents manager below resolves, on the way to the browser, the myst-nb roles that
jupyterlab-myst does not know (chipbook.lab.present), and undoes that on the way back to the disk
(chipbook.lab.restore). The bibliography is the book's (`bibtex_bibfiles` in _config.yml).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from chipbook import lab

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
BIBLIOGRAPHY = lab.load_bibliography(REPO / name for name in CONFIG["bibtex_bibfiles"])


class BookContentsManager(AsyncLargeFileManager):
    """Notebooks go to the browser with their prose resolved and come back with it restored."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if model["type"] == "notebook" and model.get("content"):
            folder = Path(self._get_os_path(path)).parent
            lab.present(model["content"], BIBLIOGRAPHY, folder)
        return model

    async def save(self, model, path=""):
        if model.get("type") == "notebook" and model.get("content"):
            lab.restore(model["content"])
        return await super().save(model, path)


c = get_config()  # noqa: F821 (defined by Jupyter when it loads this file)
c.ServerApp.contents_manager_class = BookContentsManager
