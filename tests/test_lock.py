"""The installed set is requirements.lock, package for package and version for version, and the lock
holds every dependency pyproject.toml names: a fresh machine gets what these tests ran on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, version = line.split(" ")[0].split("==")
            pins[canonical(name)] = version
    return pins


def test_the_installed_packages_are_exactly_the_lock():
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("onenet")  # this checkout, installed editable without dependencies
    pins = locked()
    wrong = {name: (installed.get(name), pin) for name, pin in pins.items() if installed.get(name) != pin}
    strays = sorted(set(installed) - set(pins))
    assert not wrong, f"installed (left) differs from requirements.lock (right): {wrong}; run `make install`"
    assert not strays, f"installed but not in requirements.lock: {strays}; add them to pyproject.toml and run `make lock`, or remove them"


def test_the_lock_holds_every_dependency_pyproject_names_at_an_allowed_version():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(spec) for spec in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked()
    missing = sorted(r.name for r in wanted if canonical(r.name) not in pins)
    assert not missing, f"pyproject.toml names {missing}, requirements.lock does not: run `make lock`"
    outside = {str(r): pins[canonical(r.name)] for r in wanted if not r.specifier.contains(pins[canonical(r.name)], prereleases=True)}
    assert not outside, f"requirements.lock pins versions pyproject.toml does not allow: {outside}; run `make lock`"
