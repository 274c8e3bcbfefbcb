"""Every Python example in the README's client section, run as written against a real server on
a demo world made and trained by the real CLI (`recgrpc demo`, `recgrpc train`), so the examples
cannot drift from the ids, categories and output the service has."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.test_lifecycle import SERVING, free_port, health_status

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The smaller world the README names for this test (same ids and categories as `make run`'s).
DEMO_FLAGS = ("--users", "400", "--items", "300", "--interactions", "15000")


def client_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[
        text.index("## The client\n") : text.index("\n## ", text.index("## The client\n") + 1)
    ]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "recgrpc.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`recgrpc serve` on a trained demo world; yields its address."""
    assert f"`recgrpc demo {' '.join(DEMO_FLAGS)}`" in README.read_text(encoding="utf-8")
    url = f"sqlite:///{tmp_path_factory.mktemp('readme') / 'demo.db'}"
    cli("migrate", "--database-url", url)
    cli("demo", "--database-url", url, *DEMO_FLAGS)
    cli("train", "--database-url", url)
    port = free_port()
    command = [sys.executable, "-m", "recgrpc.cli", "serve", "--database-url", url]
    command += ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            deadline = time.monotonic() + 60
            while health_status(channel) != SERVING:
                assert time.monotonic() < deadline, "the demo server never became ready"
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_example(code: str, address: str) -> list[str]:
    """The example as a script, with only the server's address changed; its output lines."""
    assert "localhost:50051" in code
    result = subprocess.run(
        [sys.executable, "-c", code.replace("localhost:50051", address)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RECGRPC_")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_readme_has_the_client_examples() -> None:
    examples = client_examples()
    assert len(examples) == 2
    assert "user-00042" in examples[0]


def test_the_first_client_example_prints_a_personalised_list(demo_server: str) -> None:
    lines = run_example(client_examples()[0], demo_server)
    assert lines[0] == "HYBRID personalised"
    items = lines[1:6]
    assert [line.split()[0] for line in items] == ["1", "2", "3", "4", "5"]
    for line in items:
        _rank, item_id, score, reason = line.split()
        assert item_id.startswith("item-")
        float(score)
        assert reason in {"hybrid", "fresh"}
    algorithm, picks = lines[6].split(" ", 1)
    assert algorithm == "HYBRID"
    assert picks.startswith("['item-")  # non-empty, in the demo's jazz and cooking
    assert lines[7] == "(FieldViolation(field='user_id', description='is required'),)"
    assert len(lines) == 8


def test_the_asyncio_example_prints_a_personalised_list(demo_server: str) -> None:
    (line,) = run_example(client_examples()[1], demo_server)
    algorithm, recset_id, item_ids = line.split(" ", 2)
    assert algorithm == "HYBRID"
    # GetRecommendations' recset_id is its signed attribution token (recgrpc.recset).
    assert recset_id.startswith("r1.")
    assert len(recset_id) <= 64
    assert item_ids.startswith("['item-")
    assert item_ids.count("item-") == 5


# -- the Discovery section: one example per RPC ------------------------------------------------


def discovery_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Discovery")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def search_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Search and user history\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_discovery_section_has_an_example_per_rpc() -> None:
    examples = discovery_examples()
    assert len(examples) == 3
    for call, example in zip(
        ("similar_items", "frequently_together", "home_feed"), examples, strict=True
    ):
        assert f"client.{call}(" in example


def test_the_similar_items_example(demo_server: str) -> None:
    lines = run_example(discovery_examples()[0], demo_server)
    assert lines[0] == "BEHAVIOUR as asked"
    rows = [line.split() for line in lines[1:6]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r[1].startswith("item-") and r[1] != "item-00007" for r in rows)
    assert {r[2] for r in rows} == {"also_liked"}
    count, recset_id = lines[6].split()
    assert count == "5"
    assert len(recset_id) == 36
    assert len(lines) == 7


def test_the_frequently_together_example(demo_server: str) -> None:
    lines = run_example(discovery_examples()[1], demo_server)
    # The demo plants no shopping sessions: the basket's neighbours, saying so.
    assert lines[0] in {
        "rules",
        "no frequently-together rules for these items: similar items instead",
    }
    pairs = ast.literal_eval(lines[1])  # a printed list of (item_id, reason) tuples
    assert len(pairs) == 4
    assert not {"item-00007", "item-00011"} & {item for item, _ in pairs}


def test_the_home_feed_example(demo_server: str) -> None:
    lines = run_example(discovery_examples()[2], demo_server)
    shelves = [line.split(" | ") for line in lines[:-1]]
    names = [name for name, _, _ in shelves]
    assert names[0] == "for_you"
    assert names[1].startswith("because_you_liked:item-")
    assert "trending" in names
    assert "new_arrivals" in names
    ids = [i for _, _, items in shelves for i in ast.literal_eval(items)]
    assert len(ids) == len(set(ids))
    assert lines[-1] == ("['trending'] for_you left out: a new user with no activity yet")


def test_the_search_and_history_example_prints_what_the_service_returns(
    demo_server: str,
) -> None:
    (example,) = search_examples()
    lines = run_example(example, demo_server)
    assert lines[0] == "matched 3"
    for line in lines[1:4]:
        _rank, item_id, reason, title = line.split(" ", 3)
        assert item_id.startswith("item-")
        assert reason == "search"
        assert "jazz" in title.lower() or "guide" in title.lower()
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    assert lines[4] == "search_personalised True"
    assert lines[5] == "no_search_matches"
    assert lines[6] == "True True True"
    assert lines[7] == "1 None"
    assert lines[8] == "SEARCH classical"  # the newest event first
    assert lines[9].split()[0] in {"VIEW", "CLICK", "LIKE", "PURCHASE", "RATING", "SHARE",
                                   "ADD_TO_CART", "BOOKMARK", "COMMENT", "DISLIKE"}  # fmt: skip
    assert lines[10] == "2"
    assert lines[11] == "unknown user"
    assert len(lines) == 12
