"""The `session` package installs as a user would install it, and works from anywhere.

One fresh venv for the module: `pip install .` (from the index, as a user's
would; slow), then `python -m session` from another directory, the data files,
`pip install git+URL`, and the example run with its one documented command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from packaging.requirements import Requirement

import session
from tests.conftest import ROOT, AppFactory, bearer, free_port, login, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with `pip install .` done in the repository, as its README says."""
    path = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "."],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    return path


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run(
        [str(venv / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_python_m_session_works_from_any_directory(venv: Path, tmp_path: Path) -> None:
    version = run(venv, "-m", "session", "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"session-service {session.__version__}"
    where = run(venv, "-c", "import session, session.guard; print(session.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the installed copy, not this checkout
    check = run(venv, "-m", "session", "check-config", cwd=tmp_path)
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stderr


def test_the_package_carries_its_data_files(venv: Path, tmp_path: Path) -> None:
    code = (
        "import json; from importlib import resources; d = resources.files('session');"
        "print(json.dumps({n: (d / n).read_text() for n in ('openapi.yaml', 'openapi.json', 'py.typed')}))"
    )
    result = run(venv, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert files["openapi.yaml"] == (ROOT / "session" / "openapi.yaml").read_text()
    assert files["openapi.json"] == (ROOT / "session" / "openapi.json").read_text()


def test_the_wheel_is_the_package_and_its_metadata(venv: Path, tmp_path: Path) -> None:
    built = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("session_service-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"session_service-{session.__version__}.dist-info"
    assert {name.split("/")[0] for name in names} == {"session", dist_info}  # no main.py, tests/, scripts/, …
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if "Requires-Dist:" in line]
    assert {str(Requirement(r)) for r in required} == {str(Requirement(d)) for d in declared}
    assert "License-Expression: Apache-2.0" in metadata


def test_pip_install_from_git(venv: Path, tmp_path: Path) -> None:
    """`pip install git+URL` builds the committed tree: what a fresh clone has."""
    url = f"git+file://{ROOT}"
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    version = run(venv, "-m", "session", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"session-service {session.__version__}"


@pytest.fixture
def example(venv: Path, project: str, emulator_host: str) -> Iterator[str]:
    """`make -C examples/orders run`, in the venv above, against this test's project."""
    port = free_port()
    env = dict(os.environ, FIRESTORE_EMULATOR_HOST=emulator_host, GOOGLE_CLOUD_PROJECT=project)
    proc = subprocess.Popen(
        ["make", "-s", "-C", "examples/orders", "run", f"VENV={venv}", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the example did not come up"
                time.sleep(0.3)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()  # left open, the pipe is finalised later as an unraisable ResourceWarning


def test_the_example_runs_with_one_command(make_client: AppFactory, example: str) -> None:
    api = make_client(SESSION_DEFAULT_PERMISSIONS="read,orders:write")
    register(api)
    token = login(api)
    placed = httpx.post(example, headers=bearer(token), json={"item": "tea", "quantity": 2}, timeout=30)
    assert placed.status_code == 201, placed.text
    assert placed.json()["username"] == "alice"
    refused = httpx.post(example, headers=bearer(token), json={"item": ""}, timeout=30)
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "invalid_request"
    anonymous = httpx.post(example, json={"item": "tea"}, timeout=30)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthenticated")


def test_changelog_has_the_version() -> None:
    assert f"## [{session.__version__}] - " in (ROOT / "CHANGELOG.md").read_text()


def test_license_is_the_apache_text_functions_framework_ships() -> None:
    from importlib import metadata

    [license_file] = [f for f in metadata.files("functions-framework") or [] if f.name == "LICENSE"]
    assert (ROOT / "LICENSE").read_text() == license_file.read_text()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
