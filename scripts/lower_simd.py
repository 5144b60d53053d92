"""Print the environment that makes numpy (and its OpenBLAS) compute at a lower SIMD level than this
machine's best, as ``NAME=value`` words for ``env``; `make nbval-simd` runs nbval again under it.

- NPY_DISABLE_CPU_FEATURES: every dispatched SIMD feature numpy found on this CPU (the "found" list of
  ``numpy.show_runtime()``), so that numpy's kernels fall back to its compiled baseline.
- OPENBLAS_CORETYPE (x86-64 only): Sandybridge, AVX without FMA, a lower level than any x86-64 CPU
  of the last decade, so that matrix products take another rounding path too.

A notebook whose saved outputs depend on the SIMD path (a printed last digit, a compared image) then
fails on the machine where it was written, not at random on a reader's or a CI runner's machine.
Where the CPU has nothing beyond numpy's baseline, numpy's level cannot be lowered; that is said on
stderr.
"""

from __future__ import annotations

import platform
import sys

from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

BLAS_CORE = "Sandybridge"


def found_features() -> list[str]:
    """The dispatched SIMD features numpy found on this CPU, in numpy's order (lowest first)."""
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def lower_environment(found: list[str], machine: str) -> dict[str, str]:
    """The variables that switch off ``found`` and, on x86-64, lower OpenBLAS's kernels."""
    environment = {"NPY_DISABLE_CPU_FEATURES": ",".join(found)} if found else {}
    if machine.lower() in {"x86_64", "amd64"}:
        environment["OPENBLAS_CORETYPE"] = BLAS_CORE
    return environment


def main() -> None:
    found = found_features()
    if not found:
        print("lower_simd: numpy found no SIMD feature beyond its baseline here; its level stays as it is",
              file=sys.stderr)
    print(" ".join(f"{name}={value}" for name, value in lower_environment(found, platform.machine()).items()))


if __name__ == "__main__":
    main()
