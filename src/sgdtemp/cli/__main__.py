"""Run the command line with ``python -m sgdtemp.cli``."""

import sys

from sgdtemp.cli import main

sys.exit(main())
