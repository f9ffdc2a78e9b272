"""``python -m hierlens.analysis.cli``: the ``hierlens`` command."""

import sys

from .main import main

sys.exit(main())
