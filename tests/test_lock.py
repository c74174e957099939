"""The lock file is what CI installs: it must pin every dependency that pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        names += extra
    return [Requirement(name) for name in names]


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = _locked()
    for requirement in _declared():
        if (
            requirement.marker is not None and not requirement.marker.evaluate()
        ):  # this interpreter's environment
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared in pyproject.toml but not in requirements.lock.txt"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock.txt pins {name}=={locked[name]}, outside pyproject.toml's {requirement.specifier}: "
            "refresh the lock (README, Quickstart)"
        )


def test_the_lock_pins_exact_versions_only() -> None:
    lines = [
        line
        for line in (ROOT / "requirements.lock.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    assert lines
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
