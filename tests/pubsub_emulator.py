"""Start and stop a Pub/Sub emulator in its own process group, with devtools.launch's helpers (as its Firestore one).

``gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT`` (Debian's
``google-cloud-cli-pubsub-emulator``, installed by scripts/ci-tools.sh). Stopping kills the
whole group: the gcloud wrapper's Java child would otherwise keep the port. The emulator keeps
topics and subscriptions in memory, so a restarted one has none. It logs to
``.logs/pubsub-emulator-PORT.log``; logs older than a day, and all but the newest 20, are removed when one starts.
"""

from __future__ import annotations

import os
import shutil
from typing import Self

from devtools.launch import LOG_DIR, LocalEmulator, free_port, prune_logs, spawn, wait_until

INSTALL = "apt-get install google-cloud-cli-pubsub-emulator (or: bash scripts/ci-tools.sh pubsub-emulator)"

__all__ = ["PubSubEmulator", "PubSubEmulatorError", "free_port"]


class PubSubEmulatorError(RuntimeError):
    """The emulator cannot start; the message says why (and where its log is)."""


class PubSubEmulator(LocalEmulator):
    """The Pub/Sub emulator (the same port again after ``stop``)."""

    kind = "pubsub-emulator"

    def start(self, timeout: float = 60.0) -> Self:
        """Start it and wait until it answers; raises ``PubSubEmulatorError`` with the end of its log if not."""
        for tool in ("gcloud", "java"):
            if shutil.which(tool) is None:
                raise PubSubEmulatorError(f"{tool} is not installed; the Pub/Sub emulator needs it ({INSTALL})")
        prune_logs(LOG_DIR, pattern="pubsub-emulator-*.log")
        env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
        cmd = ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.host}", "--quiet"]
        self.proc = spawn(cmd, self.log_path, env)
        if wait_until(self.ready, self.proc, timeout):
            return self
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        if "not installed" in tail or "components install" in tail:
            raise PubSubEmulatorError(f"the Pub/Sub emulator is not installed: {INSTALL}; log {self.log_path}")
        raise PubSubEmulatorError(f"the Pub/Sub emulator did not start on {self.host} (log {self.log_path}):\n{tail}")
