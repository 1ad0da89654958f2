"""``python -m streambed``: the same as the ``streambed`` command."""

import sys

from streambed.cli import main

sys.exit(main())
