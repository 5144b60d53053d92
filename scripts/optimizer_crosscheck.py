"""Measure how far chipbook's NAdam and Adam are from PyTorch's, and write data/optimizer_crosscheck.csv.

Usage (PyTorch is not a dependency of the book; run this where it is installed):
    python scripts/optimizer_crosscheck.py [--steps 1000]

Both optimizers see the same float32 parameters and the same seeded float32 gradients for ``steps``
steps (and for one step); torch runs its single-tensor CPU implementation (foreach=False). The file
records the largest
difference of the parameters in float32 units in the last place (ulp) and relative terms, and the
share of parameters that are bit-identical, with the versions and the machine.
"""

from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path

import numpy as np
import torch

from chipbook import numerics as nm

OUT = Path(__file__).resolve().parents[1] / "data" / "optimizer_crosscheck.csv"


def compare(name: str, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal((64, 64)).astype(np.float32)
    ours = nm.NAdam() if name == "nadam" else nm.Adam()
    param = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    theirs = (torch.optim.NAdam if name == "nadam" else torch.optim.Adam)([param], foreach=False)
    theta = theta0
    for _ in range(steps):
        g = (rng.standard_normal(theta0.shape) * np.exp(rng.uniform(-6, 2))).astype(np.float32)
        (theta,) = ours.step([theta], [g])
        param.grad = torch.from_numpy(g.copy())
        theirs.step()
    ref = param.detach().numpy()
    ulp = np.spacing(np.abs(ref))
    return {"max_diff_ulp": float(np.max(np.abs(theta - ref) / ulp)),
            "max_rel_diff": float(np.max(np.abs(theta - ref) / np.abs(ref))),
            "bit_identical": float(np.mean(theta.view(np.uint32) == ref.view(np.uint32)))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    steps = parser.parse_args().steps
    machine = f"{platform.machine()} {platform.processor() or platform.system()}".strip()
    rows = []
    for name, n in ((o, k) for o in ("nadam", "adam") for k in (1, steps)):
        got = compare(name, n)
        rows.append({"optimizer": name, "steps": n, "max_diff_ulp": f"{got['max_diff_ulp']:.0f}",
                     "max_rel_diff": f"{got['max_rel_diff']:.3g}",
                     "bit_identical": f"{got['bit_identical']:.4f}",
                     "reference": f"torch {torch.__version__} CPU, foreach=False",
                     "source": {"nadam": "pytorch2024nadam", "adam": "pytorch2024adam"}[name],
                     "note": f"measured by scripts/optimizer_crosscheck.py; numpy {np.__version__}; "
                             f"{machine}"})
    with OUT.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(OUT.read_text())


if __name__ == "__main__":
    main()
