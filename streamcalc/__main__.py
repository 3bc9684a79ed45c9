"""``python -m streamcalc``: the same as the ``streamcalc`` command."""

import sys

from streamcalc.cli import main

sys.exit(main())
