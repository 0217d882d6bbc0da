"""Fuzz the live server with schemathesis against ``session/openapi.yaml``, every check on, with a real token.

    python scripts/fuzz.py                       start `make run` (own emulator), fuzz, stop it
    python scripts/fuzz.py --base-url URL        fuzz a server that is already running
    python scripts/fuzz.py --max-examples 500 --seed 1 -- --max-failures 5   (after -- : more `st run` options)

Exit status is schemathesis's: 0 only with no server error and no response
breaking the schema. A failing run writes a pytest reproduction of each failure
to test-artifacts/fuzz/; keep each as a regular test (tests/test_fuzz_regressions.py).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devtools.launch import make_run

ROOT = Path(__file__).resolve().parent.parent
ST = Path(sys.executable).parent / "st"
REPORT_DIR = ROOT / "test-artifacts" / "fuzz"


def command(base: str, max_examples: int, seed: int | None, extra: Sequence[str] = ()) -> list[str]:
    """The ``st run`` command line."""
    cmd = [
        str(ST),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        str(ROOT / "session" / "openapi.yaml"),
        "--url",
        base,
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report",
        "pytest",
        "--report-dir",
        str(REPORT_DIR),
        "--no-color",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    return [*cmd, *extra]


def run(
    base: str, max_examples: int, seed: int | None = None, extra: Sequence[str] = (), capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run schemathesis against ``base`` with a fresh fuzzing account; returns the finished process."""
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS=str(Path(__file__).resolve().parent / "fuzz_hooks.py"),
        FUZZ_BASE_URL=base,
        FUZZ_USERNAME=f"fuzz-{secrets.token_hex(6)}",
        FUZZ_PASSWORD=secrets.token_urlsafe(18),
    )
    REPORT_DIR.mkdir(parents=True, exist_ok=True)  # also where schemathesis keeps its crash cache
    return subprocess.run(
        command(base, max_examples, seed, extra),
        cwd=REPORT_DIR,
        env=env,
        text=True,
        capture_output=capture,
        check=False,
        timeout=3600,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("FUZZ_URL"), help="a running server (default: start one)")
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "300")))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("extra", nargs="*", help="more `st run` options, after --")
    args = parser.parse_args(argv)
    if args.base_url:
        return run(args.base_url.rstrip("/"), args.max_examples, args.seed, args.extra).returncode
    # SESSION_DBSC on: its endpoints answer 404 while it is off.
    with make_run({"GOOGLE_CLOUD_PROJECT": "demo-session-fuzz", "SESSION_DBSC": "on"}) as server:
        print(f"fuzzing {server.base} (server log {server.log_path})", flush=True)
        return run(server.base, args.max_examples, args.seed, args.extra).returncode


if __name__ == "__main__":
    sys.exit(main())
