"""What ``make bench`` needs on this machine: found, installed, or named in one line before anything starts.

wrk (and Node.js for the express peer) are installed with apt-get when this
runs as root on a Debian-like system. The aiohttp peer's library,
aiohttp-session-firestore, requires Python 3.12 or newer: any such interpreter
will do (``BENCH_PEER_PYTHON``, ``python3.12``-``python3.14`` on the PATH, or a
pyenv version); none can be installed from here, so its absence stops the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import VENV_BIN, log

PEER_PYTHON_MIN = (3, 12)  # aiohttp-session-firestore 0.1.x: Requires-Python >=3.12


class Missing(Exception):
    """A tool the run needs is missing; the message is one line saying how to get it."""


@dataclass(frozen=True, slots=True)
class Toolset:
    """The tools found for this run."""

    wrk: str
    peer_python: Path | None  # None when the aiohttp peer is not run
    node: bool
    pyspy: Path | None  # None when profiling is off


def _apt_install(*packages: str) -> bool:
    """``apt-get install -y packages`` when root with apt-get; True if it worked."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def run(*cmd: str) -> bool:
        return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0

    install = ("apt-get", "install", "-y", "-q", *packages)
    # A fresh machine's package lists may be empty or stale: update once, then try again.
    return run(*install) or (run("apt-get", "update", "-q") and run(*install))


def require_wrk() -> str:
    """The wrk executable, installed with apt-get if need be. Raises ``Missing``."""
    found = shutil.which("wrk")
    if found is None and _apt_install("wrk"):
        found = shutil.which("wrk")
    if found is None:
        raise Missing("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)")
    return found


def require_emulator() -> None:
    """gcloud and Java for the Firestore emulator (not installable from here). Raises ``Missing``."""
    if shutil.which("gcloud") is None:
        raise Missing(
            "gcloud is not installed: install the Google Cloud CLI and its Firestore emulator "
            "(gcloud components install cloud-firestore-emulator, or Debian's google-cloud-cli-firestore-emulator)"
        )
    if shutil.which("java") is None and not _apt_install("openjdk-17-jre-headless"):
        raise Missing(
            "java is not installed (the Firestore emulator needs Java 17+): apt-get install -y openjdk-17-jre"
        )


def require_node() -> None:
    """node and npm for the express-session peer, installed with apt-get if need be. Raises ``Missing``."""
    if (shutil.which("node") is None or shutil.which("npm") is None) and not _apt_install("nodejs", "npm"):
        raise Missing(
            "node/npm are not installed (the express-session peer needs them): apt-get install -y nodejs npm, "
            "or run without that peer: BENCH_PEERS=aiohttp make bench"
        )


def _version(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def _candidates() -> list[str]:
    names = [os.environ.get("BENCH_PEER_PYTHON", "")]
    names += [str(VENV_BIN / "python"), "python3"]
    names += [f"python3.{minor}" for minor in range(14, PEER_PYTHON_MIN[1] - 1, -1)]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    names += sorted(glob.glob(f"{pyenv_root}/versions/3.1[2-9]*/bin/python"), reverse=True)
    return [name for name in names if name]


def require_peer_python() -> Path:
    """A Python >= 3.12 for the aiohttp peer's venv. Raises ``Missing``."""
    explicit = os.environ.get("BENCH_PEER_PYTHON")
    for name in _candidates():
        path = shutil.which(name)
        if path is None:
            continue
        version = _version(path)
        if version is not None and version >= PEER_PYTHON_MIN:
            return Path(path)
        if name == explicit:
            raise Missing(f"BENCH_PEER_PYTHON={explicit} is not a Python >= 3.12 (found {version})")
    raise Missing(
        "no Python >= 3.12 found for the aiohttp-session peer (aiohttp-session-firestore requires it): "
        "set BENCH_PEER_PYTHON=/path/to/python3.12 (e.g. after pyenv install 3.12), "
        "or run without that peer: BENCH_PEERS=express make bench"
    )


def require_pyspy() -> Path:
    """py-spy from the project's venv (``bench/requirements.txt``). Raises ``Missing``."""
    path = VENV_BIN / "py-spy"
    if not path.exists():
        raise Missing("py-spy is not installed: .venv/bin/pip install -r bench/requirements.txt (or BENCH_PROFILE=0)")
    return path


def preflight(peers: frozenset[str], profile: bool) -> Toolset:
    """Check (and where possible install) every tool this run needs, before anything starts. Raises ``Missing``."""
    wrk = require_wrk()
    require_emulator()
    if "express" in peers:
        require_node()
    return Toolset(
        wrk=wrk,
        peer_python=require_peer_python() if "aiohttp" in peers else None,
        node="express" in peers,
        pyspy=require_pyspy() if profile else None,
    )
