"""Start and stop a Firestore emulator in its own process group.

Used by ``make run``, ``make test`` and the test suite. Stopping kills the whole
group: stopping only the gcloud wrapper can leave the Java child holding the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """One emulator process group on ``127.0.0.1:port``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"firestore-emulator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Emulator:
        """Start it and wait until it answers; raises ``RuntimeError`` with the log tail if it does not."""
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
        raise RuntimeError(f"the Firestore emulator did not start on {self.host}:\n{tail}")

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
