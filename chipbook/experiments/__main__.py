"""``python -m chipbook.experiments [NAME ...]`` (``make experiments [NAME=…]``): run the named
experiments, or all of them, and write their results and manifests to data/results/."""

import os
import sys

# Each worker trains small matrices: one BLAS thread each is fastest (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from chipbook.experiments import main  # after the thread setting

try:
    sys.exit(main(sys.argv[1:]))
except ValueError as error:  # a misspelt name: say so without a traceback
    sys.exit(f"make experiments: {error}")
