"""Load the book's data files, with every cell checked against the units that data/README.md declares.

``data/README.md`` has, for each ``name.csv``, a heading ``## name.csv`` and a table
``column | unit | meaning``. :func:`load` reads the CSV with the standard library (so that each row
keeps its line number), checks that the header is exactly the declared columns, that every numeric
cell parses and lies in the range its unit allows, and that every ``source`` names an entry of
``book/references.bib``. A malformed row raises :class:`DataError` naming its file, line and column.

:func:`result` loads what an experiment of :mod:`chipbook.experiments` computed, from
``data/results/<name>.csv``, checked against its manifest ``<name>.json``, which
:func:`provenance` summarises for the page.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from functools import cache
from pathlib import Path

import pandas as pd

from chipbook import fmt

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
RESULTS_DIR = DATA_DIR / "results"
BIB_FILES = (ROOT / "book" / "references.bib",)

#: unit -> (kind, minimum, maximum); kinds: "text", "number", "key"
UNITS: dict[str, tuple[str, float, float]] = {
    "text": ("text", 0, 0),
    "bibkey": ("key", 0, 0),
    "year-month": ("text", 0, 0),
    "count": ("number", 0, math.inf),
    "tokens": ("number", 0, math.inf),
    "days": ("number", 0, math.inf),
    "FLOP": ("number", 0, math.inf),
    "GPU-hours": ("number", 0, math.inf),
    "TFLOP/s": ("number", 0, math.inf),
    "GB": ("number", 0, math.inf),
    "GB/s": ("number", 0, math.inf),
    "MB": ("number", 0, math.inf),
    "us": ("number", 0, math.inf),
    "fraction": ("number", 0, 1),
    "year": ("number", 1900, 2100),
    "W": ("number", 0, math.inf),
    "USD": ("number", 0, math.inf),
    "ratio": ("number", 0, math.inf),
}
_HEADING = re.compile(r"^##\s+`?([\w.-]+\.csv)`?\s*$")
_BIB_KEY = re.compile(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)


class DataError(ValueError):
    """A data file or one of its rows does not match what data/README.md declares."""


def schemas(readme: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """The declared ``(column, unit)`` list of every CSV described in data/README.md."""
    readme = readme or DATA_DIR / "README.md"
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        heading = _HEADING.match(line)
        if heading:
            current = heading.group(1)
            out[current] = []
            continue
        if line.startswith("#"):  # a section about something other than one CSV file
            current = None
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if current is None or not line.lstrip().startswith("|") or len(cells) < 2:
            continue
        column, unit = cells[0], cells[1]
        if column in ("column", "") or set(column) <= set("-: "):
            continue
        if unit not in UNITS:
            raise DataError(f"{readme}:{number}: column {column!r} of {current} has unknown unit "
                            f"{unit!r}; allowed: {', '.join(UNITS)}")
        out[current].append((column, unit))
    return out


def bib_keys(paths: tuple[Path, ...] = BIB_FILES) -> set[str]:
    """Every entry key in the book's bibliography files."""
    return {key for path in paths for key in _BIB_KEY.findall(path.read_text(encoding="utf-8"))}


def _check_cell(where: str, column: str, unit: str, raw: str, keys: set[str]):
    kind, low, high = UNITS[unit]
    value = raw.strip()
    if kind == "text":
        return value or None
    if kind == "key":
        if value not in keys:
            raise DataError(f"{where}, column {column!r}: source {value!r} is not in book/references.bib")
        return value
    if value == "":
        return math.nan
    try:
        if "_" in value:  # float() accepts "1_000"; the README allows no digit separators
            raise ValueError(value)
        number = float(value)
    except ValueError:
        raise DataError(f"{where}, column {column!r}: {raw!r} is not a number ({unit})") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise DataError(f"{where}, column {column!r}: {raw!r} is outside [{low}, {high}] for unit {unit}")
    return number


def load_file(path: Path, columns: list[tuple[str, str]], keys: set[str]) -> pd.DataFrame:
    """Load and check one CSV against its declared ``columns`` and the bibliography ``keys``."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        declared = [c for c, _ in columns]
        if header != declared:
            header = header or []
            first = next((i for i, (h, d) in enumerate(zip(header, declared, strict=False)) if h != d),
                         min(len(header), len(declared)))
            found = repr(header[first]) if first < len(header) else "nothing"
            wanted = repr(declared[first]) if first < len(declared) else "nothing"
            raise DataError(f"{path}, line 1, column {first + 1}: header has {found} where data/README.md "
                            f"declares {wanted}; header {header}, declared {declared}")
        records = []
        end = reader.line_num
        for row in reader:
            # a quoted field may span lines: name the line the row starts on (and where it ends)
            start, end = end + 1, reader.line_num
            where = f"{path}, line {start}" if start == end else f"{path}, lines {start}-{end}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(columns):
                missing = ", ".join(repr(c) for c in declared[len(row):])
                raise DataError(f"{where}: {len(row)} cells, expected {len(columns)}; "
                                f"no value for column {missing}")
            if len(row) > len(columns):
                raise DataError(f"{where}: {len(row)} cells, expected {len(columns)}; "
                                f"extra value {row[len(columns)]!r} after column {declared[-1]!r} "
                                f"(quote a field that contains a comma)")
            records.append([_check_cell(where, c, u, raw, keys)
                            for (c, u), raw in zip(columns, row, strict=True)])
    frame = pd.DataFrame(records, columns=declared)
    for column, unit in columns:
        frame[column] = frame[column].astype("float64" if UNITS[unit][0] == "number" else "string")
    frame.attrs["units"] = dict(columns)
    frame.attrs["path"] = str(path)
    return frame


def load(name: str) -> pd.DataFrame:
    """The data file ``data/<name>.csv`` as a DataFrame, every cell checked (see module doc).

    Numeric columns are float64 (blank cells are NaN); text columns are pandas strings.
    ``frame.attrs["units"]`` maps each column to its declared unit.
    """
    return _load(name).copy()


@cache
def _load(name: str) -> pd.DataFrame:
    declared = schemas()
    file = f"{name}.csv"
    if file not in declared:
        raise ValueError(f"name must be one of {sorted(f[:-4] for f in declared)}, got {name!r}")
    return load_file(DATA_DIR / file, declared[file], bib_keys())


def names() -> list[str]:
    """The names of every data file that data/README.md describes."""
    return sorted(f[:-4] for f in schemas())


def readable_number(value: float, unit: str) -> str:
    """A number of a data file as the chapters write it: a year as is, whole numbers below a million
    with thousands separators (12,288), larger values in words (7.0 billion, 175 billion) up to the
    quadrillions and as a power of ten beyond (3.8 × 10²⁵), others to four significant digits; as
    many digits as the stored value has (two at least, four at most)."""
    if unit not in UNITS or UNITS[unit][0] != "number":
        raise ValueError(f"unit must be a numeric unit of {sorted(UNITS)}, got {unit!r}")
    if unit == "year":
        return f"{int(value)}"
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value):,}"
    mantissa = f"{abs(value):.4e}".split("e")[0].replace(".", "").rstrip("0")
    digits = min(4, max(2, len(mantissa)))
    if abs(value) >= 1e18:
        return fmt.sci(value, digits)
    if abs(value) >= 1e6:
        return fmt.words(value, digits)
    return f"{value:.4g}"


#: Abbreviations that column names write in lower case, as the prose writes them.
_ACRONYMS = {"hbm": "HBM", "sram": "SRAM", "ddr": "DDR", "gpu": "GPU", "gpus": "GPUs", "mfu": "MFU",
             "tp": "TP", "cp": "CP", "pp": "PP", "dp": "DP", "kv": "KV", "ffn": "FFN", "bf16": "BF16",
             "tdp": "TDP", "usd": "USD", "rl": "RL", "flop": "FLOP", "ulp": "ulp", "algbw": "algbw"}


def readable_header(column: str, unit: str) -> str:
    """A column name as words: underscores as spaces, abbreviations in capitals (hbm -> HBM), and a
    trailing spelling of an abbreviated unit dropped, since the unit follows in brackets
    ("hbm_bandwidth_gb_s", GB/s -> "HBM bandwidth"); a unit that is a plain word ("tokens") stays."""
    words = column.split("_")
    unit_words = [w for w in re.split(r"[^a-z0-9]+", unit.lower()) if w]
    plain = unit.isalpha() and unit.islower() and len(unit) > 3  # "tokens", "days"; not "us"
    if not plain and unit_words and len(words) > len(unit_words) and words[-len(unit_words):] == unit_words:
        words = words[:-len(unit_words)]
    return " ".join(_ACRONYMS.get(w, w) for w in words)


def markdown_table(name: str) -> str:
    """``data/<name>.csv`` as MyST Markdown: a table in a ``chipbook-data`` block (which the book's
    style sheet lets scroll sideways) with readable headers (units in brackets), numbers as
    :func:`readable_number` writes them, blank cells as "–" and each source as a citation of its
    bibliography entry; then, in a dropdown, the same table with the values as the file stores them."""
    frame = load(name)
    units = frame.attrs["units"]

    def cell(value, unit: str, raw: bool) -> str:
        if pd.isna(value):
            return "–"
        if unit == "bibkey":
            return f"{{cite:p}}`{value}`"
        if UNITS[unit][0] == "number":
            return (f"{int(value)}" if value == int(value) and abs(value) < 1e6 else f"{value:g}") if raw \
                else readable_number(value, unit)
        return str(value).replace("|", "\\|")

    def table(raw: bool) -> list[str]:
        shown = {c: c if raw else readable_header(c, units[c]) for c in frame.columns}
        header = [shown[c] if units[c] in ("text", "bibkey") else f"{shown[c]} ({units[c]})"
                  for c in frame.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for _, row in frame.iterrows():
            lines.append("| " + " | ".join(cell(row[c], units[c], raw) for c in frame.columns) + " |")
        return [":::{div} chipbook-data", *lines, ":::"]

    return "\n".join([*table(raw=False), "", "::::{dropdown} The values as the file stores them",
                      *table(raw=True), "::::"])


# --- results of the experiment tier -----------------------------------------------------------------

#: result column kinds -> pandas dtypes
RESULT_KINDS = {"text": "string", "int": "int64", "float": "float64"}


def typed(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """``frame`` with each column in the dtype of its kind (``columns``: name -> text, int, float)."""
    return frame.astype({c: RESULT_KINDS[k] for c, k in columns.items()})


def _read_result(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    parse = {"text": str, "int": int, "float": float}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != list(columns):
            raise DataError(f"{path}, line 1: header {header} differs from the manifest's columns "
                            f"{list(columns)}")
        records = []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if len(row) != len(columns):
                raise DataError(f"{where}: {len(row)} cells, expected {len(columns)}")
            try:
                records.append([parse[k](v) for k, v in zip(columns.values(), row, strict=True)])
            except ValueError as error:
                raise DataError(f"{where}: {error}") from None
    return typed(pd.DataFrame(records, columns=list(columns)), columns)


class Manifest(dict):
    """A result's manifest, read-only by convention: pandas deep-copies a frame's ``attrs`` on nearly
    every operation, and a manifest (with its whole configuration) is large, so the copies share it."""

    def __deepcopy__(self, memo: dict) -> Manifest:
        return self


def manifest(name: str, results_dir: Path | None = None) -> dict:
    """The manifest ``data/results/<name>.json`` of a committed experiment result."""
    path = (results_dir or RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in (results_dir or RESULTS_DIR).glob("*.json"))
        raise ValueError(f"name must be a committed experiment result {known}, got {name!r}")
    return json.loads(path.read_text(encoding="utf-8"))


def result(name: str, results_dir: Path | None = None) -> pd.DataFrame:
    """The table experiment ``name`` computed (``data/results/<name>.csv``), every row checked
    against its manifest: the header, the number of rows, each cell's kind, and the file's SHA-256
    (a hand edit fails). ``frame.attrs["manifest"]`` holds the manifest. Run the experiment with
    ``make experiments NAME=<name>``."""
    info = manifest(name, results_dir)
    path = (results_dir or RESULTS_DIR) / f"{name}.csv"
    if hashlib.sha256(path.read_bytes()).hexdigest() != info["csv_sha256"]:
        raise DataError(f"{path} is not the file its manifest describes (SHA-256 differs): rerun "
                        f"`{info['command']}` rather than editing it")
    frame = _read_result(path, info["columns"])
    if len(frame) != info["rows"]:
        raise DataError(f"{path}: {len(frame)} rows, the manifest says {info['rows']}")
    frame.attrs["manifest"] = Manifest(info)
    return frame


def provenance(name: str, results_dir: Path | None = None) -> str:
    """One paragraph of Markdown on where the result of experiment ``name`` comes from: its grid,
    when and on what it ran, how long it took, its code fingerprint and the command that reruns it."""
    info = manifest(name, results_dir)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    machine = info["machine"]
    return (f"Cached result `{name}`: {info['rows']:,} rows from {len(info['config']['grid'])} grid "
            f"points, computed on {info['date'][:10]} in {info['wall_s']:.0f} s on {machine['cores']} "
            f"cores ({machine['cpu']}) with {versions}; code fingerprint `{info['fingerprint'][:12]}`. "
            f"Rerun it with `{info['command']}`; `make test` fails if the code or its configuration "
            f"has changed since.")
