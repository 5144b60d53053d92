"""The data files: each described in data/README.md, each loading with every cell checked, every
source a key of book/references.bib (parsed here with pybtex, independently of chipbook.data),
malformed rows failing with their file, line and column, and sanity checks that catch real data
mistakes (an active-parameter count above the total, a token count below the parameter count...).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from pybtex.database import parse_file

from chipbook import data

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
README = DATA / "README.md"

# The README's conventions, typed from its text: "non-negative; fractions in [0, 1]", years.
NUMERIC_RANGE = {"count": (0, math.inf), "tokens": (0, math.inf), "days": (0, math.inf),
                 "FLOP": (0, math.inf), "GPU-hours": (0, math.inf), "TFLOP/s": (0, math.inf),
                 "GB": (0, math.inf), "GB/s": (0, math.inf), "MB": (0, math.inf), "us": (0, math.inf),
                 "fraction": (0, 1), "year": (1900, 2100), "USD": (0, math.inf), "W": (0, math.inf),
                 "ratio": (0, math.inf)}
TEXT_UNITS = {"text", "year-month", "bibkey"}


def _readme_tables() -> dict[str, list[tuple[str, str]]]:
    """The README's tables, read here with a parser of our own (not chipbook.data.schemas)."""
    tables: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in README.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"##\s+`?(\S+\.csv)`?\s*", line)
        if heading:
            current = tables.setdefault(heading.group(1), [])
        elif current is not None and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in ("column", "---"):
                current.append((cells[0], cells[1]))
    return tables


def _readme_allowed_units() -> set[str]:
    text = " ".join(README.read_text(encoding="utf-8").split())
    sentence = re.search(r"The unit is one of (.*?)\. ", text)
    assert sentence, "data/README.md no longer lists the allowed units"
    return set(re.findall(r"`([^`]+)`", sentence.group(1)))


@pytest.fixture(scope="module")
def bib():
    return parse_file(str(ROOT / "book" / "references.bib")).entries


@pytest.fixture(scope="module")
def frames():
    return {name: data.load(name) for name in data.names()}


# --- the README and the files agree -----------------------------------------------------------------


def test_every_csv_is_described_and_every_description_has_a_csv():
    on_disk = {p.name for p in DATA.glob("*.csv")}
    described = set(_readme_tables())
    assert on_disk == described
    assert set(data.names()) == {f.removesuffix(".csv") for f in on_disk}
    assert data.schemas() == _readme_tables()  # chipbook's README parser agrees with this one


def test_units_are_the_allowed_ones():
    allowed = _readme_allowed_units()
    assert allowed == set(NUMERIC_RANGE) | TEXT_UNITS  # the README's list is what this test knows
    assert allowed == set(data.UNITS)                  # ... and what the loader knows
    for file, columns in _readme_tables().items():
        for column, unit in columns:
            assert unit in allowed, f"{file}: column {column} has unit {unit!r}"
        assert ("source", "bibkey") in columns and ("note", "text") in columns, file


def test_unknown_unit_in_readme_names_the_readme_line(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## a.csv\n\n| column | unit | meaning |\n| --- | --- | --- |\n"
                      "| n | count | ok |\n| speed | furlongs | bad |\n", encoding="utf-8")
    with pytest.raises(data.DataError) as err:
        data.schemas(readme)
    message = str(err.value)
    assert f"{readme}:8:" in message and "'speed'" in message and "'furlongs'" in message


@pytest.mark.parametrize("name", data.names())
def test_every_file_loads_with_typed_columns_in_range(name, frames):
    frame = frames[name]
    assert len(frame) > 0
    columns = dict(_readme_tables()[f"{name}.csv"])
    assert list(frame.columns) == list(columns)
    assert frame.attrs["units"] == columns
    for column, unit in columns.items():
        if unit in NUMERIC_RANGE:
            assert frame[column].dtype == np.float64, column
            low, high = NUMERIC_RANGE[unit]
            present = frame[column].dropna()
            assert ((present >= low) & (present <= high)).all(), f"{name}.{column} outside [{low}, {high}]"
        else:
            assert frame[column].dtype == "string", column
    assert frame["source"].notna().all()


@pytest.mark.parametrize("name", data.names())
def test_counts_are_whole_numbers(name, frames):
    frame = frames[name]
    for column, unit in frame.attrs["units"].items():
        if unit == "count":
            present = frame[column].dropna()
            assert (present == np.round(present)).all(), f"{name}.{column} has a fractional count"


@pytest.mark.parametrize("name", data.names())
def test_year_months_are_real_months(name, frames):
    frame = frames[name]
    for column, unit in frame.attrs["units"].items():
        if unit == "year-month":
            for value in frame[column].dropna():
                assert re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])", value), f"{name}.{column}: {value!r}"


def test_bib_keys_match_pybtex(bib):
    assert data.bib_keys() == set(bib)


@pytest.mark.parametrize("name", data.names())
def test_every_source_is_in_the_bibliography(name, frames, bib):
    missing = set(frames[name]["source"]) - set(bib)
    assert not missing, f"{name}.csv cites keys missing from book/references.bib: {sorted(missing)}"


def test_every_bib_entry_has_a_title_and_year(bib):
    for key, entry in bib.items():
        assert entry.fields.get("title"), key
        assert re.fullmatch(r"\d{4}", str(entry.fields.get("year", ""))), key


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load("no_such_file")


def test_load_returns_a_copy():
    first = data.load("models")
    first.loc[0, "params"] = -1
    assert data.load("models").loc[0, "params"] > 0


# --- malformed rows fail with file, line and column ------------------------------------------------

TOY_README = """# toy

## toy.csv

| column | unit | meaning |
| --- | --- | --- |
| name | text | a name |
| n | count | a count |
| share | fraction | a share |
| source | bibkey | a key |
| note | text | a note |
"""
HEADER = "name,n,share,source,note\n"
GOOD = ['alpha,1,0.5,key1,fine\n', '"beta, with a comma",2e3,1,key2,"note, also with a comma"\n']


def _load_toy(tmp_path, lines):
    readme = tmp_path / "README.md"
    readme.write_text(TOY_README, encoding="utf-8")
    path = tmp_path / "toy.csv"
    path.write_text("".join(lines), encoding="utf-8")
    return path, lambda: data.load_file(path, data.schemas(readme)["toy.csv"], {"key1", "key2"})


def test_toy_file_loads(tmp_path):
    _, load = _load_toy(tmp_path, [HEADER, *GOOD, "\n", "gamma,,0.25,key1,\n"])
    frame = load()
    assert list(frame["name"]) == ["alpha", "beta, with a comma", "gamma"]
    assert frame["n"].tolist()[:2] == [1.0, 2000.0] and math.isnan(frame["n"].iloc[2])
    assert frame["note"].iloc[1] == "note, also with a comma"
    assert frame.attrs["units"]["share"] == "fraction"


BAD_ROWS = [
    # (row, column named in the error, a fragment of the message)
    ("delta,three,0.5,key1,x\n", "n", "not a number"),
    ("delta,-4,0.5,key1,x\n", "n", "outside"),
    ("delta,4,1.2,key1,x\n", "share", "outside"),
    ("delta,4,-0.1,key1,x\n", "share", "outside"),
    ("delta,4,0.5,nokey,x\n", "source", "not in book/references.bib"),
    ("delta,nan,0.5,key1,x\n", "n", "outside"),
    ("delta,inf,0.5,key1,x\n", "n", "outside"),
    ("delta,1_000,0.5,key1,x\n", "n", "not a number"),
    ("delta,12%,0.5,key1,x\n", "n", "not a number"),
    ('"delta, quoted",4,half,key1,"x, y"\n', "share", "not a number"),  # the commas shift nothing
    ("delta,4,0.5\n", "source", "3 cells, expected 5"),
    ("delta,4\n", "share", "2 cells, expected 5"),
    ("delta, unquoted,4,0.5,key1,x\n", "note", "6 cells, expected 5"),
]


@pytest.mark.parametrize(("row", "column", "fragment"), BAD_ROWS, ids=[r[0].strip() for r in BAD_ROWS])
def test_malformed_row_names_file_line_and_column(tmp_path, row, column, fragment):
    # header, two good rows, a blank line, then the bad row: line 5
    path, load = _load_toy(tmp_path, [HEADER, *GOOD, "\n", row, GOOD[0]])
    with pytest.raises(data.DataError) as err:
        load()
    message = str(err.value)
    assert str(path) in message
    assert re.search(r"\bline 5\b", message), message
    assert f"'{column}'" in message, message
    assert fragment in message


def test_row_after_a_multi_line_field_gets_its_own_line(tmp_path):
    lines = [HEADER, 'alpha,1,0.5,key1,"a note\nover two lines"\n', "beta,x,0.5,key1,\n"]
    path, load = _load_toy(tmp_path, lines)
    with pytest.raises(data.DataError, match=rf"{re.escape(str(path))}, line 4, column 'n'"):
        load()
    path, load = _load_toy(tmp_path, [HEADER, 'alpha,x,0.5,key1,"a note\nover two lines"\n'])
    with pytest.raises(data.DataError, match=r"lines 2-3, column 'n'"):
        load()


@pytest.mark.parametrize(
    ("header", "column"),
    [("name,count,share,source,note\n", "count"),  # renamed
     ("name,n,share,source\n", "note"),            # missing
     ("name,n,share,source,note,extra\n", "extra"),
     ("name,share,n,source,note\n", "share")],     # reordered
)
def test_wrong_header_names_file_line_and_column(tmp_path, header, column):
    path, load = _load_toy(tmp_path, [header, *GOOD])
    with pytest.raises(data.DataError) as err:
        load()
    message = str(err.value)
    assert str(path) in message and re.search(r"\bline 1\b", message) and f"'{column}'" in message


def test_empty_file_fails_on_its_header(tmp_path):
    path, load = _load_toy(tmp_path, [])
    with pytest.raises(data.DataError, match=rf"{re.escape(str(path))}, line 1"):
        load()


# --- sanity checks that catch real data mistakes ---------------------------------------------------


def test_models_parameter_counts(frames):
    models = frames["models"]
    assert (models["active_params"] <= models["params"]).all()
    dense = models[models["note"].str.contains("dense")]
    assert len(dense) >= 5
    assert (dense["active_params"] == dense["params"]).all()
    moe = models[models["note"].str.contains("MoE")]
    assert (moe["active_params"] < moe["params"]).all()
    assert (models["train_tokens"] > models["params"]).all()


def test_models_attention_shapes(frames):
    models = frames["models"]
    both = models.dropna(subset=["heads", "kv_heads"])
    assert (both["kv_heads"] <= both["heads"]).all()
    assert (both["heads"] % both["kv_heads"] == 0).all()  # each KV head serves a whole group
    for _, row in models.iterrows():
        note = row["note"]
        if "MHA" in note:
            assert row["kv_heads"] == row["heads"], row["model"]
        if "multi-query" in note:
            assert row["kv_heads"] == 1, row["model"]
        if "GQA" in note:
            assert 1 < row["kv_heads"] < row["heads"], row["model"]


def test_gpt3_shape_reproduces_its_parameter_count(frames):
    # Kaplan et al. 2020, Table 1: N ≈ 12·n_layer·d_model² for a dense transformer with d_ff = 4·d
    # (embeddings excluded); GPT-3's 96 layers of width 12288 give 174B of its 175B.
    gpt3 = frames["models"].set_index("model").loc["GPT-3 175B"]
    assert 12 * gpt3["layers"] * gpt3["d_model"] ** 2 == pytest.approx(gpt3["params"], rel=0.02)


def test_palm_chip_hours_are_the_notes_arithmetic(frames):
    palm = frames["models"].set_index("model").loc["PaLM 540B"]
    assert "6144 chips x 1200 h + 3072 chips x 336 h" in palm["note"]
    assert palm["reported_gpu_hours"] == 6144 * 1200 + 3072 * 336


def test_chips(frames):
    chips = frames["chips"]
    for column in ["bf16_dense_tflop_s", "hbm_gb", "hbm_bandwidth_gb_s", "sram_mb", "sram_bandwidth_gb_s",
                   "ddr_gb", "ddr_bandwidth_gb_s"]:
        assert (chips[column].dropna() > 0).all(), column
    # a tier's bandwidth comes with its capacity; a tier without a bandwidth says it was not confirmed
    for capacity, bandwidth in [("hbm_gb", "hbm_bandwidth_gb_s"), ("sram_mb", "sram_bandwidth_gb_s"),
                                ("ddr_gb", "ddr_bandwidth_gb_s")]:
        assert not (chips[bandwidth].notna() & chips[capacity].isna()).any(), bandwidth
    no_hbm_bandwidth = chips[chips["hbm_gb"].notna() & chips["hbm_bandwidth_gb_s"].isna()]
    assert no_hbm_bandwidth["note"].str.contains("not confirmed").all()
    # H100 and H200 share a die: same dense peak, more and faster memory on the H200
    c = chips.set_index("chip")
    assert c.loc["NVIDIA H100 SXM", "bf16_dense_tflop_s"] == c.loc["NVIDIA H200 SXM", "bf16_dense_tflop_s"]
    assert c.loc["NVIDIA H200 SXM", "hbm_gb"] > c.loc["NVIDIA H100 SXM", "hbm_gb"]
    assert c.loc["NVIDIA H200 SXM", "hbm_bandwidth_gb_s"] > c.loc["NVIDIA H100 SXM", "hbm_bandwidth_gb_s"]


def test_inference_shares_are_strictly_between_zero_and_one(frames):
    shares = frames["inference_share"]["inference_share"]
    assert ((shares > 0) & (shares < 1)).all()


def test_utilisation_is_a_proper_fraction(frames):
    mfu = frames["training_utilisation"]["mfu"]
    assert ((mfu > 0) & (mfu < 1)).all()


def test_token_volumes(frames):
    volumes = frames["token_volumes"]
    assert (volumes["tokens"] > 0).all() and (volumes["period_days"] > 0).all()
    per_minute = volumes[volumes["note"].str.contains("per minute")]
    assert len(per_minute) >= 4
    np.testing.assert_allclose(per_minute["period_days"], 1 / 1440, rtol=1e-6)


def test_head_dim_matches_the_width_where_it_should(frames):
    # For GPT-3 and Llama, heads × head width is the model width (Brown et al. 2020, Table 2.1:
    # d_head 128); PaLM's 48 heads of 256 are narrower than its 18432 (Chowdhery et al. 2022).
    models = frames["models"].set_index("model")
    for name in ("GPT-3 175B", "Llama 2 70B", "Llama 3.1 8B", "Llama 3.1 70B", "Llama 3.1 405B"):
        row = models.loc[name]
        assert row["heads"] * row["head_dim"] == row["d_model"], name
    palm = models.loc["PaLM 540B"]
    assert palm["heads"] * palm["head_dim"] == 12288 < palm["d_model"]


def test_markdown_table_renders_every_row_with_citations():
    frame = data.load("models")
    block = data.markdown_table("models").splitlines()
    split = block.index("::::{dropdown} The values as the file stores them")
    readable, raw = block[:split - 1], block[split + 1:-1]
    for part in (readable, raw):
        assert part[0] == ":::{div} chipbook-data" and part[-1] == ":::"
        table = part[1:-1]
        assert len(table) == 2 + len(frame)
        assert table[0].count("|") == len(frame.columns) + 1
        assert "params (count)" in table[0] and "| source |" in table[0]
        for line, (_, row) in zip(table[2:], frame.iterrows(), strict=True):
            assert line.startswith(f"| {row['model']} |")
            assert f"{{cite:p}}`{row['source']}`" in line
        chinchilla = next(line for line in table if line.startswith("| Chinchilla"))
        assert "| – |" in chinchilla  # its context is blank in the CSV
    assert "train tokens (tokens)" in readable[1] and "train_tokens (tokens)" in raw[1]
    gpt3_readable, gpt3_raw = readable[3], raw[3]
    assert "| 12,288 |" in gpt3_readable and "| 175 billion |" in gpt3_readable
    assert "| 12288 |" in gpt3_raw and "| 1.75e+11 |" in gpt3_raw


@pytest.mark.parametrize(("value", "unit", "expected"), [
    (7e9, "count", "7.0 billion"), (1.75e11, "count", "175 billion"), (12288, "count", "12,288"),
    (2024, "year", "2024"), (3.14e23, "FLOP", "3.14 × 10²³"), (0.38, "fraction", "0.38"),
    (1.5e6, "tokens", "1.5 million"), (989.4, "TFLOP/s", "989.4"),
])
def test_readable_numbers_are_written_as_the_chapters_write_them(value, unit, expected):
    assert data.readable_number(value, unit) == expected


def test_readable_number_refuses_a_text_unit():
    with pytest.raises(ValueError, match="unit"):
        data.readable_number(1.0, "text")


@pytest.mark.parametrize(("column", "unit", "header"), [
    ("bf16_dense_tflop_s", "TFLOP/s", "BF16 dense"), ("hbm_bandwidth_gb_s", "GB/s", "HBM bandwidth"),
    ("time_us", "us", "time"), ("train_tokens", "tokens", "train tokens"), ("gpus", "count", "GPUs"),
    ("tdp_w", "W", "TDP"), ("cost_usd_per_day", "USD", "cost USD per day"), ("us", "us", "us")])
def test_headers_are_words_without_a_repeated_unit(column, unit, header):
    assert data.readable_header(column, unit) == header
