"""``python -m gateway`` is the ``bedside-gateway`` command."""

import os
import sys

# One BLAS/OpenMP thread, set before numpy loads OpenBLAS (which reads it once): the
# daemon's numpy/scipy calls are small and run on its event loop, so more threads only
# cost memory. systemd/bedside-gateway.service sets the same for the installed command.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from gateway.cli import main  # after the environment above

sys.exit(main())
