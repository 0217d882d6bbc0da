"""``make run`` and ``make test``: an emulator (unless one is given), then the server or the tests.

    python scripts/dev.py run            serve `api` on 127.0.0.1:$PORT
    python scripts/dev.py test -- CMD    run CMD with FIRESTORE_EMULATOR_HOST set

If ``FIRESTORE_EMULATOR_HOST`` is already set, that emulator is used and none
is started. Ctrl-C or SIGTERM stops everything this script started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


class _Stop(Exception):
    pass


def _ignore_stop_signals() -> None:
    # A second signal (make forwards the group's SIGTERM too) must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_term(signum: int, frame: object) -> None:
    _ignore_stop_signals()
    raise _Stop()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    env = dict(os.environ)
    env.setdefault("GOOGLE_CLOUD_PROJECT", "demo-session-local" if mode == "run" else "demo-session-test")
    signal.signal(signal.SIGTERM, _on_term)
    emulator: Emulator | None = None
    child: subprocess.Popen[bytes] | None = None
    try:
        if not env.get("FIRESTORE_EMULATOR_HOST"):
            emulator = Emulator().start()
            env["FIRESTORE_EMULATOR_HOST"] = emulator.host
            project = env["GOOGLE_CLOUD_PROJECT"]
            print(f"Firestore emulator on {emulator.host} (project {project}, log {emulator.log_path})", flush=True)
        else:
            print(f"using the Firestore emulator at {env['FIRESTORE_EMULATOR_HOST']}", flush=True)
        if mode == "run":
            port = env.get("PORT", "8080")
            # The page at / makes cookie-authenticated changes from this origin: allow it unless told otherwise.
            env.setdefault("SESSION_ALLOWED_ORIGINS", f"http://127.0.0.1:{port},http://localhost:{port}")
            # Check the settings first, so a bad variable is one clear line, not a traceback.
            check = subprocess.run([sys.executable, "-m", "session", "check-config"], env=env, cwd=ROOT)
            if check.returncode != 0:
                return check.returncode
            base = f"http://127.0.0.1:{port}"
            print(
                f"\nServing the session API on {base}\n"
                f"  curl -X POST {base}/register -H 'Content-Type: application/json' "
                '-d \'{"username":"alice","password":"correct horse battery"}\'\n'
                f"  curl -X POST {base}/login -H 'Content-Type: application/json' "
                '-d \'{"username":"alice","password":"correct horse battery"}\'\n'
                f"  curl {base}/profile -H 'Authorization: Bearer <token from login>'\n"
                f"  or open {base}/ in a browser\n"
                "Press Ctrl-C to stop.\n",
                flush=True,
            )
            cmd = [
                str(Path(sys.executable).parent / "functions-framework"),
                "--target",
                "api",
                "--source",
                str(ROOT / "main.py"),
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ]
        else:
            cmd = rest or [sys.executable, "-m", "pytest"]
        child = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        return child.wait()
    except (KeyboardInterrupt, _Stop):
        _ignore_stop_signals()
        return 130
    finally:
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
