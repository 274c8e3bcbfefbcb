"""What `recgrpc serve` tells an operator: one line when it is ready (where, and where its metrics
are), the recommender model it loaded and each one it hot-swapped in, and a warning when it
serves without authentication beyond loopback."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.train import train
from recgrpc.server import create_server
from tests.recommender_data import load, taste_data
from tests.test_lifecycle import free_port

pytestmark = pytest.mark.slow


def wait_for_line(log: Path, wanted: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if wanted(line):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line {what}:\n{log.read_text()}")


def test_serve_says_when_it_is_ready_and_which_model_it_serves(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    load(database, taste_data(n_users=60, n_items=30))
    first = train(database, settings, progress=False, epochs=2, force=True).version
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    command = [
        *(sys.executable, "-m", "recgrpc.cli", "serve", "--database-url", settings.database_url),
        *("--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)),
    ]
    env = {**os.environ, "RECGRPC_REFRESH_SECONDS": "0.3"}
    with log.open("wb") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        loaded = wait_for_line(log, lambda s: f"recommender model {first} loaded" in s, "loaded")
        assert "60 users and 30 items trained, 30 catalogue items served" in loaded
        ready = wait_for_line(log, lambda s: "serving on" in s, "serving on")
        assert ready.endswith(
            f"serving on 127.0.0.1:{port} (plaintext; metrics on 127.0.0.1:{metrics_port}/metrics)"
        )
        second = train(database, settings, progress=False, epochs=2, force=True).version
        swapped = wait_for_line(
            log, lambda s: f"recommender model {second} hot-swapped in for {first}" in s, "swap"
        )
        assert "catalogue items served" in swapped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text
    assert "no authentication" not in text  # loopback only
    assert text.count("serving on") == 1


def test_serving_beyond_loopback_without_tokens_is_warned_about(
    settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    for changes, warned in [
        ({"host": "0.0.0.0"}, True),
        ({"host": "0.0.0.0", "auth_tokens_file": str(tokens)}, False),
        ({"host": "127.0.0.1"}, False),
        ({"host": "localhost"}, False),
    ]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="recgrpc.server.app"):
            running = create_server(settings.replace(**changes))
            running.stop(grace=0)
        warnings = [r.getMessage() for r in caplog.records if "no authentication" in r.message]
        assert bool(warnings) is warned, changes
        if warned:
            assert "RECGRPC_AUTH_TOKENS_FILE" in warnings[0]


def test_a_database_outage_is_one_warning_per_refresh_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = Settings(
        database_url=f"postgresql+psycopg://u@127.0.0.1:{closed}/db",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.2,
    )
    with caplog.at_level(logging.INFO, logger="recgrpc"):
        running = create_server(settings)
        try:
            deadline = time.monotonic() + 30
            while sum("database unavailable" in r.message for r in caplog.records) < 2:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        finally:
            running.stop(grace=0)
    outage = [r for r in caplog.records if "database unavailable" in r.message]
    assert "Connection refused" in outage[0].getMessage()
    assert all(r.levelno == logging.WARNING for r in outage)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
