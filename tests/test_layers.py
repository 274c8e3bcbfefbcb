"""The dependency arrows of DEVELOPERS.md, checked on the source: ``model/`` is pure ML (no SQL,
no I/O layers), ``db/`` knows nothing above it, ``jobs/`` nothing of the server."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "recgrpc"

MODEL_THIRD_PARTY = {
    "numpy",
    "scipy",
    "sklearn",
    "lightfm",
    "threadpoolctl",
    "faiss",
    "bm25s",
    "Stemmer",
}
"""What ``model/`` may import besides the standard library: numerical, index and text libraries
that do no I/O of their own (threadpoolctl: scikit-learn's)."""
MODEL_RECGRPC = {
    "recgrpc.model",
    "recgrpc.domain",
    "recgrpc.config",
    "recgrpc.records",
}
FORBIDDEN = {
    "db": (
        "recgrpc.model",
        "recgrpc.jobs",
        "recgrpc.server",
        "recgrpc.client",
        "recgrpc.dashboard",
    ),
    "jobs": ("recgrpc.server", "recgrpc.client", "recgrpc.dashboard"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, lazy ones included."""
    module = "recgrpc." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sources(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_model_imports_only_numerical_libraries_and_plain_recgrpc_modules() -> None:
    wrong = []
    for path in _sources("model"):
        for line, name in _imports(path):
            top = name.partition(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            allowed = _within(name, MODEL_RECGRPC) if top == "recgrpc" else top in MODEL_THIRD_PARTY
            # ``from recgrpc import domain`` names the package, then the module: judge the module.
            if name == "recgrpc":
                continue
            if not allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert wrong == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources(package)
        for line, name in _imports(path)
        if _within(name, FORBIDDEN[package])
    ]
    assert wrong == []


# Imports every model module in a fresh interpreter with SQLAlchemy and the upper layers refused:
# what the source check cannot see (a plain module that pulls them in) fails here.
PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys

blocked = ("sqlalchemy", "recgrpc.db", "recgrpc.jobs", "recgrpc.server", "grpc")
attempted = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            attempted.append(name)
            raise ImportError(f"{name} is refused to recgrpc.model")
        return None

sys.meta_path.insert(0, Blocker())
import recgrpc.model
for info in pkgutil.iter_modules(recgrpc.model.__path__, "recgrpc.model."):
    importlib.import_module(info.name)
print(json.dumps(attempted))
"""


def test_model_package_imports_without_sqlalchemy_or_the_upper_layers() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
