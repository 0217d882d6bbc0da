"""Start and stop a Pub/Sub emulator in its own process group, as scripts/emulator.py does for Firestore.

``gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT`` (Debian's
``google-cloud-cli-pubsub-emulator``, installed by scripts/ci-tools.sh). Stopping kills the
whole group: the gcloud wrapper's Java child would otherwise keep the port. The emulator keeps
topics and subscriptions in memory, so a restarted one has none. It logs to
``.logs/pubsub-emulator-PORT.log``; logs older than a day, and all but the newest 20, are removed when one starts.
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
KEEP_LOGS = 20
KEEP_LOG_SECONDS = 24 * 3600
INSTALL = "apt-get install google-cloud-cli-pubsub-emulator (or: bash scripts/ci-tools.sh pubsub-emulator)"


class PubSubEmulatorError(RuntimeError):
    """The emulator cannot start; the message says why (and where its log is)."""


def prune_logs(folder: Path = LOG_DIR) -> None:
    """Remove Pub/Sub emulator logs older than a day, and all but the newest ``KEEP_LOGS``."""
    now = time.time()
    logs = []
    for path in folder.glob("pubsub-emulator-*.log"):
        try:
            logs.append((path.stat().st_mtime, path))
        except OSError:
            continue
    logs.sort(reverse=True)
    for index, (mtime, path) in enumerate(logs):
        if index >= KEEP_LOGS or now - mtime > KEEP_LOG_SECONDS:
            path.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PubSubEmulator:
    """One Pub/Sub emulator process group on ``127.0.0.1:port`` (the same port again after ``stop``)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = LOG_DIR / f"pubsub-emulator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> PubSubEmulator:
        """Start it and wait until it answers; raises ``PubSubEmulatorError`` with the end of its log if not."""
        for tool in ("gcloud", "java"):
            if shutil.which(tool) is None:
                raise PubSubEmulatorError(f"{tool} is not installed; the Pub/Sub emulator needs it ({INSTALL})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        prune_logs(self.log_path.parent)
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
        self.proc = subprocess.Popen(
            ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.host}", "--quiet"],
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
                return self
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        if "not installed" in tail or "components install" in tail:
            raise PubSubEmulatorError(f"the Pub/Sub emulator is not installed: {INSTALL}; log {self.log_path}")
        raise PubSubEmulatorError(f"the Pub/Sub emulator did not start on {self.host} (log {self.log_path}):\n{tail}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

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

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
