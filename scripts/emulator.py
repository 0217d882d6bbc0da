"""Start and stop a Firestore emulator in its own process group.

Used by ``make run``, ``make test`` and the test suite. Stopping kills the whole
group: stopping only the gcloud wrapper can leave the Java child holding the port.
Each emulator logs to ``.logs/firestore-emulator-PORT.log`` in the project; logs
older than a day, and any beyond the newest 20, are removed when one starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

LOG_DIR = Path(__file__).resolve().parent.parent / ".logs"
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


class EmulatorError(RuntimeError):
    """The emulator cannot start; the message says why in a line or two (and where its log is)."""


def missing_tool(path: str | None = None) -> str | None:
    """One line naming the first tool the emulator needs that is not on ``PATH``, and how to install it."""
    for tool, purpose, install in TOOLS:
        if shutil.which(tool, path=path) is None:
            return f"{tool} is not installed ({purpose}); install it with: {install}"
    return None


def prune_logs(folder: Path = LOG_DIR, keep: int = KEEP_LOGS, max_age: float = KEEP_LOG_SECONDS) -> None:
    """Remove emulator logs older than ``max_age`` seconds, and all but the newest ``keep``."""
    now = time.time()
    logs = []
    for path in folder.glob(LOG_GLOB):
        try:
            logs.append((path.stat().st_mtime, path))
        except OSError:
            continue
    logs.sort(reverse=True)
    for index, (mtime, path) in enumerate(logs):
        if index >= keep or now - mtime > max_age:
            path.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """One emulator process group on ``127.0.0.1:port``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = log_path or LOG_DIR / f"firestore-emulator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Emulator:
        """Start it and wait until it answers.

        Raises ``EmulatorError``: at once, naming the tool, if gcloud or Java is
        missing; with the end of its log if it does not come up.
        """
        missing = missing_tool()
        if missing is not None:
            raise EmulatorError(missing)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.parent == LOG_DIR:
            prune_logs()
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST",)}
        self.proc = subprocess.Popen(
            ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready():
                self._warm_up()
                return self
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        if "components install" in tail or "not installed" in tail:
            raise EmulatorError(
                "the Firestore emulator is not installed; install it with:"
                " gcloud components install cloud-firestore-emulator"
                f" (or apt-get install google-cloud-cli-firestore-emulator); log {self.log_path}"
            )
        raise EmulatorError(f"the Firestore emulator did not start on {self.host} (log {self.log_path}):\n{tail}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _warm_up(self) -> None:
        """Make the first write now: after a start it takes a second or more, longer than a request should wait."""
        url = f"http://{self.host}/v1/projects/demo-warm-up/databases/(default)/documents/warm-up"
        req = urllib.request.Request(
            url, data=b'{"fields": {}}', method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60):
            pass
        wipe(self.host, "demo-warm-up")

    def stop(self) -> None:
        """Stop the whole process group and wait until the port is free."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:  # the Java child may outlive the wrapper: make sure the group is gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.ready():
            time.sleep(0.1)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wipe(host: str, project: str) -> None:
    """Delete every document of ``project`` in the emulator at ``host``."""
    req = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents", method="DELETE"
    )
    with urllib.request.urlopen(req, timeout=10):
        pass
