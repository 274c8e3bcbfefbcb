"""An acknowledged write is stored exactly once, even when the server is killed with SIGKILL
under load: a real ``recgrpc serve`` on PostgreSQL, killed and restarted three times while
feedback and interactions flow (tests/kill_load.py); every call that failed is resent with its
idempotency key until acknowledged, so each acknowledged call must leave exactly one row."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, _truncate_postgres
from tests.kill_load import KINDS, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs RECGRPC_TEST_DATABASE_URL (PostgreSQL)"),
]


def test_sigkill_under_load_stores_each_acknowledged_call_once(
    postgres_migrated: str, tmp_path: Path
) -> None:
    _truncate_postgres(postgres_migrated)
    log = tmp_path / "servers.log"
    report = run(postgres_migrated, kills=3, threads=8, log_path=log)
    summary = "\n".join(report.lines() + report.errors[:5])
    assert report.errors == [], summary
    assert report.kills == 3
    for kind in KINDS:
        assert report.calls[kind] > 0, summary
        assert report.lost[kind] == 0, summary
        assert report.duplicated[kind] == 0, summary
        assert report.rows[kind] == report.calls[kind], summary
    # The kills did land on calls in flight (which were then resent), so the count means something.
    assert sum(report.resent.values()) > 0, summary
