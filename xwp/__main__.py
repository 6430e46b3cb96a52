"""``python -m xwp``: see :mod:`xwp.cli`."""

import sys

from xwp.cli import main

sys.exit(main())
