"""The client's lowest allowed dependency versions, read from pyproject.toml.

``python tests/lowest_versions.py`` prints the requirements of the environment ``make test``
builds in ``.venv-lowest``: the client's dependencies at their lower bounds, and the server extra's
other packages and the test runner at their pins (the client tests start a real server in
process). ``tests/test_client_lowest.py`` runs the client tests in it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TEST_RUNNER = ("pytest", "pytest-timeout")
_RANGE = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][0-9.]*),<([0-9]+)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[=<>!~;\[ (]", requirement, maxsplit=1)[0])


def project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return project


def client_ranges() -> dict[str, tuple[str, int]]:
    """Client distribution -> (lowest version, excluded next major); ValueError if not a range."""
    ranges: dict[str, tuple[str, int]] = {}
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    for requirement in dependencies:
        found = _RANGE.match(requirement.replace(" ", ""))
        if found is None:
            raise ValueError(f"{requirement!r} is not a 'name>=LOWEST,<NEXT_MAJOR' range")
        name, lowest, below = found.groups()
        ranges[normalise(name)] = (lowest, int(below))
    return ranges


def lowest_requirements() -> list[str]:
    """Requirement lines for the lowest-versions environment (recgrpc itself installed apart)."""
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    ranges = client_ranges()
    lines = [f"{name}=={lowest}" for name, (lowest, _) in ranges.items()]
    lines += [r for r in extras["server"] if requirement_name(r) not in ranges]
    lines += [r for r in extras["dev"] if requirement_name(r) in TEST_RUNNER]
    return lines


if __name__ == "__main__":
    print("\n".join(lowest_requirements()))
