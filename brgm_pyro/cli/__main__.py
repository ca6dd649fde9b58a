"""``python -m brgm_pyro.cli``: the ``brgm`` command without the installed script."""

import sys

from brgm_pyro.cli import main

sys.exit(main())
