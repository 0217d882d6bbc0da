"""Start, wait for and stop what development runs: a Firestore emulator, a ``make run`` server, any server.

The one launcher of the repository: ``make run`` and ``make test`` (``python -m devtools``),
the test suite's fixtures, ``scripts/fuzz.py`` and ``scripts/soak.py``, and the bench.

- Everything started here runs in a process group of its own (``start_new_session``), and
  stopping it stops the whole group: stopping only the gcloud wrapper can leave the Java
  child holding the port.
- ``wait_until`` is the one wait-until-up loop: it polls a probe until it holds, the
  process exits, or the time is up.
- Each emulator logs to ``.logs/firestore-emulator-PORT.log`` in the project; logs older
  than a day, and any beyond the newest 20, are removed when one starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LOG_DIR = ROOT / ".logs"
LOG_GLOB = "firestore-emulator-*.log"
KEEP_LOGS = 20
KEEP_LOG_SECONDS = 24 * 3600

# (tool, what it is for, how to install it)
TOOLS = (
    (
        "gcloud",
        "the Google Cloud CLI, which runs the Firestore emulator",
        "apt-get install google-cloud-cli google-cloud-cli-firestore-emulator"
        " (or see https://cloud.google.com/sdk/docs/install)",
    ),
    ("java", "Java 11 or later, which the Firestore emulator runs on", "apt-get install openjdk-17-jre-headless"),
)


# --- ports, probes and the one wait loop ----------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status ``url`` answers with (an error status too); ``None`` if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  (a URL of ours, on 127.0.0.1)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def serving(url: str) -> Callable[[], bool]:
    """A probe: does ``url`` answer HTTP at all (a 404 counts: the server is up)?"""
    return lambda: http_status(url) is not None


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout: float, interval: float = 0.2
) -> bool:
    """Poll ``ready`` every ``interval`` s: True once it holds; False if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(interval)
    return False


# --- process groups ------------------------------------------------------------------------------


def spawn(cmd: list[str], log: Path, env: Mapping[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a process group of its own, stdout and stderr appended to ``log``, no stdin."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM ``proc``'s whole process group, wait up to ``grace`` s, then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:  # a child may outlive the group's leader (the emulator's Java under gcloud): make sure all are gone
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# --- the Firestore emulator ------------------------------------------------------------------------


class EmulatorError(RuntimeError):
    """The emulator cannot start; the message says why in a line or two (and where its log is)."""


def missing_tool(path: str | None = None) -> str | None:
    """One line naming the first tool the emulator needs that is not on ``PATH``, and how to install it."""
    for tool, purpose, install in TOOLS:
        if shutil.which(tool, path=path) is None:
            return f"{tool} is not installed ({purpose}); install it with: {install}"
    return None


def prune_logs(
    folder: Path = LOG_DIR, keep: int = KEEP_LOGS, max_age: float = KEEP_LOG_SECONDS, pattern: str = LOG_GLOB
) -> None:
    """Remove emulator logs (``pattern``) older than ``max_age`` seconds, and all but the newest ``keep``."""
    now = time.time()
    logs = []
    for path in folder.glob(pattern):
        try:
            logs.append((path.stat().st_mtime, path))
        except OSError:
            continue
    logs.sort(reverse=True)
    for index, (mtime, path) in enumerate(logs):
        if index >= keep or now - mtime > max_age:
            path.unlink(missing_ok=True)


def _rest(host: str, path: str, method: str = "GET", body: bytes | None = None, timeout: float = 10) -> None:
    """One call to the emulator's REST API; raises ``OSError`` (``URLError``) if it fails."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(f"http://{host}{path}", data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout):  # noqa: S310  (the emulator, on 127.0.0.1)
        pass


def wipe(host: str, project: str) -> None:
    """Delete every document of ``project`` in the emulator at ``host``."""
    _rest(host, f"/emulator/v1/projects/{project}/databases/(default)/documents", "DELETE")


class LocalEmulator:
    """An emulator in its own process group on ``127.0.0.1:port`` (a free one unless given), answering HTTP.

    Subclasses say how to ``start`` it; stopping ends the whole group and waits until the port is free.
    """

    kind = "emulator"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = f"{HOST}:{self.port}"
        self.log_path = log_path or LOG_DIR / f"{self.kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def ready(self) -> bool:
        return http_status(f"http://{self.host}/") == 200

    def stop(self) -> None:
        """Stop the whole process group and wait until the port is free."""
        if self.proc is None:
            return
        stop_group(self.proc)
        self.proc = None
        wait_until(lambda: not self.ready(), None, 10, interval=0.1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Emulator(LocalEmulator):
    """The Firestore emulator."""

    kind = "firestore-emulator"

    def start(self, timeout: float = 60.0) -> Self:
        """Start it and wait until it answers.

        Raises ``EmulatorError``: at once, naming the tool, if gcloud or Java is
        missing; with the end of its log if it does not come up.
        """
        missing = missing_tool()
        if missing is not None:
            raise EmulatorError(missing)
        if self.log_path.parent == LOG_DIR:
            prune_logs()
        env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
        cmd = ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"]
        self.proc = spawn(cmd, self.log_path, env)
        if wait_until(self.ready, self.proc, timeout):
            self._warm_up()
            return self
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        if "components install" in tail or "not installed" in tail:
            raise EmulatorError(
                "the Firestore emulator is not installed; install it with:"
                " gcloud components install cloud-firestore-emulator"
                f" (or apt-get install google-cloud-cli-firestore-emulator); log {self.log_path}"
            )
        raise EmulatorError(f"the Firestore emulator did not start on {self.host} (log {self.log_path}):\n{tail}")

    def _warm_up(self) -> None:
        """Make the first write now: after a start it takes a second or more, longer than a request should wait."""
        documents = "/v1/projects/demo-warm-up/databases/(default)/documents/warm-up"
        _rest(self.host, documents, "POST", b'{"fields": {}}', timeout=60)
        wipe(self.host, "demo-warm-up")


# --- a `make run` server -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running ``make -s run``: its base URL, the ``make`` process and its log."""

    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def rss_kib(self) -> int:
        """Resident memory of the server's whole process tree (make, devtools, functions-framework), in KiB."""
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


def stop_make(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``make`` alone, which passes it on to ``python -m devtools`` once; SIGKILL the group if it lingers.

    Not the whole group: devtools would get a second SIGTERM from make in the
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
    Without ``FIRESTORE_EMULATOR_HOST`` in ``env``, ``make run`` starts an emulator of its own.
    """
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
    full_env.update(env or {})
    full_env["PORT"] = str(port)
    log_path = log_path or Path(tempfile.gettempdir()) / f"session-make-run-{port}.log"
    log_path.write_bytes(b"")
    proc = spawn(["make", "-s", "run"], log_path, full_env)
    server = Server(f"http://{HOST}:{port}", proc, log_path)
    try:
        if not wait_until(serving(f"{server.base}/nope"), proc, timeout):
            raise RuntimeError(f"make run did not come up on {server.base}:\n{server.log_tail()}")
        yield server
    finally:
        stop_make(proc)
