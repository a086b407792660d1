"""``python -m apslab`` is the same as the ``apslab`` command."""

import sys

from .cli import main

sys.exit(main())
