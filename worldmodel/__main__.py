"""``python -m worldmodel ...`` is the same as the ``wm`` command."""

import sys

from worldmodel.cli import main

sys.exit(main())
