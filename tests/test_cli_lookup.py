"""``recgrpc search`` and ``recgrpc stats`` against a real server: they print what the RPCs
return, and say in one line when the user is unknown or the server is not there."""

from __future__ import annotations

import socket

import pytest

from recgrpc.cli import main
from recgrpc.client import Item, RecommendationClient
from recgrpc.server import RunningServer


@pytest.fixture
def target(server: RunningServer) -> str:
    address = f"127.0.0.1:{server.port}"
    with RecommendationClient(address, timeout=10) as client:
        client.upsert_items(
            [
                Item("jazz-1", "Late Night Jazz Piano", ["jazz"], ["piano"]),
                Item("rock-1", "Classic Rock Anthems", ["rock"], ["guitar"]),
            ]
        )
        client.log_interaction("ann", "jazz-1", "view")
        client.log_search("ann", "jazz piano")
        # Wait until the search index holds the new items.
        deadline = 50
        while client.search_items("guitar").fallback_reason and deadline:
            deadline -= 1
            client.search_items("guitar", timeout=1)
    return address


def test_search_prints_the_ranked_matches(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "JAZZ pianos", "--target", target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["1", "jazz-1"]
    assert "Late Night Jazz Piano" in lines[0]
    assert "[jazz]" in lines[0]
    assert lines[-1].startswith("recset_id ")
    assert main(["search", "zzzz", "--target", target, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "no_search_matches" in out
    assert "trending" in out


def test_stats_prints_the_users_numbers_and_history(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", "ann", "--target", target]) == 0
    out = capsys.readouterr().out
    assert "user ann" in out
    assert "interactions      2 (SEARCH 1, VIEW 1)" in out
    assert "churn risk        never predicted" in out
    assert "query 'jazz piano'" in out
    assert "jazz-1" in out


def test_unknown_user_and_absent_server_are_one_line(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", "nobody", "--target", target, "--log-level", "WARNING"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "nobody" in err[0]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert (
        main(
            [
                "search",
                "jazz",
                "--target",
                f"127.0.0.1:{port}",
                "--timeout",
                "2",
                "--log-level",
                "ERROR",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "not reachable" in err[0]
