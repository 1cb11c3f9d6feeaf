"""``python -m clear_middleware``: the command line."""

import sys

from .cli import main

sys.exit(main())
