"""`pip install recgrpc` (no extra) must be enough for the client: it imports and builds clients
with grpcio, protobuf and googleapis-common-protos alone, never touching the server's stack."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.lowest_versions import client_ranges, normalise, requirement_name

ROOT = Path(__file__).resolve().parents[1]

# The server extra's packages and the server-side parts of recgrpc.
BLOCKED = (
    "numpy",
    "scipy",
    "sqlalchemy",
    "alembic",
    "lightfm",
    "sklearn",
    "prometheus_client",
    "psycopg",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "grpc_tools",
    "recgrpc.server",
    "recgrpc.model",
    "recgrpc.db",
    # Optional: the client sends the caller's trace context when OpenTelemetry is importable
    # (recgrpc.client._tracing); blocked here, the client must work without it.
    "opentelemetry",
)
CLIENT_DISTRIBUTIONS = {"grpcio", "protobuf", "googleapis-common-protos"}

# Runs in a fresh interpreter: a meta-path finder refuses (and records, with the importing
# module) any blocked import, so even an import whose ImportError is swallowed is seen.
PROBE = r"""
import asyncio, importlib.abc, importlib.metadata, json, sys

blocked = tuple(json.loads(sys.argv[1]))
attempted = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            frame = sys._getframe(1)
            while frame.f_code.co_filename.startswith("<frozen") or frame.f_globals.get(
                "__name__", ""
            ).startswith("importlib"):
                frame = frame.f_back
            attempted.append([name, frame.f_globals.get("__name__", "?")])
            raise ImportError(f"{name} is not available to the client")
        return None

sys.meta_path.insert(0, Blocker())
before = set(sys.modules)

import recgrpc.client as client

sync_client = client.RecommendationClient("127.0.0.1:1", token="t", metadata={"x-a": "b"})
sync_client.close()

async def build_async():
    async with client.AsyncRecommendationClient("127.0.0.1:1"):
        pass

asyncio.run(build_async())

loaded = sorted(set(sys.modules) - before)
owners = importlib.metadata.packages_distributions()
third_party = {}
for name in loaded:
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "recgrpc":
        continue
    if getattr(sys.modules[name], "__file__", None) is None:
        continue  # made at run time by an extension (Cython's internals), not installed
    third_party[top] = sorted(owners.get(top, ["?"]))
print(json.dumps({"attempted": attempted, "loaded": loaded, "third_party": third_party}))
"""


@pytest.mark.slow
def test_client_imports_without_the_server_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # grpcio itself probes for its optional health and reflection packages and does without;
    # the client probes for OpenTelemetry the same way.
    optional = {("grpc", n) for n in ("grpc_health", "grpc_reflection", "grpc_tools")}
    optional.add(("recgrpc.client._tracing", "opentelemetry"))
    assert [
        [name, importer]
        for name, importer in report["attempted"]
        if (importer, name) not in optional
    ] == []
    assert "recgrpc.client" in report["loaded"]
    assert not [m for m in report["loaded"] if m.partition(".")[0] in {"numpy", "sqlalchemy"}]
    # Every third-party module comes from what `pip install recgrpc` installs.
    installed = _with_requirements(CLIENT_DISTRIBUTIONS)
    strays = {
        top: owners
        for top, owners in report["third_party"].items()
        if not {normalise(o) for o in owners} & installed
    }
    assert strays == {}


def _with_requirements(distributions: set[str]) -> set[str]:
    """The distributions and everything they require without extras (as pip would install)."""
    found: set[str] = set()
    pending = list(distributions)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                pending.append(requirement_name(requirement))
    return found


def test_base_dependencies_are_only_what_the_client_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # Compatible ranges from the lowest supported version to the next major (not pins: services
    # that import the client have pins of their own).
    ranges = client_ranges()
    assert set(ranges) == CLIENT_DISTRIBUTIONS
    for name, (lowest, below) in ranges.items():
        assert int(lowest.split(".")[0]) + 1 == below, name
    # The server's packages are reachable only through the extra, which pins exactly, within
    # the client's ranges.
    server = {
        requirement_name(r): r.partition("==")[2]
        for r in project["optional-dependencies"]["server"]
    }
    assert {"numpy", "sqlalchemy", "lightfm-next", "grpcio-health-checking"} <= set(server)
    assert all(server.values()), "the server extra is pinned exactly"
    for name, (lowest, below) in ranges.items():
        pinned = tuple(int(part) for part in server[name].split("."))
        assert tuple(int(part) for part in lowest.split(".")) <= pinned < (below,), name


def test_the_generated_code_supports_the_lowest_allowed_versions() -> None:
    """The lower bounds are what the checked-in generated code itself demands."""
    ranges = client_ranges()
    grpc_stub = (ROOT / "src/recgrpc/v1/recommendation_pb2_grpc.py").read_text()
    assert f"GRPC_GENERATED_VERSION = '{ranges['grpcio'][0]}'" in grpc_stub
    gencode = (ROOT / "src/recgrpc/v1/recommendation_pb2.py").read_text()
    found = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", gencode)
    assert found is not None
    assert ".".join(found.groups()) == ranges["protobuf"][0]
