"""``make bench``: the service against its physical floor and two peers, in one run on this machine.

    .venv/bin/python bench/run.py [--seconds S] [--repeats N] [--concurrency 1,8,32] [--peers express,aiohttp]

The harness lives in ``bench/harness/`` (see its ``__init__``); this file is its entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
