"""``make run`` and ``make test``: an emulator (unless one is given), then the server or the tests.

    python -m devtools run            serve `api` on 127.0.0.1:$PORT
    python -m devtools test -- CMD    run CMD with FIRESTORE_EMULATOR_HOST set

If ``FIRESTORE_EMULATOR_HOST`` is already set, that emulator is used and none
is started. Before starting anything it checks, and says in one line what is
wrong: that ``PORT`` is free (run), that the settings are valid (run), and that
gcloud and Java are installed (unless an emulator is given). Emulator logs go to
``.logs/``. Ctrl-C or SIGTERM stops everything this started; ``run`` then
exits 0 (a requested stop is not an error), ``test`` exits 130 (an interrupted
test run is not a pass).

``run`` logs one readable line per request when its stdout is a terminal
(``SESSION_LOG_FORMAT=text``) and JSON lines otherwise, unless the variable is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from devtools.launch import HOST, ROOT, Emulator, EmulatorError, stop_group


class _Stop(Exception):
    pass


def _ignore_stop_signals() -> None:
    # A second signal (make forwards the group's SIGTERM too) must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_term(signum: int, frame: object) -> None:
    _ignore_stop_signals()
    raise _Stop()


def port_problem(value: str) -> str | None:
    """Why the server cannot listen on ``HOST:value``, in one line; ``None`` if it can."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return f"PORT={value!r} is not a port number (1-65535)"
    with socket.socket() as sock:
        # As the server will bind: a port that only has connections in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, int(value)))
        except OSError as exc:
            in_use = f"port {value} on {HOST} is in use ({exc.strerror})"
            return f"{in_use}; stop what uses it, or choose another port: make run PORT=8081"
    return None


def log_format(env: dict[str, str]) -> str:
    """The log format for ``make run``: as set, else readable text on a terminal and JSON lines elsewhere."""
    return env.get("SESSION_LOG_FORMAT") or ("text" if sys.stdout.isatty() else "json")


def _check_run(env: dict[str, str]) -> int:
    """Before ``run`` starts anything: the port and the settings, each a line on stderr; 0 if both are fine."""
    problem = port_problem(env["PORT"])
    if problem is not None:
        print(f"make run: {problem}", file=sys.stderr)
        return 1
    port = env["PORT"]
    # The page at / makes cookie-authenticated changes from this origin: allow it unless told otherwise.
    env.setdefault("SESSION_ALLOWED_ORIGINS", f"http://{HOST}:{port},http://localhost:{port}")
    env["SESSION_LOG_FORMAT"] = log_format(env)
    # Check the settings first, so a bad variable is one clear line, not a traceback.
    check = subprocess.run([sys.executable, "-m", "session", "check-config", "--quiet"], env=env, cwd=ROOT)
    return check.returncode


def _start_emulator(mode: str, env: dict[str, str]) -> Emulator | None:
    """An emulator of our own, unless ``env`` names one; sets ``FIRESTORE_EMULATOR_HOST``. Raises ``EmulatorError``."""
    if env.get("FIRESTORE_EMULATOR_HOST"):
        print(f"using the Firestore emulator at {env['FIRESTORE_EMULATOR_HOST']}", flush=True)
        return None
    print("Starting a Firestore emulator ...", flush=True)
    emulator = Emulator()
    try:
        emulator.start()
    except BaseException:  # a Ctrl-C or SIGTERM while it starts: leave no emulator behind
        emulator.stop()
        raise
    env["FIRESTORE_EMULATOR_HOST"] = emulator.host
    project = env["GOOGLE_CLOUD_PROJECT"]
    print(f"Firestore emulator on {emulator.host} (project {project}, log {emulator.log_path})", flush=True)
    if mode == "run":
        print(
            "For the admin CLI (python -m session) in another shell:\n"
            f"  export FIRESTORE_EMULATOR_HOST={emulator.host} GOOGLE_CLOUD_PROJECT={project}",
            flush=True,
        )
    return emulator


def _server_command(env: dict[str, str]) -> list[str]:
    """functions-framework serving ``api`` on ``HOST:PORT``, after the lines that say how to use it."""
    base = f"http://{HOST}:{env['PORT']}"
    print(
        f"\nServing the session API on {base} (logs: {env['SESSION_LOG_FORMAT']})\n"
        f"  curl -X POST {base}/register -H 'Content-Type: application/json' "
        '-d \'{"username":"alice","password":"correct horse battery"}\'\n'
        f"  curl -X POST {base}/login -H 'Content-Type: application/json' "
        '-d \'{"username":"alice","password":"correct horse battery"}\'\n'
        f"  curl {base}/profile -H 'Authorization: Bearer <token from login>'\n"
        f"  the API's description: {base}/openapi.yaml; the page: open {base}/ in a browser\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    functions_framework = str(Path(sys.executable).parent / "functions-framework")
    source = str(ROOT / "main.py")
    return [functions_framework, "--target", "api", "--source", source, "--host", HOST, "--port", env["PORT"]]


# Tools some tests need besides Python, gcloud and Java: (what to look for, what it checks, how to install it).
OPTIONAL_TOOLS = (
    ("chromium", "the browser tests (the page, DBSC)", "bash scripts/ci-browser.sh"),
    ("certutil", "the HTTPS tests (a trusted test certificate)", "bash scripts/ci-browser.sh"),
    ("shellcheck", "the shell scripts' hygiene", "bash scripts/ci-tools.sh shellcheck"),
    ("npm", "the index file and the generated TypeScript client", "bash scripts/ci-tools.sh"),
    ("pubsub-emulator", "the events on Pub/Sub", "bash scripts/ci-tools.sh pubsub-emulator"),
)
PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator")


def missing_optional_tools() -> list[tuple[str, str, str]]:
    """The optional tools this machine lacks: their tests skip here (and fail in CI, where CI=true)."""
    missing = []
    for tool, purpose, install in OPTIONAL_TOOLS:
        found = PUBSUB_EMULATOR.is_dir() if tool == "pubsub-emulator" else shutil.which(tool) is not None
        if not found:
            missing.append((tool, purpose, install))
    return missing


def announce_skips() -> None:
    """Say at the start of ``make test`` what it will skip, and the one command that installs each tool."""
    for tool, purpose, install in missing_optional_tools():
        print(f"make test: {tool} is missing, so {purpose} will be skipped; install it: {install}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    env = dict(os.environ)
    env.setdefault("GOOGLE_CLOUD_PROJECT", "demo-session-local" if mode == "run" else "demo-session-test")
    env.setdefault("PORT", "8080")
    if mode == "run" and (checked := _check_run(env)) != 0:
        return checked
    if mode == "test":
        announce_skips()
    signal.signal(signal.SIGTERM, _on_term)
    emulator: Emulator | None = None
    child: subprocess.Popen[bytes] | None = None
    try:
        emulator = _start_emulator(mode, env)
        cmd = _server_command(env) if mode == "run" else rest or [sys.executable, "-m", "pytest"]
        child = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        return child.wait()
    except EmulatorError as exc:
        print(f"make {mode}: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        _ignore_stop_signals()
        return 0 if mode == "run" else 130
    finally:
        if child is not None and child.poll() is None:
            stop_group(child)
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
