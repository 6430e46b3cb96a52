"""``python -m xwp``: see :mod:`xwp.cli`."""

import sys

from xwp.cli.commands import main

sys.exit(main())
