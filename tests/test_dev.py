"""`make run` and `make install` explain themselves: a taken port, a missing tool, the first install, a stop.

Each case runs the real Makefile and `python -m devtools` as a user would, against the
shared emulator where a server must come up.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from devtools import launch
from tests.conftest import ROOT, free_port

PYTHON = str(ROOT / ".venv" / "bin" / "python")


# Not inherited: the emulator and log format under test, and an outer make's settings (make test runs these).
NOT_INHERITED = ("FIRESTORE_EMULATOR_HOST", "SESSION_LOG_FORMAT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
MAKE_ERROR_RE = re.compile(r"^make(\[\d+\])?: \*\*\* ")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(extra)
    return env


def _ours(stderr: str) -> list[str]:
    """stderr without make's own `make: *** [...] Error N` trailer."""
    return [line for line in stderr.splitlines() if not MAKE_ERROR_RE.match(line)]


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    up = launch.wait_until(launch.serving(f"{base}/nope"), proc, timeout)
    assert up, f"{base} did not come up" if proc.poll() is None else "the server stopped"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_is_one_line_before_anything_starts(taken_port: int) -> None:
    started = time.monotonic()
    result = subprocess.run(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=_env(PORT=str(taken_port)),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 10  # no emulator was started first
    ours = _ours(result.stderr)
    assert ours == [
        f"make run: port {taken_port} on 127.0.0.1 is in use (Address already in use);"
        " stop what uses it, or choose another port: make run PORT=8081"
    ]
    assert "emulator" not in result.stdout and "Serving" not in result.stdout


@pytest.mark.parametrize(
    ("present", "missing"),
    [((), "gcloud"), (("gcloud",), "java")],
)
def test_a_missing_tool_is_one_line_naming_it_and_its_install(
    tmp_path: Path, present: tuple[str, ...], missing: str
) -> None:
    for tool in present:
        (tmp_path / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    result = subprocess.run(
        ["/usr/bin/make", "-s", "run"],
        cwd=ROOT,
        env=_env(PATH=str(tmp_path), PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    ours = _ours(result.stderr)
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"make run: {missing} is not installed (")
    assert "install it with: apt-get install " in ours[0]


def test_first_install_says_what_it_does(tmp_path: Path) -> None:
    """A new venv: make says it creates it and installs into it (pip is pointed at nothing, so it stops there)."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    venv = tmp_path / "venv"
    env = _env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    result = subprocess.run(
        ["make", "-s", "install", f"VENV={venv}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0  # nothing to install from
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Creating {venv} with Python 3.")
    assert lines[1].startswith(f"Installing the pinned requirements into {venv}")


def test_install_refuses_an_old_python(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-s", "install", f"VENV={tmp_path / 'venv'}", "PYTHON=/bin/false"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Python 3.11 or later is needed" in result.stderr


def test_sigterm_is_a_requested_stop(emulator_host: str, project: str) -> None:
    port = free_port()
    env = _env(PORT=str(port), FIRESTORE_EMULATOR_HOST=emulator_host, GOOGLE_CLOUD_PROJECT=project)
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(signal.SIGTERM)  # make alone, which passes it on to devtools
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert "Error 130" not in text and not any(MAKE_ERROR_RE.match(line) for line in text.splitlines()), text
    assert "Traceback" not in text


def test_devtools_run_exits_0_on_sigterm(emulator_host: str, project: str) -> None:
    port = free_port()
    env = _env(PORT=str(port), FIRESTORE_EMULATOR_HOST=emulator_host, GOOGLE_CLOUD_PROJECT=project)
    proc = subprocess.Popen(
        [PYTHON, "-m", "devtools", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_make_run_logs_readable_lines_on_a_terminal(emulator_host: str, project: str) -> None:
    port = free_port()
    env = _env(PORT=str(port), FIRESTORE_EMULATOR_HOST=emulator_host, GOOGLE_CLOUD_PROJECT=project)
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        stdout=secondary,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(secondary)
    output = b""
    try:
        _wait_up(f"http://127.0.0.1:{port}", proc)
        httpx.post(f"http://127.0.0.1:{port}/register", json={"username": "tty", "password": "long enough pw"})
        deadline = time.monotonic() + 20
        while b"POST /register 201" not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                output += os.read(primary, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(primary)
    text = output.decode(errors="replace")
    assert "(logs: text)" in text
    [line] = [line for line in text.splitlines() if "POST /register 201" in line]
    assert not line.lstrip().startswith("{")
    assert " INFO    POST /register 201 " in line and "code=ok" in line and "firestore=1rt/0r/2w/0d" in line


def test_emulator_logs_live_in_dot_logs_and_old_ones_go() -> None:
    assert launch.Emulator(port=1).log_path == ROOT / ".logs" / "firestore-emulator-1.log"
    assert ".logs/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "`.logs/`" in (ROOT / "README.md").read_text()


def test_prune_logs_keeps_recent_ones(tmp_path: Path) -> None:
    now = time.time()
    ages = {"old": 2 * 86400, **{f"new{i}": i for i in range(5)}}
    for name, age in ages.items():
        path = tmp_path / f"firestore-emulator-{name}.log"
        path.write_text(name)
        os.utime(path, (now - age, now - age))
    (tmp_path / "other.log").write_text("not an emulator log")
    launch.prune_logs(tmp_path, keep=3)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "firestore-emulator-new0.log",
        "firestore-emulator-new1.log",
        "firestore-emulator-new2.log",
        "other.log",
    ]


def _group_alive(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies, from /proc."""
    alive = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def test_stop_group_stops_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    """The emulator's case: the leader's child outlives a SIGTERM; nothing of the group may be left."""
    code = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.fork(); time.sleep(60)"
    proc = launch.spawn([sys.executable, "-c", code], tmp_path / "group.log", os.environ)
    try:
        assert launch.wait_until(lambda: len(_group_alive(proc.pid)) >= 2, proc, 10, interval=0.05)
        started = time.monotonic()
        launch.stop_group(proc, grace=0.5)
        assert time.monotonic() - started < 5
        gone = launch.wait_until(lambda: not _group_alive(proc.pid), None, 5, interval=0.05)
        assert gone, f"left running: {_group_alive(proc.pid)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_wait_until_gives_up_when_the_process_exits(tmp_path: Path) -> None:
    proc = launch.spawn(["false"], tmp_path / "false.log", os.environ)
    started = time.monotonic()
    assert not launch.wait_until(lambda: False, proc, 30)
    assert time.monotonic() - started < 5
    assert launch.http_status(f"http://127.0.0.1:{free_port()}/") is None


def test_make_test_says_what_it_will_skip_and_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23: on a machine without the optional tools, `make test` names each, what it checks, and its install."""
    import devtools.__main__ as launcher

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(launcher, "PUBSUB_EMULATOR", launcher.Path("/nonexistent/pubsub-emulator"))
    launcher.announce_skips()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[2] for line in lines] == [tool for tool, _, _ in launcher.OPTIONAL_TOOLS]
    assert "install it: bash scripts/ci-browser.sh" in lines[0]
    monkeypatch.undo()
    launcher.announce_skips()
    missing = {tool for tool, _, _ in launcher.missing_optional_tools()}
    assert {line.split()[2] for line in capsys.readouterr().err.splitlines()} == missing
