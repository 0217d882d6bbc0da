"""requirements.txt is the complete lock of requirements.in, and pyproject.toml agrees with both.

Checked offline, so no new release on PyPI can turn this red: the direct pins of
requirements.in must be the lock's versions, and walking the installed packages'
own metadata from those pins (the venv is installed from the lock) must reach
exactly the lock's packages at exactly its versions, no more, no fewer. When it
fails, run `make lock` (and `make install`).
"""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.conftest import ROOT


def _requirements(name: str) -> list[Requirement]:
    """The requirement lines of a requirements file (comments and options skipped)."""
    found = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _pin(req: Requirement) -> str:
    [spec] = req.specifier
    assert spec.operator == "==", f"{req} is not pinned with =="
    return spec.version


def _applies(req: Requirement, extras: frozenset[str] = frozenset()) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


@pytest.fixture(scope="module")
def direct() -> dict[NormalizedName, str]:
    return {canonicalize_name(r.name): _pin(r) for r in _requirements("requirements.in")}


@pytest.fixture(scope="module")
def lock() -> dict[NormalizedName, str]:
    """The lock's packages that apply to this interpreter, with their versions."""
    return {canonicalize_name(r.name): _pin(r) for r in _requirements("requirements.txt") if _applies(r)}


def test_lock_is_generated_by_make_lock() -> None:
    assert "make lock" in (ROOT / "requirements.txt").read_text().splitlines()[1]


def test_direct_pins_are_locked_at_their_versions(direct: dict[str, str], lock: dict[str, str]) -> None:
    stale = {name: (version, lock.get(name)) for name, version in direct.items() if lock.get(name) != version}
    assert not stale, f"requirements.txt is out of step with requirements.in (run `make lock`): {stale}"


def test_lock_is_exactly_the_closure_of_the_direct_pins(direct: dict[str, str], lock: dict[str, str]) -> None:
    """Every transitive dependency is pinned, and nothing else is."""
    reached: dict[NormalizedName, str] = {}
    todo = [(name, frozenset[str]()) for name in direct]
    todo += [(canonicalize_name(r.name), frozenset(r.extras)) for r in _requirements("requirements.in") if r.extras]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        reached[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if _applies(req, extras):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    assert set(reached) - set(lock) == set(), "unpinned transitive dependencies: run `make lock`"
    assert set(lock) - set(reached) == set(), "pins nothing needs: run `make lock`"
    stale = {name: (lock[name], version) for name, version in reached.items() if lock[name] != version}
    assert not stale, f"the venv does not have the locked versions (lock, installed): run `make install`: {stale}"


def test_pyproject_dependencies_admit_the_pins(direct: dict[str, str]) -> None:
    """The package's ranges name the same packages, and the tested pins satisfy them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    assert set(ranges) == set(direct)
    for name, version in direct.items():
        assert ranges[name].specifier.contains(version), (str(ranges[name]), version)
