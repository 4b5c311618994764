"""``python -m kgmeta`` runs the ``kgmeta`` command (also under ``torchrun -m kgmeta``)."""

import sys

from kgmeta.cli import main

sys.exit(main())
