"""The licence pyproject declares is the one the repository ships, and the package carries it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_apache_license_ships_with_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    words = " ".join(text.split())
    assert words.startswith("Apache License Version 2.0, January 2004")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in words
    assert "9. Accepting Warranty or Additional Liability." in words
    assert "END OF TERMS AND CONDITIONS" in words
    assert importlib.metadata.metadata("recgrpc")["License-Expression"] == "Apache-2.0"
