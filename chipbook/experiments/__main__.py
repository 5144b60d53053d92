"""``python -m chipbook.experiments [NAME ...]`` (``make experiments [NAME=…]``): run the named
experiments, or all of them, and write their results and manifests to data/results/."""

import os
import sys

# Each worker trains small matrices: one BLAS thread each is fastest (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from chipbook.experiments import main  # after the thread setting

sys.exit(main(sys.argv[1:]))
