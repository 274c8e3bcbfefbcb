"""The client tests at the lowest dependency versions the client allows.

``make test`` builds ``.venv-lowest`` first (``make lowest``: grpcio, protobuf and
googleapis-common-protos at their lower bounds in pyproject.toml, see tests/lowest_versions.py);
this test checks that it holds exactly those versions and runs the client's tests in it, against a
real server in that environment, on SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.lowest_versions import client_ranges

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-lowest" / "bin" / "python"
CLIENT_TESTS = [
    "tests/test_client.py",
    "tests/test_client_transport.py",
    "tests/test_client_import.py",
]
VERSIONS = (
    "import importlib.metadata as m, json, sys; "
    "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
)


def test_client_tests_pass_at_the_lowest_allowed_versions(tmp_path: Path) -> None:
    if not PYTHON.exists():
        message = ".venv-lowest is missing: `make test` (or `make lowest`) builds it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ranges = client_ranges()
    found = subprocess.run(
        [str(PYTHON), "-c", VERSIONS, *ranges],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(found.stdout) == {name: lowest for name, (lowest, _) in ranges.items()}

    env = {k: v for k, v in os.environ.items() if k != "RECGRPC_TEST_DATABASE_URL"}
    options = ["-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "lowest")]
    result = subprocess.run(
        [str(PYTHON), "-m", "pytest", *CLIENT_TESTS, *options],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
