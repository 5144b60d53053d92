"""The experiment tier keeps its cache honest: every committed result matches the code and the
configuration that made it (staleness), a few of its grid points computed again give the stored rows
(reproduction), and an edit of an experiment's code, in a temporary copy, makes the check fail."""

from __future__ import annotations

import ast
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chipbook import data, experiments
from chipbook import numerics as nm
from chipbook.experiments import lowprec_training

NAMES = experiments.names()

# Relative tolerance of the float cells when grid points are computed again, per experiment.
#
# lowprec_training: 1e-12. Training is float32 arithmetic whose matrix products are accumulated in
# float64 and rounded once to float32, and whose casts are exact bit operations, so the trajectory
# does not depend on the BLAS kernel's summation order; a rerun on this machine is bit-identical. What
# may differ on another CPU is the last bit of numpy's float64 exp and log (its AVX-512 kernels and
# the C library's differ by an ulp): that reaches the reported loss (a float64 log-sum-exp, not fed
# back into training) as a relative 1e-16, far inside 1e-12. A tolerance wide enough for a changed
# trajectory would be meaningless here: one float32 ulp on the initial weights moves the low-precision
# runs' final losses by up to 15% (measured), so a trajectory that changed is reported, not tolerated.
#
# layer_activations: 0. Its only numbers are whole bytes of saved storages, which depend on shapes and
# number formats, not on arithmetic.
#
# outlier_transformer: 1e-4, on the held-out loss at the end of the warm-up (its QUICK settings: 30
# steps of one seed, a few seconds a point; the full points take minutes). Training is torch's float32
# arithmetic, whose matrix products' summation order depends on the CPU's kernels (AVX2, AVX-512, ARM),
# so another machine may differ in the last bits of a product; the FP8 and int8 casts turn a value that
# lands on the other side of a rounding boundary into a difference of one step of the format, and 30
# steps of training carry that forward. A rerun on this machine is bit-identical; 1e-4 is a judgement,
# not a measurement on another CPU. It still tells apart what the chapter's verdict rests on: at the
# largest outlier gain, per-tensor FP8 and MXFP8 differ at that step by about 1% (see
# test_quick_rows_tell_recipes_apart); fp32 and bf16 (6e-5 apart there) it would not.
RTOL = {"lowprec_training": 1e-12, "layer_activations": 0.0, "outlier_transformer": 1e-4}


def test_every_experiment_has_a_tolerance():
    assert set(NAMES) == set(RTOL), "state and justify the reproduction tolerance of each experiment in RTOL"


@pytest.mark.parametrize("name", NAMES)
def test_committed_result_is_current(name):
    """Fails, naming the experiment and `make experiments NAME=…`, when the code that the result
    depends on or its configuration changed after the result was computed."""
    found = experiments.problems(name)
    assert not found, "\n".join(found)


def _quick_rows(name: str, chosen: list[int]) -> pd.DataFrame:
    """The rows of grid points ``chosen`` computed again under the experiment's QUICK settings."""
    module = experiments.get(name)
    settings = {**experiments.shared(module.CONFIG), **module.QUICK}
    rows = [{"point": i, **r} for i in chosen for r in module.run_one(module.CONFIG["grid"][i], settings)]
    frame = pd.DataFrame(rows, columns=["point", *module.COLUMNS])
    return data.typed(frame, {"point": "int", **module.COLUMNS})


@pytest.mark.parametrize("name", NAMES)
def test_grid_points_reproduce_the_stored_rows(name):
    """The first, middle and last grid points computed again give the stored rows. An experiment
    whose points take minutes declares QUICK settings (a shorter run) under which some of its rows
    come out the same: those rows, and only those, are compared."""
    module = experiments.get(name)
    grid = module.CONFIG["grid"]
    chosen = sorted({0, len(grid) // 2, len(grid) - 1})  # the first, the middle and the last point
    stored = data.result(name)
    stored = stored[stored["point"].isin(chosen)].reset_index(drop=True)
    if hasattr(module, "QUICK"):
        keys = [c for c, kind in stored.attrs["manifest"]["columns"].items() if kind != "float"]
        again = _quick_rows(name, chosen)
        both = again.merge(stored, on=keys, suffixes=("", "_stored"), validate="one_to_one")
        assert set(both["point"]) == set(chosen), f"{name}: QUICK settings reproduce no row of some point"
        for column in (c for c, kind in module.COLUMNS.items() if kind == "float"):
            np.testing.assert_allclose(both[column], both[f"{column}_stored"], rtol=RTOL[name], atol=0,
                                       equal_nan=True, err_msg=f"{name}: column {column}")
        return
    again, _ = experiments.run_points(name, chosen, n_jobs=1, progress=False)
    assert list(again.columns) == list(stored.columns)
    assert len(again) == len(stored)
    kinds = stored.attrs["manifest"]["columns"]
    for column, kind in kinds.items():
        if kind == "float":
            np.testing.assert_allclose(again[column].to_numpy(), stored[column].to_numpy(), rtol=RTOL[name],
                                       atol=0, equal_nan=True, err_msg=f"{name}: column {column}")
        else:
            assert again[column].tolist() == stored[column].tolist(), f"{name}: column {column}"


# --- the staleness check can fail ---------------------------------------------------------------------


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the chipbook package, to edit."""
    copy = tmp_path / "chipbook"
    shutil.copytree(experiments.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _module_file(package: Path, name: str) -> Path:
    return package / "experiments" / f"{name}.py"


@pytest.mark.parametrize("name", NAMES)
def test_layout_comments_and_docstrings_leave_the_fingerprint(name, package_copy):
    path = _module_file(package_copy, name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body[0] = ast.Expr(ast.Constant("A docstring rewritten."))  # the module docstring
    # ast.unparse rewrites every line (quotes, spacing, line breaks) and drops every comment
    path.write_text("# a new comment\n\n\n" + ast.unparse(tree).replace("\n", "\n\n") + "  # trailing\n",
                    encoding="utf-8")
    assert experiments.problems(name, package_copy) == []


@pytest.mark.parametrize("name", NAMES)
def test_an_edited_experiment_is_stale(name, package_copy):
    path = _module_file(package_copy, name)
    path.write_text(path.read_text(encoding="utf-8") + "\nEDITED = 1\n", encoding="utf-8")
    found = experiments.problems(name, package_copy)
    assert len(found) == 1
    assert f"experiment {name!r} is stale" in found[0]
    assert f"chipbook/experiments/{name}.py" in found[0]
    assert f"make experiments NAME={name}" in found[0]


def test_an_edit_to_an_imported_module_is_stale(package_copy):
    """lowprec_training imports chipbook.numerics, which imports chipbook._checks: editing either
    makes it stale; a module it does not import (chipbook.market) does not."""
    assert set(experiments.code_files("lowprec_training")) == {
        "chipbook/experiments/lowprec_training.py", "chipbook/numerics.py", "chipbook/_checks.py"}
    market = package_copy / "market.py"
    market.write_text(market.read_text(encoding="utf-8") + "\nEDITED = 1\n", encoding="utf-8")
    assert experiments.problems("lowprec_training", package_copy) == []
    numerics = package_copy / "numerics.py"
    source = numerics.read_text(encoding="utf-8")
    assert source.count("MX_BLOCK = 32") == 1
    numerics.write_text(source.replace("MX_BLOCK = 32", "MX_BLOCK = 16"), encoding="utf-8")
    found = experiments.problems("lowprec_training", package_copy)
    assert len(found) == 1 and "chipbook/numerics.py" in found[0]
    assert "make experiments NAME=lowprec_training" in found[0]


def test_a_changed_configuration_is_stale(monkeypatch):
    changed = json.loads(json.dumps(lowprec_training.CONFIG))
    changed["steps"] += 1
    monkeypatch.setattr(lowprec_training, "CONFIG", changed)
    found = experiments.problems("lowprec_training")
    assert len(found) == 1
    assert "CONFIG['steps'] is 121 in the code, 120 in the manifest" in found[0]
    assert "make experiments NAME=lowprec_training" in found[0]


def test_a_missing_result_names_the_command(tmp_path):
    (found,) = experiments.problems("lowprec_training", results_dir=tmp_path)
    assert "no committed result" in found and "make experiments NAME=lowprec_training" in found


# --- the result files ---------------------------------------------------------------------------------


def test_results_round_trip_exactly(tmp_path):
    values = [0.1, 1 / 3, 2.0**-1074, 1.7976931348623157e308, -0.0, math.inf, math.nan, 0.30000000000000004]
    frame = pd.DataFrame({"label": ["a, with a comma", 'a "quote"', "", "é", "x", "y", "z", "w"],
                          "n": [0, -1, 2, 3, 4, 5, 6, 2**40], "value": values})
    columns = {"label": "text", "n": "int", "value": "float"}
    frame = data.typed(frame, columns)
    experiments.write_csv(frame, tmp_path / "t.csv")
    back = data._read_result(tmp_path / "t.csv", columns)
    assert back["label"].tolist() == ["a, with a comma", 'a "quote"', "", "é", "x", "y", "z", "w"]
    assert back["n"].tolist() == [0, -1, 2, 3, 4, 5, 6, 2**40]
    got = back["value"].tolist()
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, values, strict=True))
    assert math.copysign(1, got[4]) == -1


def test_result_checks_the_file_against_its_manifest(tmp_path):
    for suffix in (".csv", ".json"):
        shutil.copy(data.RESULTS_DIR / f"lowprec_training{suffix}", tmp_path)
    frame = data.result("lowprec_training", tmp_path)
    info = frame.attrs["manifest"]
    assert len(frame) == info["rows"] and list(frame.columns) == list(info["columns"])
    path = tmp_path / "lowprec_training.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:-1] + ("1" if lines[1][-1] != "1" else "2")  # one digit of one value
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(data.DataError, match="SHA-256 differs"):
        data.result("lowprec_training", tmp_path)
    with pytest.raises(ValueError, match="name must be a committed experiment result"):
        data.result("no_such_experiment")


def test_manifest_records_provenance():
    info = data.manifest("lowprec_training")
    assert {"config", "fingerprint", "code", "versions", "machine", "wall_s", "point_s", "date",
            "command", "csv_sha256", "columns", "rows", "parallel"} <= set(info)
    assert len(info["point_s"]) == len(info["config"]["grid"])
    assert {"cpu", "cores"} <= set(info["machine"]) and "numpy" in info["versions"]
    text = data.provenance("lowprec_training")
    assert "make experiments NAME=lowprec_training" in text and info["fingerprint"][:12] in text


def test_unknown_experiments_and_points_are_refused():
    with pytest.raises(ValueError, match="name must be one of the experiments"):
        experiments.get("nope")
    with pytest.raises(ValueError, match="indices must be grid positions"):
        experiments.run_points("lowprec_training", [10**6], n_jobs=1, progress=False)
    with pytest.raises(ValueError, match="name must be one of the experiments"):
        experiments.main(["nope"])


# --- the low-precision chapter's experiment ---------------------------------------------------------


def test_learning_rates_follow_the_declared_grid():
    shared = experiments.shared(lowprec_training.CONFIG)
    assert lowprec_training.learning_rates([{"grid": 0, "divide": 1}, {"grid": 12, "divide": 10}, 2e-3],
                                           shared) == pytest.approx([1e-4, 1e-2, 2e-3], rel=1e-14)
    # thirteen values from 1e-4 to 1e-1 are a factor 10^(1/4) apart: the sixth is 10^-2.75
    assert lowprec_training.learning_rates([{"grid": 5, "divide": 1}], shared) == pytest.approx(
        [10**-2.75], rel=1e-14)


def test_runs_read_back_what_the_table_holds():
    """A loss curve, a held-out loss and a per-step trace read back through ``runs`` against the rows
    selected by hand."""
    frame = data.result("lowprec_training")
    sweep = lowprec_training.runs(frame, "sweep")
    rows = frame[(frame["group"] == "sweep") & (frame["label"] == "fp32") & (frame["seed"] == 2)
                 & (frame["step"] == 400)]
    assert sweep["fp32"].loss[-1, :, 2].tolist() == rows.loc[rows["metric"] == "loss", "value"].tolist()
    assert sweep["fp32"].test_loss[:, 2].tolist() == rows.loc[rows["metric"] == "test_loss", "value"].tolist()
    assert sweep["fp32"].loss.shape == (41, 13, 5)
    scaler = lowprec_training.runs(frame, "loss_scale")["fp16, dynamic S"]
    trace = frame[(frame["group"] == "loss_scale") & (frame["metric"] == "loss_scale") & (frame["seed"] == 1)]
    assert scaler.loss_scale[:, 1].tolist() == trace["value"].tolist() and scaler.loss_scale.shape == (120, 3)
    assert scaler.skip_trace.sum() == scaler.skipped.sum()
    with pytest.raises(ValueError, match="group must be one of"):
        lowprec_training.runs(frame, "nope")


def test_quick_rows_tell_recipes_apart():
    """outlier_transformer's QUICK rows are those at the end of the warm-up (where the schedule does
    not yet depend on the step count), and they separate per-tensor FP8 from MXFP8 at the largest
    outlier gain by far more than the tolerance."""
    from chipbook.experiments import outlier_transformer as ot

    assert ot.QUICK["steps"] == ot.CONFIG["warmup"]
    stored = data.result("outlier_transformer")
    top = max(ot.OUTLIER_LOG2)
    at = stored[(stored["metric"] == "held_out_loss") & (stored["step"] == ot.CONFIG["warmup"])
                & (stored["seed"] == 0) & (stored["outlier_log2"] == top)].set_index("recipe")["value"]
    tensor, mx = at["fp8, per-tensor scaling"], at["MXFP8"]
    assert abs(tensor - mx) / mx > 10 * RTOL["outlier_transformer"]


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_is_described_in_the_data_readme(name):
    readme = (data.DATA_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"\n### {name}\n", 1)
    assert len(section) == 2, f"data/README.md needs a section '### {name}' under the experiment results"
    described = section[1].split("\n#", 1)[0]
    for column in ["point", *experiments.get(name).COLUMNS]:
        assert f"- `{column}` (" in described, f"data/README.md, ### {name}: column {column} is not described"


def test_disagreement_counts_changed_predictions_by_hand():
    task = nm.make_task(0, n_train=128, n_test=64)
    a = nm.train(nm.Recipe(), task, [1e-2], [0, 1], steps=5)
    b = nm.train(nm.Recipe(compute="bf16", grad="bf16"), task, [1e-2], [0, 1], steps=5)
    assert not lowprec_training.disagreement(a, a, task).any()

    def predictions(run, k):
        return nm.logits([p[k:k + 1] for p in run.params], task.x_test)[0].argmax(axis=-1)

    for k in range(2):  # model k against the other run's model k, and against this run's next seed
        want_same = np.mean(predictions(a, k) != predictions(b, k))
        want_next = np.mean(predictions(a, k) != predictions(a, (k + 1) % 2))
        assert lowprec_training.disagreement(a, b, task)[0, k] == want_same
        assert lowprec_training.disagreement(a, a, task, shift=1)[0, k] == want_next


def test_weight_drift_is_zero_against_itself_and_measured_by_hand():
    task = nm.make_task(0, n_train=128, n_test=64)
    a = nm.train(nm.Recipe(), task, [1e-2, 3e-2], [0, 1], steps=5)
    b = nm.train(nm.Recipe(compute="bf16", grad="bf16"), task, [1e-2, 3e-2], [0, 1], steps=5)
    assert not lowprec_training.weight_drift(a, a, 32, task).any()
    start = nm.init_params([1], task.x_train.shape[1], 32, task.classes)  # seed 1's initial weights
    k = 3  # the model of the second learning rate and seed 1
    moved = np.sqrt(sum(np.sum((np.float64(p[k]) - s[0]) ** 2) for p, s in zip(a.params, start, strict=True)))
    apart = np.sqrt(sum(np.sum((np.float64(p[k]) - np.float64(q[k])) ** 2)
                        for p, q in zip(b.params, a.params, strict=True)))
    assert lowprec_training.weight_drift(b, a, 32, task)[1, 1] == pytest.approx(apart / moved, rel=1e-12)
