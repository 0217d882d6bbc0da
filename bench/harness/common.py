"""Paths and small helpers shared by the harness modules."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PEERS = BENCH / "peers"
VENV_BIN = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "session-service" / "bench"))
PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark user on the emulator)


def log(msg: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def home(path: Path) -> str:
    """``path`` with the home directory written as ``~``."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)
