"""The experiment tier: experiments too big for a notebook's budget, run once and committed as data.

An experiment is a module ``chipbook/experiments/<name>.py`` (a name without a leading underscore)
that declares

* ``CONFIG``: a JSON-serialisable dict. ``CONFIG["grid"]`` is the list of grid points, each a dict;
  every other key (seeds, steps, sizes) is shared by all points.
* ``COLUMNS``: the columns of one result row, ``{name: kind}`` with kind ``"text"``, ``"int"`` or
  ``"float"``, in the order the table keeps them.
* ``run_one(point, shared) -> list[dict]``: the rows of one grid point, a pure function of the point
  and of the shared settings (``CONFIG`` without ``"grid"``), seeded from them.

:func:`run` runs every point, in parallel through joblib (any joblib backend: wrap the call in
``joblib.parallel_config(backend="dask")`` to run the grid on a Dask cluster), with a progress bar,
and writes ``data/results/<name>.csv`` (the rows, each with the index of its grid ``point`` first)
and ``data/results/<name>.json``, the manifest (see :func:`manifest` and data/README.md).
:func:`problems` says why a committed result no longer matches the code: a different fingerprint of
the code (:func:`fingerprint`) or a different configuration. ``python -m chipbook.experiments [NAME]``
(``make experiments [NAME=…]``) reruns experiments.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pandas as pd
from joblib import Parallel, delayed
from joblib.parallel import get_active_backend
from tqdm.auto import tqdm

from chipbook import data

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the chipbook package
RESULTS_DIR = data.RESULTS_DIR
KINDS = {"text": str, "int": int, "float": float}
#: distributions whose versions a manifest records (those the experiments compute with)
VERSIONED = ("numpy", "ml_dtypes", "pandas", "joblib", "torch")


def names() -> list[str]:
    """Every experiment: the public modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name != "__main__")


def command(name: str) -> str:
    """The command that reruns experiment ``name``."""
    return f"make experiments NAME={name}"


def get(name: str) -> ModuleType:
    """The module of experiment ``name``, its declarations checked."""
    known = names()
    if name not in known:
        raise ValueError(f"name must be one of the experiments {known}, got {name!r}")
    module = importlib.import_module(f"{__name__}.{name}")
    for attribute in ("CONFIG", "COLUMNS", "run_one"):
        if not hasattr(module, attribute):
            raise ValueError(f"experiment {name!r} must define {attribute} (see chipbook.experiments)")
    config = module.CONFIG
    if (not isinstance(config, dict) or not isinstance(config.get("grid"), list) or not config["grid"]
            or not all(isinstance(p, dict) for p in config["grid"])):
        raise ValueError(f"experiment {name!r}: CONFIG['grid'] must be a non-empty list of dicts")
    if normalised(config) != config:
        raise ValueError(f"experiment {name!r}: CONFIG must survive a JSON round trip unchanged "
                         "(plain dicts, lists, strings, finite numbers; no tuples or numpy values)")
    bad = {c: k for c, k in module.COLUMNS.items() if k not in KINDS}
    if bad or "point" in module.COLUMNS:
        raise ValueError(f"experiment {name!r}: COLUMNS kinds must be in {list(KINDS)} and 'point' is "
                         f"reserved; got {bad or 'point'}")
    return module


def normalised(config: dict) -> dict:
    """``config`` as a JSON round trip gives it back (what a manifest stores)."""
    return json.loads(json.dumps(config, allow_nan=False))


def shared(config: dict) -> dict:
    """The settings every grid point shares: ``config`` without its grid."""
    return {k: v for k, v in config.items() if k != "grid"}


# --- the code fingerprint ---------------------------------------------------------------------------


def _canonical(node: object) -> object:
    """An AST as nested lists of node names and their non-empty fields: whitespace and comments are
    not in an AST, docstrings are dropped, and so are empty fields that newer Pythons add (such as
    ``type_params=[]``), so that the same code gives the same fingerprint on Python 3.10 to 3.13 (checked;
    a plain ``ast.dump`` differs between 3.11, 3.12 and 3.13)."""
    if isinstance(node, ast.AST):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
                and isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))):
            body = body[1:]
        fields = []
        for field in node._fields:
            value = body if field == "body" and body is not None else getattr(node, field, None)
            if value is None or value == []:
                continue
            fields.append([field, _canonical(value)])
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return repr(node)


def _imported(tree: ast.Module, module: str, package_dir: Path) -> set[str]:
    """The chipbook modules that ``module`` (dotted name) imports, as dotted names of files that exist
    under ``package_dir``: ``import chipbook.x``, ``from chipbook import x``, ``from chipbook.x import
    y`` and the relative forms. A name imported from a package is its submodule when it has one, else
    the package's ``__init__``."""
    top = package_dir.name
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == top or a.name.startswith(top + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                is_package = _path(module, package_dir).name == "__init__.py"
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != top and not source.startswith(top + "."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if _path(sub, package_dir).exists() else source)
    return {m for m in out if _path(m, package_dir).exists()}


def _path(module: str, package_dir: Path) -> Path:
    parts = module.split(".")[1:]
    folder = package_dir.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def code_files(name: str, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Each file the result of experiment ``name`` depends on, with the SHA-256 of its canonical
    AST: the experiment's module and, transitively, every chipbook module it imports."""
    top = package_dir.name
    todo, seen, out = [f"{top}.experiments.{name}"], set(), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _path(module, package_dir)
        if not path.exists():
            raise ValueError(f"experiment {name!r}: no file for module {module} under {package_dir}")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        key = path.relative_to(package_dir.parent).as_posix()
        out[key] = hashlib.sha256(json.dumps(_canonical(tree)).encode()).hexdigest()
        todo.extend(_imported(tree, module, package_dir))
    return dict(sorted(out.items()))


def fingerprint(files: dict[str, str]) -> str:
    """One SHA-256 over the per-file hashes of :func:`code_files`."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


# --- running ---------------------------------------------------------------------------------------


def _check_row(name: str, columns: dict[str, str], row: dict) -> dict:
    if set(row) != set(columns):
        raise ValueError(f"experiment {name!r}: run_one returned a row with columns {sorted(row)}, "
                         f"COLUMNS declares {list(columns)}")
    out = {}
    for column, kind in columns.items():
        value = row[column]
        if kind == "text" and not isinstance(value, str):
            raise ValueError(f"experiment {name!r}: column {column!r} must be text, got {value!r}")
        if kind == "int" and (isinstance(value, bool) or int(value) != value):
            raise ValueError(f"experiment {name!r}: column {column!r} must be a whole number, got {value!r}")
        out[column] = KINDS[kind](value)
    return out


def _timed(name: str, point: dict, settings: dict) -> tuple[list[dict], float]:
    # a worker imports the experiment by name (a module object cannot be sent to another process)
    start = time.perf_counter()
    rows = get(name).run_one(point, settings)
    return rows, time.perf_counter() - start


def run_points(name: str, indices: Iterable[int] | None = None, *, n_jobs: int = -1,
               progress: bool = True) -> tuple[pd.DataFrame, list[float]]:
    """Run the grid points ``indices`` (default: all) of experiment ``name``; return their rows as a
    table (with the ``point`` column first) and each point's seconds. Nothing is written."""
    module = get(name)
    grid = module.CONFIG["grid"]
    indices = list(range(len(grid)) if indices is None else indices)
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -len(grid) <= i < len(grid):
            raise ValueError(f"indices must be grid positions of {name!r} (0 … {len(grid) - 1}), got {i!r}")
    indices = [i % len(grid) for i in indices]
    settings = shared(module.CONFIG)
    jobs = (delayed(_timed)(name, grid[i], settings) for i in indices)
    rows, seconds = [], []
    with tqdm(total=len(indices), desc=name, unit="point", disable=not progress) as bar:
        for i, (point_rows, took) in zip(indices, Parallel(n_jobs=n_jobs, return_as="generator")(jobs),
                                         strict=True):
            rows.extend({"point": i, **_check_row(name, module.COLUMNS, r)} for r in point_rows)
            seconds.append(took)
            bar.update()
    frame = pd.DataFrame(rows, columns=["point", *module.COLUMNS])
    return data.typed(frame, {"point": "int", **module.COLUMNS}), seconds


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def manifest(name: str, rows: int, wall_s: float, point_s: Sequence[float], backend: str, n_jobs: int,
             csv_sha256: str, date: datetime) -> dict:
    """The manifest of a run of experiment ``name`` (the fields data/README.md describes)."""
    module = get(name)
    files = code_files(name)
    return {
        "name": name,
        "description": (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
        "command": command(name),
        "config": normalised(module.CONFIG),
        "columns": {"point": "int", **module.COLUMNS},
        "rows": rows,
        "csv_sha256": csv_sha256,
        "fingerprint": fingerprint(files),
        "code": files,
        "versions": _versions(),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(),
                    "system": f"{platform.system()} {platform.machine()}"},
        "parallel": {"backend": backend, "n_jobs": n_jobs},
        "wall_s": round(wall_s, 2),
        "point_s": [round(s, 2) for s in point_s],
        "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a result table: floats as the shortest text that reads back to the same float64 (so a
    reload is exact), integers and text as they are (quoted where they hold a comma), Unix line ends."""
    def cell(value: object) -> object:
        return repr(float(value)) if isinstance(value, float) else value

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(frame.columns)
        writer.writerows([cell(v) for v in row] for row in frame.itertuples(index=False))


def run(name: str, *, n_jobs: int = -1, progress: bool = True,
        results_dir: Path = RESULTS_DIR) -> pd.DataFrame:
    """Run every grid point of experiment ``name`` and write its table and manifest to
    ``results_dir`` (``<name>.csv``, ``<name>.json``); return the table."""
    module = get(name)
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    frame, seconds = run_points(name, n_jobs=n_jobs, progress=progress)
    wall = time.perf_counter() - start
    backend, _ = get_active_backend()  # the default (loky) or one a parallel_config around this call chose
    jobs = min(len(module.CONFIG["grid"]), backend.effective_n_jobs(n_jobs))
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path = results_dir / f"{name}.csv"
    write_csv(frame, csv_path)
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    info = manifest(name, len(frame), wall, seconds, type(backend).__name__, jobs, digest, started)
    (results_dir / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return frame


# --- staleness ---------------------------------------------------------------------------------------


def _first_difference(a: object, b: object, where: str = "CONFIG") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}[{key!r}] is {'missing' if key not in a else 'new'} in the code"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{where}[{key!r}]")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where} is {b!r} in the code, {a!r} in the manifest"


def problems(name: str, package_dir: Path = PACKAGE_DIR, results_dir: Path = RESULTS_DIR) -> list[str]:
    """Why the committed result of experiment ``name`` does not match the code under ``package_dir``
    (an empty list when it does): a missing file, a different code fingerprint (naming the files that
    changed) or a different configuration. Each message names the command that reruns it."""
    module = get(name)
    rerun = f"rerun `{command(name)}` and commit data/results/{name}.csv and {name}.json"
    path = results_dir / f"{name}.json"
    if not path.exists() or not (results_dir / f"{name}.csv").exists():
        return [f"experiment {name!r} has no committed result in {results_dir.name}/: {rerun}"]
    stored = json.loads(path.read_text(encoding="utf-8"))
    out = []
    files = code_files(name, package_dir)
    if fingerprint(files) != stored.get("fingerprint"):
        old = stored.get("code", {})
        changed = sorted(f for f in set(files) | set(old) if files.get(f) != old.get(f))
        out.append(f"experiment {name!r} is stale: its code changed since the result was computed "
                   f"({', '.join(changed) or 'fingerprint'}); {rerun}")
    config = normalised(module.CONFIG)
    if config != stored.get("config"):
        out.append(f"experiment {name!r} is stale: its configuration changed "
                   f"({_first_difference(stored.get('config'), config)}); {rerun}")
    if {"point": "int", **module.COLUMNS} != stored.get("columns"):
        out.append(f"experiment {name!r} is stale: its COLUMNS differ from the manifest's; {rerun}")
    return out


def main(argv: Sequence[str]) -> int:
    """``python -m chipbook.experiments [NAME ...]``: run the named experiments (default: all)."""
    chosen = list(argv) or names()
    for name in chosen:
        get(name)  # fail before running anything on a misspelt name
    for name in chosen:
        frame = run(name)
        info = json.loads((RESULTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
        print(f"{name}: {len(frame)} rows from {len(info['point_s'])} points in {info['wall_s']:.1f} s "
              f"-> data/results/{name}.csv", file=sys.stderr)
    return 0


