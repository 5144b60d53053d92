"""The training runs of the chapter "Low-precision training": the reference run, gradient underflow
and loss scaling, update swamping, the learning-rate sweep, the optimizer-state formats, and training
with weights kept in an inference format.

Each grid point is one call of :func:`chipbook.numerics.train` (one recipe at its learning rates and
every seed, vectorised as the chapter first ran it, so the numbers are the same), on the task of
:func:`chipbook.numerics.make_task` with the shared settings below. Its rows hold, per learning rate
and seed, the training loss at every evaluation step and, at the end, the test accuracy, the share of
activation gradients flushed to zero, the steps skipped for an overflow and the last loss scale.
A point may ask for more: ``"drift_from"`` (a recipe) adds the distance of the final weights from
that recipe's run, relative to how far that run moved [the chapter's section 5]; ``"serve"`` adds
the test accuracy of the trained network served with its weights quantized to each format
[the chapter's section 6].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chipbook import numerics as nm

_BF16 = {"compute": "bf16", "grad": "bf16"}
_SWEEP = {"fp32": {}, "bf16 + fp32 master": _BF16,
          "fp16 + dynamic loss scaling": {"compute": "fp16", "grad": "fp16", "loss_scale": "dynamic"},
          "fp8, per-tensor scaling": {"compute": "fp8_e4m3", "grad": "fp8_e5m2", "scaling": "tensor"},
          "bf16, no master copy": {**_BF16, "weights": "bf16"}}
_UNDERFLOW = {"fp32": {}, "fp16, no scaling": {"compute": "fp16", "grad": "fp16"},
              "fp16, static S = 2¹⁶": {"compute": "fp16", "grad": "fp16", "loss_scale": 2.0**16},
              "fp16, dynamic S": {"compute": "fp16", "grad": "fp16", "loss_scale": "dynamic"},
              "fp8 (E5M2 gradients), no scaling": {"compute": "fp8_e4m3", "grad": "fp8_e5m2"}}
_SWAMP = {"bf16, fp32 master weights": _BF16,
          "bf16 weights, round to nearest": {**_BF16, "weights": "bf16"},
          "bf16 weights, stochastic rounding": {**_BF16, "weights": "bf16", "rounding": "stochastic"},
          "bf16 weights, Kahan summation": {**_BF16, "weights": "bf16", "rounding": "kahan"}}
_NADAM = {"optimizer": "nadam"}
_STATES = {"fp32": _NADAM, "bf16": {**_NADAM, "state": "bf16"},
           "bf16, bf16 arithmetic": {**_NADAM, "state": "bf16", "state_compute": "bf16"},
           "fp8 E5M2, scaled": {**_NADAM, "state": "fp8_e5m2"},
           "fp8 E4M3, scaled": {**_NADAM, "state": "fp8_e4m3"}}
_TRAINED_IN = {
    "int8": {"weights": "int8", "weight_scaling": "channel"},
    "fp8 E4M3": {"compute": "fp8_e4m3", "grad": "fp8_e5m2", "scaling": "tensor", "weights": "fp8_e4m3",
                 "weight_scaling": "tensor"},
    "fp4 E2M1 (MX)": {"compute": "fp4_e2m1", "grad": "fp8_e5m2", "scaling": "tensor", "weights": "fp4_e2m1",
                      "weight_scaling": "tensor"}}
#: serving formats: weights quantized to ``format`` through ``scaling`` (biases stay fp32)
SERVING = {"int8": ["int8", "channel"], "fp8 E4M3": ["fp8_e4m3", "tensor"],
           "fp4 E2M1 (MX)": ["fp4_e2m1", "mx"]}
#: the learning-rate grid: LR_GRID values geometrically spaced, as np.geomspace(start, stop, num)
LR_GRID = {"start": 1e-4, "stop": 1e-1, "num": 7}
#: grid index of fp32's best learning rate in the sweep (the notebook checks it still is)
BEST = 4


def _points(group: str, recipes: dict, lrs: list, **extra) -> list[dict]:
    return [{"group": group, "label": label, "recipe": recipe, "lrs": lrs, **extra}
            for label, recipe in recipes.items()]


def _grid(index: int, divide: int = 1) -> dict:
    return {"grid": index, "divide": divide}


CONFIG = {
    "task_seed": 0,
    "seeds": [0, 1, 2],
    "steps": 120,
    "batch": 64,
    "hidden": 32,
    "global_batch": 2**24,
    "eval_every": 10,
    "eval_examples": 512,
    "lr_grid": LR_GRID,
    "grid": [
        *_points("underflow", _UNDERFLOW, [3e-3]),
        *_points("swamp", _SWAMP, [_grid(1)]),
        *[{**p, "serve": SERVING} if p["label"] == "fp32" else p
          for p in _points("sweep", _SWEEP, [_grid(i) for i in range(LR_GRID["num"])])],
        *[{**p, "drift_from": _NADAM} if p["label"] != "fp32" else p
          for p in _points("states", _STATES, [2e-3])],
        *_points("trained_in", _TRAINED_IN, [_grid(BEST), _grid(BEST, 10)]),
    ],
}

COLUMNS = {"group": "text", "label": "text", "lr": "float", "seed": "int", "metric": "text", "step": "int",
           "value": "float"}


def lr_grid(start: float, stop: float, num: int) -> np.ndarray:
    """The learning rates of the sweep, geometrically spaced (float64)."""
    return np.geomspace(start, stop, num)


def learning_rates(lrs: list, shared: dict) -> list[float]:
    """A point's learning rates: numbers as they are, ``{"grid": i, "divide": d}`` as the i-th value
    of the shared learning-rate grid divided by d."""
    grid = lr_grid(**shared["lr_grid"])
    return [float(grid[lr["grid"]] / lr["divide"]) if isinstance(lr, dict) else float(lr) for lr in lrs]


def task(shared: dict) -> nm.Task:
    """The chapter's task."""
    return nm.make_task(seed=shared["task_seed"])


def _train(recipe: dict, lrs: list[float], shared: dict) -> nm.Run:
    keys = ("steps", "batch", "hidden", "global_batch", "eval_every", "eval_examples")
    return nm.train(nm.Recipe(**recipe), task(shared), lrs, shared["seeds"], **{k: shared[k] for k in keys})


def _flat(params: list[np.ndarray], models: int) -> np.ndarray:
    return np.concatenate([np.asarray(p, np.float64).reshape(models, -1) for p in params], axis=1)


def weight_drift(run: nm.Run, reference: nm.Run, hidden: int, task_: nm.Task) -> np.ndarray:
    """Distance of ``run``'s final weights from ``reference``'s, relative to how far ``reference``
    moved from the shared initial weights; shape (lrs, seeds)."""
    n_lr, seeds = len(run.lrs), list(run.seeds)
    start = nm.init_params(seeds, task_.x_train.shape[1], hidden, task_.classes)
    start = [np.tile(p, (n_lr,) + (1,) * (p.ndim - 1)) for p in start]  # model k uses seed k % seeds
    n = n_lr * len(seeds)
    ref_end, end, begin = _flat(reference.params, n), _flat(run.params, n), _flat(start, n)
    drift = np.linalg.norm(end - ref_end, axis=1) / np.linalg.norm(ref_end - begin, axis=1)
    return drift.reshape(n_lr, len(seeds))


def quantize_weights(params: list[np.ndarray], fmt: str, scaling: str) -> list[np.ndarray]:
    """Stacked weights (leading model axis) with both weight matrices quantized to ``fmt`` through
    ``scaling`` (MX blocks run along the reduction, input, axis); biases stay fp32."""
    w1, b1, w2, b2 = params
    if scaling == "mx":
        def q(w):
            return np.swapaxes(nm.quantize_scaled(np.swapaxes(w, 1, 2), fmt, "mx"), 1, 2)
    else:
        def q(w):
            return nm.quantize_scaled(w, fmt, scaling, batch_dims=1)
    return [q(w1), b1, q(w2), b2]


def _rows(group: str, label: str, run: nm.Run, metric: str, step: int, values: np.ndarray) -> list[dict]:
    return [{"group": group, "label": label, "lr": float(lr), "seed": int(seed), "metric": metric,
             "step": int(step), "value": float(values[i, j])}
            for i, lr in enumerate(run.lrs) for j, seed in enumerate(run.seeds)]


def run_one(point: dict, shared: dict) -> list[dict]:
    """The rows of one grid point (see the module's description)."""
    lrs = learning_rates(point["lrs"], shared)
    run = _train(point["recipe"], lrs, shared)
    g, label, steps = point["group"], point["label"], shared["steps"]
    rows = [r for k, step in enumerate(run.eval_steps)
            for r in _rows(g, label, run, "loss", step, run.loss[k])]
    n_lr, n_seed = len(lrs), len(shared["seeds"])
    final = {"test_accuracy": run.test_accuracy, "flushed": run.flushed, "skipped": run.skipped}
    for metric, values in final.items():
        rows += _rows(g, label, run, metric, steps, values)
    rows += _rows(g, label, run, "loss_scale", steps - 1, run.loss_scale[-1].reshape(n_lr, n_seed))
    if "drift_from" in point:
        reference = _train(point["drift_from"], lrs, shared)
        drift = weight_drift(run, reference, shared["hidden"], task(shared))
        rows += _rows(g, label, run, "drift", steps, drift)
    for name, (fmt, scaling) in point.get("serve", {}).items():
        t = task(shared)
        served = nm.accuracy(quantize_weights(run.params, fmt, scaling), t.x_test, t.y_test)
        rows += _rows(g, label, run, f"served: {name}", steps, served.reshape(n_lr, n_seed))
    return rows


# --- reading the result back ------------------------------------------------------------------------


def _grid_of(rows: pd.DataFrame, lrs: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """The values of ``rows`` (one metric at one step of one run), shape (lrs, seeds)."""
    value = dict(zip(zip(rows["lr"], rows["seed"], strict=True), rows["value"], strict=True))
    return np.array([[value[(lr, s)] for s in seeds] for lr in lrs])


def runs(frame: pd.DataFrame, group: str) -> dict[str, nm.Run]:
    """The runs of ``group`` in the result table, by label, as :class:`chipbook.numerics.Run` objects
    holding what the table keeps: loss curves, test accuracy, flushed share, skipped steps, and the
    loss scale of the last step only (``loss_scale`` has one row); no weights (``params`` is empty).
    Learning rates keep the order the point gave them in."""
    rows = frame[frame["group"] == group]
    if rows.empty:
        raise ValueError(f"group must be one of {sorted(frame['group'].unique())}, got {group!r}")
    out = {}
    for label in pd.unique(rows["label"]):
        r = rows[rows["label"] == label]
        lrs, seeds = pd.unique(r["lr"]), tuple(int(s) for s in pd.unique(r["seed"]))
        by_metric = {m: r[r["metric"] == m]
                     for m in ("loss", "test_accuracy", "flushed", "skipped", "loss_scale")}
        loss = by_metric["loss"]
        steps = pd.unique(loss["step"])
        out[label] = nm.Run(
            lrs=np.asarray(lrs, dtype=np.float64), seeds=seeds, eval_steps=np.asarray(steps),
            loss=np.stack([_grid_of(loss[loss["step"] == s], lrs, seeds) for s in steps]),
            test_accuracy=_grid_of(by_metric["test_accuracy"], lrs, seeds),
            flushed=_grid_of(by_metric["flushed"], lrs, seeds),
            skipped=_grid_of(by_metric["skipped"], lrs, seeds).astype(int), params=[],
            grad_sample=np.empty(0),
            loss_scale=_grid_of(by_metric["loss_scale"], lrs, seeds).reshape(1, -1))
    return out


def metric(frame: pd.DataFrame, group: str, name: str) -> dict[str, np.ndarray]:
    """The values of metric ``name`` (such as ``"drift"`` or ``"served: int8"``) of each run of
    ``group`` that has it, by label, shape (lrs, seeds)."""
    rows = frame[(frame["group"] == group) & (frame["metric"] == name)]
    if rows.empty:
        raise ValueError(f"no metric {name!r} in group {group!r}; metrics there: "
                         f"{sorted(frame.loc[frame['group'] == group, 'metric'].unique())}")
    out = {}
    for label in pd.unique(rows["label"]):
        r = rows[rows["label"] == label]
        out[label] = _grid_of(r, pd.unique(r["lr"]), tuple(int(s) for s in pd.unique(r["seed"])))
    return out
