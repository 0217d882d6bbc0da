"""Shared by the deploy checks: the dry run of deploy.sh, the index file, and tools that may be missing."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.sh"
INDEXES = ROOT / "firestore.indexes.json"
CI_TOOLS = ROOT / "scripts" / "ci-tools.sh"
DRY_RUN_PROJECT = "demo-deploy-check"

# deploy.sh reads these; the dry runs start from none of them, so the developer's shell can't leak in.
DEPLOY_VARIABLES = (
    "PROJECT",
    "REGION",
    "FIRESTORE_LOCATION",
    "FIRESTORE_DATABASE",
    "RUNTIME",
    "FUNCTIONS",
    "MEMORY",
    "CPU",
    "MIN_INSTANCES",
    "MAX_INSTANCES",
    "CONCURRENCY",
    "SERVICE_ACCOUNT",
    "DRY_RUN",
)


def missing_tool(message: str) -> NoReturn:
    """Skip with ``message`` on a developer's machine; fail in CI (``CI`` is set), where every check must run."""
    message = f"{message} (scripts/ci-tools.sh installs what these checks need)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run every check: {message}")
    pytest.skip(message)


def require_tool(name: str, purpose: str) -> str:
    """The path of ``name``, or skip/fail with a visible reason."""
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} is not installed, so {purpose} is not checked")
    return path


def deploy_env(**extra: str) -> dict[str, str]:
    """The environment of a dry run: ours without deploy.sh's variables or any SESSION_* setting."""
    env = {k: v for k, v in os.environ.items() if k not in DEPLOY_VARIABLES and not k.startswith("SESSION_")}
    env["PROJECT"] = DRY_RUN_PROJECT
    env.update(extra)
    return env


def run_deploy(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``deploy.sh ARGS`` (add ``--dry-run`` yourself) in ``deploy_env(**extra)``: its exit status and output."""
    return subprocess.run(
        ["bash", str(DEPLOY), *args], env=deploy_env(**extra), capture_output=True, text=True, timeout=60
    )


@functools.cache
def _dry_run(args: tuple[str, ...], extra: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], ...]:
    result = run_deploy("--dry-run", *args, **dict(extra))
    assert result.returncode == 0, result.stderr
    return tuple(tuple(shlex.split(line)) for line in result.stdout.splitlines() if line.strip())


def dry_run(*args: str, **extra: str) -> list[list[str]]:
    """The commands ``deploy.sh --dry-run ARGS`` prints, each split as a shell would split it."""
    return [list(cmd) for cmd in _dry_run(args, tuple(sorted(extra.items())))]


def flag(cmd: list[str], name: str) -> str | None:
    """The value of ``--name=value`` in ``cmd``, if present."""
    prefix = f"--{name}="
    values = [arg[len(prefix) :] for arg in cmd if arg.startswith(prefix)]
    assert len(values) <= 1, f"--{name} given twice in {cmd}"
    return values[0] if values else None


def commands(cmds: list[list[str]], *words: str) -> list[list[str]]:
    """The commands that start with ``gcloud WORDS…``."""
    return [c for c in cmds if c[1 : 1 + len(words)] == list(words)]


def load_spec() -> dict[str, Any]:
    return dict(json.loads(INDEXES.read_text()))
