"""The training runs of the chapter "Low-precision training": gradient underflow against the number of
terms each rank's loss averages, dynamic loss scaling with its back-off, update swamping, the
learning-rate sweep, the optimizer-state formats, current against delayed scaling under a gradient
spike, MX block scaling on a network whose reductions span several blocks, a narrow accumulator in
training, and serving against training in the same formats.

Each grid point is one call of :func:`chipbook.numerics.train` (one recipe at its learning rates and
seeds, vectorised), on the task of :func:`chipbook.numerics.make_task`, with the shared settings below
overridden by the point's ``"train"`` settings. Its rows hold, per learning rate and seed, the training
loss at every evaluation step and, at the end, the test accuracy, the share of activation gradients
flushed to zero and the steps skipped for an overflow. A point may ask for more: ``"traces"`` adds, at
every step, the loss scale, whether the step was skipped, the share of activation gradients flushed
and the relative error of their casts; ``"drift_from"`` (a recipe) adds the distance of the final
weights from that recipe's run, relative to how far that run moved; ``"serve"`` adds the test accuracy
of the trained network served with its forward pass cast as each named recipe casts it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chipbook import _checks
from chipbook import numerics as nm

_BF16 = {"compute": "bf16", "grad": "bf16"}
_FP16 = {"compute": "fp16", "grad": "fp16"}
_FP8 = {"compute": "fp8_e4m3", "grad": "fp8_e5m2"}  # Transformer Engine's HYBRID formats
_FP4 = {"compute": "fp4_e2m1", "grad": "fp8_e5m2"}
#: terms each rank's loss averages over: this network's micro-batch, and language-model ranks
DIVISORS = [64, 2**12, 2**15, 2**18, 2**21]
_UNDERFLOW = {"fp16, no scaling": _FP16, "fp8 (E5M2 gradients), no scaling": _FP8}
_SWAMP = {"bf16, fp32 master weights": _BF16,
          "bf16 weights, round to nearest": {**_BF16, "weights": "bf16"},
          "bf16 weights, stochastic rounding": {**_BF16, "weights": "bf16", "rounding": "stochastic"},
          "bf16 weights, Kahan summation": {**_BF16, "weights": "bf16", "rounding": "kahan"}}
_SWEEP = {"fp32": {}, "bf16 + fp32 master": _BF16,
          "fp16 + dynamic loss scaling": {**_FP16, "loss_scale": "dynamic"},
          "fp8, delayed scaling": {**_FP8, "scaling": "delayed"},
          "fp8, current scaling": {**_FP8, "scaling": "tensor"},
          "MXFP8": {**_FP8, "scaling": "mx"},
          "bf16, no master copy": {**_BF16, "weights": "bf16"}}
_NADAM = {"optimizer": "nadam"}
_STATES = {"fp32": _NADAM, "bf16": {**_NADAM, "state": "bf16"},
           "bf16, bf16 arithmetic": {**_NADAM, "state": "bf16", "state_compute": "bf16"},
           "fp8 E5M2, scaled": {**_NADAM, "state": "fp8_e5m2"},
           "fp8 E4M3, scaled": {**_NADAM, "state": "fp8_e4m3"}}
_SPIKE = {"fp32": {}, "fp8, current scaling": {**_FP8, "scaling": "tensor"},
          "fp8, delayed scaling": {**_FP8, "scaling": "delayed"}}
_MX = {"fp32": {}, "fp8, current scaling": {**_FP8, "scaling": "tensor"}, "MXFP8": {**_FP8, "scaling": "mx"},
       "fp4, per-tensor scaling": {**_FP4, "scaling": "tensor"},
       "MXFP4, floor scale (OCP)": {**_FP4, "scaling": "mx"},
       "MXFP4, round-up scale": {**_FP4, "scaling": "mx", "mx_rule": "ceil"}}
_ACCUMULATOR = {"fp8, exact accumulation": {**_FP8, "scaling": "tensor"},
                "fp8, 13-bit truncating block accumulator": {**_FP8, "scaling": "tensor", "acc_bits": 13}}
#: the switching-cost experiment: the bf16 recipe with fp32 master weights (the reference), tuned in the
#: sweep, re-run under numerics another chip could plausibly have
_SWITCH = {"bf16 + fp32 master (reference)": _BF16,
           "block accumulator truncating to 23 bits": {**_BF16, "acc_bits": 23},
           "block accumulator truncating to 13 bits": {**_BF16, "acc_bits": 13},
           "tf32 products, fp32 gradients": {"compute": "tf32"},
           "fp16 with dynamic loss scaling": {**_FP16, "loss_scale": "dynamic"},
           "bf16 weights, stochastic rounding, no master": {**_BF16, "weights": "bf16",
                                                            "rounding": "stochastic"},
           # the positive control: a change the sweep showed to move the optimum
           "bf16 weights, round to nearest, no master": {**_BF16, "weights": "bf16"}}
#: the formats of serving and of training in them: the forward pass's casts (weights and activations)
FORMATS = {"int8": {"compute": "int8", "grad": "bf16", "scaling": "tensor"},
           "fp8 E4M3": {"compute": "fp8_e4m3", "grad": "fp8_e5m2", "scaling": "tensor"},
           "MXFP4": {"compute": "fp4_e2m1", "grad": "fp8_e5m2", "scaling": "mx"}}
_KEPT = {"int8": {"weights": "int8", "weight_scaling": "tensor"},
         "fp8 E4M3": {"weights": "fp8_e4m3", "weight_scaling": "tensor"},
         "MXFP4": {"weights": "fp4_e2m1", "weight_scaling": "tensor"}}
#: the learning-rate grid: LR_GRID values geometrically spaced, as np.geomspace(start, stop, num)
LR_GRID = {"start": 1e-4, "stop": 1e-1, "num": 13}
#: grid index of fp32's best learning rate in the sweep, by held-out loss (the notebook checks it still is)
BEST = 7
#: the sweep: a warm-up and a cosine decay to zero, five seeds
SWEEP_TRAIN = {"steps": 400, "schedule": "cosine", "warmup": 20, "seeds": [0, 1, 2, 3, 4]}
#: the wider network whose matrix products reduce over several MX blocks of 32
WIDE = {"d_in": 128, "hidden": 64}
SPIKE = [60, 100.0]


#: one knob at a time around the tuned point (fp32's best learning rate, the sweep's schedule and
#: seeds), for recipes whose numerics differ: (knob, the settings of each value, its label); the first
#: value of each knob is the tuned point's own
KNOBS = {"ε": [({"optimizer_kwargs": {"eps": v}}, f"{v:g}") for v in (1e-8, 1e-6, 1e-4)],
         "β₂": [({"optimizer_kwargs": {"betas": [0.9, v]}}, f"{v:g}") for v in (0.999, 0.99, 0.9999)],
         "warm-up steps": [({"warmup": v}, str(v)) for v in (20, 0, 80)],
         # the tuned point clips nothing; a norm of 1 (common in language-model runs) clips a few early
         # steps of this network, 0.5 most steps (chipbook.numerics.clip_by_norm)
         "gradient clipping": [({}, "none"), ({"clip_norm": 1.0}, "1"), ({"clip_norm": 0.5}, "0.5")]}
KNOB_RECIPES = {"fp32": {}, "fp8, current scaling": {**_FP8, "scaling": "tensor"},
                "bf16, no master copy": {**_BF16, "weights": "bf16"}}
#: the loss scaler's growth interval, for fp16 at a language model's 2^15 terms per rank (the first: the
#: interval of the switching experiment's fp16 run, chipbook.numerics.train's default)
GROWTH = [50, 10, 200, 2000]
FP16_LM = "fp16, dynamic loss scaling, D = 32768"


def knob_label(recipe: str, knob: str, value: str) -> str:
    """The label of a run of the knob group."""
    return f"{recipe}; {knob} = {value}"


def _points(group: str, recipes: dict, lrs: list, **extra) -> list[dict]:
    return [{"group": group, "label": label, "recipe": recipe, "lrs": lrs, **extra}
            for label, recipe in recipes.items()]


def _grid(index: int, divide: int = 1) -> dict:
    return {"grid": index, "divide": divide}


_BEST = [_grid(BEST)]
_SCHEDULE = {"steps": 400, "schedule": "cosine", "warmup": 20}

_GRID = [
    *[{**p, "train": {"loss_divisor": d}, "label": f"{p['label']}, D = {d}"}
      for d in DIVISORS for p in _points("underflow", _UNDERFLOW, [3e-3])],
    {"group": "underflow", "label": "fp16, dynamic S, D = 2097152",
     "recipe": {**_FP16, "loss_scale": "dynamic"}, "lrs": [3e-3], "train": {"loss_divisor": 2**21}},
    {"group": "loss_scale", "label": "fp16, dynamic S", "recipe": {**_FP16, "loss_scale": "dynamic"},
     "lrs": [3e-3], "train": {"growth_interval": 10}, "traces": True},
    *_points("swamp", _SWAMP, [3e-4]),
    *_points("sweep", _SWEEP, [_grid(i) for i in range(LR_GRID["num"])], train=SWEEP_TRAIN),
    *[{**p, "drift_from": _NADAM} if p["label"] != "fp32" else p
      for p in _points("states", _STATES, [2e-3])],
    {"group": "states", "label": "fp8 E4M3, scaled, ε = 1e-6", "recipe": {**_NADAM, "state": "fp8_e4m3"},
     "lrs": [2e-3], "train": {"optimizer_kwargs": {"eps": 1e-6}}, "drift_from": _NADAM},
    *_points("spike", _SPIKE, [3e-3], train={"spike": SPIKE}, traces=True),
    *_points("mx", _MX, [3e-3], train=WIDE),
    *_points("accumulator", _ACCUMULATOR, [3e-3], train=WIDE),
    *[{**p, "compare_to": _BF16}
      for p in _points("switch", _SWITCH, [_grid(BEST + k) for k in (-1, 0, 1)], train=SWEEP_TRAIN)],
    # fp16 where its loss scaler works: each rank's loss averaging a language model's 2^15 terms
    {"group": "switch", "label": "fp16 with dynamic loss scaling, D = 32768",
     "recipe": {**_FP16, "loss_scale": "dynamic"}, "lrs": [_grid(BEST + k) for k in (-1, 0, 1)],
     "train": {**SWEEP_TRAIN, "loss_divisor": 2**15}, "compare_to": _BF16},
    {"group": "serve", "label": "fp32", "recipe": {}, "lrs": _BEST, "train": _SCHEDULE, "serve": FORMATS},
    *[{"group": "master", "label": name, "recipe": fmt, "lrs": _BEST, "train": _SCHEDULE}
      for name, fmt in FORMATS.items()],
    *[{"group": "kept", "label": name, "recipe": {**fmt, **_KEPT[name]}, "lrs": _BEST, "train": _SCHEDULE}
      for name, fmt in FORMATS.items()],
    *[{"group": "knobs", "label": knob_label(name, knob, label), "recipe": recipe, "lrs": _BEST,
       "train": {**SWEEP_TRAIN, **setting}}
      for name, recipe in KNOB_RECIPES.items() for knob, values in KNOBS.items() for setting, label in values
      if not (knob != "ε" and setting == values[0][0])],  # the tuned point once, as its ε value
    *[{"group": "knobs", "label": knob_label(FP16_LM, "growth interval", str(g)),
       "recipe": {**_FP16, "loss_scale": "dynamic"}, "lrs": _BEST,
       "train": {**SWEEP_TRAIN, "loss_divisor": 2**15, "growth_interval": g}} for g in GROWTH],
    # the same, and fp32, at ten times fp32's best learning rate (four grid steps up)
    {"group": "kept_fast", "label": "fp32", "recipe": {}, "lrs": [_grid(BEST + 4)], "train": _SCHEDULE},
    *[{"group": "kept_fast", "label": name, "recipe": {**fmt, **_KEPT[name]}, "lrs": [_grid(BEST + 4)],
       "train": _SCHEDULE} for name, fmt in FORMATS.items()],
]

CONFIG = {
    "task_seed": 0,
    "seeds": [0, 1, 2],
    "steps": 120,
    "batch": 64,
    "hidden": 32,
    "d_in": 32,
    "eval_every": 10,
    "eval_examples": 512,
    "lr_grid": LR_GRID,
    "grid": _GRID,
}

COLUMNS = {"group": "text", "label": "text", "lr": "float", "seed": "int", "metric": "text", "step": "int",
           "value": "float"}


def lr_grid(start: float, stop: float, num: int) -> np.ndarray:
    """The learning rates of the sweep, geometrically spaced (float64)."""
    start, stop = _checks.positive("start", start), _checks.positive("stop", stop)
    return np.geomspace(start, stop, _checks.count("num", num))


def learning_rates(lrs: list, shared: dict) -> list[float]:
    """A point's learning rates: numbers as they are, ``{"grid": i, "divide": d}`` as the i-th value
    of the shared learning-rate grid divided by d."""
    grid = lr_grid(**shared["lr_grid"])
    return [float(grid[lr["grid"]] / lr["divide"]) if isinstance(lr, dict) else float(lr) for lr in lrs]


def settings(point: dict, shared: dict) -> dict:
    """The shared settings with the point's ``"train"`` overrides."""
    return {**shared, **point.get("train", {})}


def task(s: dict) -> nm.Task:
    """The task of settings ``s`` (its seed and input width)."""
    return nm.make_task(seed=s["task_seed"], d_in=s["d_in"])


def _train(recipe: dict, lrs: list[float], s: dict) -> nm.Run:
    keys = ("steps", "batch", "hidden", "loss_divisor", "eval_every", "eval_examples", "growth_interval",
            "schedule", "warmup", "spike", "optimizer_kwargs", "clip_norm")
    kwargs = {k: s[k] for k in keys if k in s}
    if "spike" in kwargs:
        kwargs["spike"] = tuple(kwargs["spike"])
    return nm.train(nm.Recipe(**recipe), task(s), lrs, s["seeds"], **kwargs)


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


def disagreement(run: nm.Run, reference: nm.Run, task_: nm.Task, shift: int = 0) -> np.ndarray:
    """Share of the held-out examples on which ``run``'s model of each (learning rate, seed) predicts
    another class than ``reference``'s model of the same learning rate and the seed ``shift`` places
    further in the seed list (cyclically; 0: the same seed); shape (lrs, seeds)."""
    n_lr, n_seed = len(run.lrs), len(run.seeds)
    ours = nm.logits(run.params, task_.x_test).argmax(axis=-1).reshape(n_lr, n_seed, -1)
    theirs = nm.logits(reference.params, task_.x_test).argmax(axis=-1).reshape(n_lr, n_seed, -1)
    return (ours != np.roll(theirs, -shift, axis=1)).mean(axis=-1)


def _rows(group: str, label: str, run: nm.Run, metric: str, step: int, values: np.ndarray) -> list[dict]:
    return [{"group": group, "label": label, "lr": float(lr), "seed": int(seed), "metric": metric,
             "step": int(step), "value": float(values[i, j])}
            for i, lr in enumerate(run.lrs) for j, seed in enumerate(run.seeds)]


#: per-step metrics of points with ``"traces"``: metric name → attribute of :class:`chipbook.numerics.Run`
TRACES = {"loss_scale": "loss_scale", "skipped_step": "skip_trace", "flushed_step": "flush_trace",
          "cast_error": "error_trace"}


def run_one(point: dict, shared: dict) -> list[dict]:
    """The rows of one grid point (see the module's description)."""
    s = settings(point, shared)
    lrs = learning_rates(point["lrs"], shared)
    run = _train(point["recipe"], lrs, s)
    g, label, steps = point["group"], point["label"], s["steps"]
    n_lr, n_seed = len(lrs), len(s["seeds"])
    rows = [r for k, step in enumerate(run.eval_steps)
            for r in _rows(g, label, run, "loss", step, run.loss[k])]
    final = {"test_accuracy": run.test_accuracy, "test_loss": run.test_loss, "flushed": run.flushed,
             "skipped": run.skipped, "clipped": run.clipped}
    for metric, values in final.items():
        rows += _rows(g, label, run, metric, steps, values)
    if point.get("traces"):
        for metric, attribute in TRACES.items():
            trace = getattr(run, attribute).astype(float)
            for step in range(steps):
                rows += _rows(g, label, run, metric, step, trace[step].reshape(n_lr, n_seed))
    if "drift_from" in point:
        reference = _train(point["drift_from"], lrs, s)
        drift = weight_drift(run, reference, s["hidden"], task(s))
        rows += _rows(g, label, run, "drift", steps, drift)
    t = task(s)
    if "compare_to" in point:
        reference = _train(point["compare_to"], lrs, s)
        rows += _rows(g, label, run, "disagree", steps, disagreement(run, reference, t))
        rows += _rows(g, label, run, "seed_disagree", steps, disagreement(run, run, t, shift=1))
    for name, recipe in point.get("serve", {}).items():
        served = nm.served_accuracy(run.params, t.x_test, t.y_test, nm.Recipe(**recipe))
        rows += _rows(g, label, run, f"served: {name}", steps, served.reshape(n_lr, n_seed))
    return rows


# --- reading the result back ------------------------------------------------------------------------


def _array(rows: pd.DataFrame, lrs: np.ndarray, seeds: tuple[int, ...]) -> np.ndarray:
    """The values of ``rows`` (one metric of one run) as (steps, lrs, seeds), steps in the order
    they first appear; a cell with no row is NaN."""
    steps = pd.unique(rows["step"])
    out = np.full((len(steps), len(lrs), len(seeds)), np.nan)
    index = (pd.Index(steps).get_indexer(rows["step"]), pd.Index(lrs).get_indexer(rows["lr"]),
             pd.Index(seeds).get_indexer(rows["seed"]))
    out[index] = rows["value"].to_numpy()
    return out


def runs(frame: pd.DataFrame, group: str) -> dict[str, nm.Run]:
    """The runs of ``group`` in the result table, by label, as :class:`chipbook.numerics.Run` objects
    holding what the table keeps: loss curves, test accuracy and loss, flushed share, skipped steps
    and, for points with traces, the per-step loss scale, skips, flushes and cast errors as
    (steps, lrs × seeds) (empty otherwise); no weights (``params`` is empty). Learning rates keep the
    order the point gave them in."""
    rows = frame[frame["group"] == group]
    if rows.empty:
        raise ValueError(f"group must be one of {sorted(frame['group'].unique())}, got {group!r}")
    out = {}
    for label, r in rows.groupby("label", sort=False):
        lrs, seeds = pd.unique(r["lr"]), tuple(int(s) for s in pd.unique(r["seed"]))
        by_metric = dict(tuple(r.groupby("metric", sort=False)))
        n = len(lrs) * len(seeds)

        def final(m, by_metric=by_metric, lrs=lrs, seeds=seeds):
            return _array(by_metric[m], lrs, seeds)[-1]

        def trace(m, by_metric=by_metric, lrs=lrs, seeds=seeds, n=n):
            return _array(by_metric[m], lrs, seeds).reshape(-1, n) if m in by_metric else np.empty((0, n))

        loss = by_metric["loss"]
        out[label] = nm.Run(
            lrs=np.asarray(lrs, dtype=np.float64), seeds=seeds,
            eval_steps=np.asarray(pd.unique(loss["step"])), loss=_array(loss, lrs, seeds),
            test_accuracy=final("test_accuracy"), test_loss=final("test_loss"), flushed=final("flushed"),
            skipped=final("skipped").astype(int), clipped=final("clipped").astype(int), params=[],
            grad_sample=np.empty(0),
            loss_scale=trace("loss_scale"), skip_trace=trace("skipped_step").astype(bool),
            flush_trace=trace("flushed_step"), error_trace=trace("cast_error"))
    return out


def metric(frame: pd.DataFrame, group: str, name: str) -> dict[str, np.ndarray]:
    """The values of metric ``name`` (such as ``"drift"`` or ``"served: int8"``) of each run of
    ``group`` that has it, by label, shape (lrs, seeds)."""
    rows = frame[(frame["group"] == group) & (frame["metric"] == name)]
    if rows.empty:
        raise ValueError(f"no metric {name!r} in group {group!r}; metrics there: "
                         f"{sorted(frame.loc[frame['group'] == group, 'metric'].unique())}")
    return {label: _array(r, pd.unique(r["lr"]), tuple(int(s) for s in pd.unique(r["seed"])))[-1]
            for label, r in rows.groupby("label", sort=False)}
