"""The two peers: express-session (Node.js) and aiohttp-session (Python >= 3.12), on the same emulator.

Their pinned packages are installed once per lock change into the cache
(``BENCH_CACHE``, default ``~/.cache/session-service/bench``), outside the
repository: ``npm ci`` for the express peer, a venv for the aiohttp peer.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from .common import CACHE, PEERS, log
from .processes import Server, call
from .tools import Missing

PEER_NAMES = {"express": "express-session", "aiohttp": "aiohttp-session"}


def _stamped(directory: Path, stamp: str) -> bool:
    marker = directory / ".stamp"
    return marker.exists() and marker.read_text() == stamp


def _run_steps(what: str, steps: list[list[str]], cwd: Path | None = None) -> None:
    for step in steps:
        done = subprocess.run(step, cwd=cwd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise Missing(f"installing the {what} peer failed at `{' '.join(step[:3])}`: {last}")


def install_express() -> Path:
    """``npm ci`` the express peer into the cache; returns its ``node_modules``. Raises ``Missing``."""
    node_dir = CACHE / "node"
    stamp = hashlib.sha256((PEERS / "package-lock.json").read_bytes() + (PEERS / "package.json").read_bytes())
    if not _stamped(node_dir, stamp.hexdigest()):
        log(f"installing the express peer's packages into {node_dir}")
        node_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(PEERS / "package.json", node_dir / "package.json")
        shutil.copy(PEERS / "package-lock.json", node_dir / "package-lock.json")
        _run_steps("express", [["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]], cwd=node_dir)
        (node_dir / ".stamp").write_text(stamp.hexdigest())
    return node_dir / "node_modules"


def install_aiohttp(python: Path) -> Path:
    """A venv with the aiohttp peer's packages, made with ``python``; returns its interpreter. Raises ``Missing``."""
    venv = CACHE / "aiohttp-venv"
    reqs = PEERS / "requirements-aiohttp.txt"
    stamp = hashlib.sha256(reqs.read_bytes() + str(python.resolve()).encode()).hexdigest()
    if not _stamped(venv, stamp):
        log(f"installing the aiohttp peer's packages into {venv} (with {python})")
        _run_steps(
            "aiohttp",
            [
                [str(python), "-m", "venv", "--clear", str(venv)],
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    str(reqs),
                ],
            ],
        )
        (venv / ".stamp").write_text(stamp)
    return venv / "bin" / "python"


def peer_servers(peers: frozenset[str], peer_python: Path | None, env: dict[str, str]) -> list[Server]:
    """Install the chosen peers (``express``, ``aiohttp``) and return their servers, not yet started."""
    servers = []
    if "express" in peers:
        node_env = {**env, "NODE_PATH": str(install_express()), "NODE_ENV": "production"}
        servers.append(Server(PEER_NAMES["express"], ["node", str(PEERS / "express_peer.js")], node_env))
    if "aiohttp" in peers:
        assert peer_python is not None
        python = install_aiohttp(peer_python)
        servers.append(Server(PEER_NAMES["aiohttp"], [str(python), str(PEERS / "aiohttp_peer.py")], env))
    return servers


def peer_cookie(server: Server, username: str) -> dict[str, str]:
    """Log in to a peer; returns the Cookie header of its session. Raises ``RuntimeError``."""
    status, _, hdrs = call(f"{server.base}/login", "POST", {"username": username})
    cookie = hdrs.get("set-cookie", "").split(";", 1)[0]
    check = call(f"{server.base}/profile", headers={"Cookie": cookie})[0]
    if status != 200 or not cookie or check != 200:
        raise RuntimeError(f"{server.name}: login {status}, cookie {cookie!r}, profile {check}")
    return {"Cookie": cookie}
