"""Run ``make -s run`` on a free loopback port, wait until it answers, stop it with its process group.

Shared by ``scripts/fuzz.py``, ``scripts/soak.py`` and the fault tests. With
``FIRESTORE_EMULATOR_HOST`` in ``env`` the server uses that emulator (and its
process tree is the server alone, which is what ``rss_kib`` measures);
without it ``make run`` starts an emulator of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulator import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def rss_kib(self) -> int:
        """Resident memory of the server's whole process tree (make, dev.py, functions-framework), in KiB."""
        return tree_rss_kib(self.proc.pid)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_kib(root: int) -> int:
    """VmRSS summed over ``root`` and all its descendants, from /proc."""
    tree = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def wait_until_up(base: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/nope", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (a 404 here) means it is serving
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``make`` alone, which passes it on to dev.py once; SIGKILL the group if it lingers.

    Not the whole group: dev.py would get a second SIGTERM from make in the
    middle of its own clean-up and leave the server (and its emulator) behind.
    """
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def make_run(
    env: Mapping[str, str] | None = None, port: int | None = None, timeout: float = 90, log_path: Path | None = None
) -> Iterator[Server]:
    """``make -s run`` with ``env`` on top of this process's environment; yields the running ``Server``.

    The one launcher of a live server: the test suite's ``live_server``, the fault tests, fuzz and soak.
    """
    port = port or free_port()
    full_env = dict(os.environ)
    full_env.pop("FIRESTORE_EMULATOR_HOST", None)
    full_env.update(env or {})
    full_env["PORT"] = str(port)
    log_path = log_path or Path(tempfile.gettempdir()) / f"session-make-run-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["make", "-s", "run"],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        if not wait_until_up(server.base, proc, timeout):
            raise RuntimeError(f"make run did not come up on {server.base}:\n{server.log_tail()}")
        yield server
    finally:
        stop(proc)
