"""Load the book's data files, with every cell checked against the units that data/README.md declares.

``data/README.md`` has, for each ``name.csv``, a heading ``## name.csv`` and a table
``column | unit | meaning``. :func:`load` reads the CSV with the standard library (so that each row
keeps its line number), checks that the header is exactly the declared columns, that every numeric
cell parses and lies in the range its unit allows, and that every ``source`` names an entry of
``book/references.bib``. A malformed row raises :class:`DataError` naming its file, line and column.
"""

from __future__ import annotations

import csv
import math
import re
from functools import cache
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
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
    "fraction": ("number", 0, 1),
    "year": ("number", 1900, 2100),
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
            raise DataError(f"{path}, line 1: header {header} differs from data/README.md: {declared}")
        records = []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise DataError(f"{where}: {len(row)} cells, expected {len(columns)}")
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
