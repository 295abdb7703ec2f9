"""``python -m gateway`` is the ``bedside-gateway`` command."""

import sys

from gateway.cli import main

sys.exit(main())
