"""``python -m session``: the admin CLI."""

import sys

from session.cli import main

sys.exit(main())
