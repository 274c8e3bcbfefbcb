"""SIGKILL a real ``recgrpc serve`` under feedback and interaction load, restart it, and count
what was stored for each logical call (shared by tests/test_kill_feedback.py and
bench/kill_feedback.py).

Each load thread makes logical calls through the typed client, one new user id per call so its
rows can be counted. A call that fails (the server was killed under it, or is restarting) is
sent again with the same idempotency key until the server acknowledges it, as a careful caller
does; so at the end every logical call is acknowledged and must be stored exactly once.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from recgrpc.client import (
    DeadlineExceededError,
    Item,
    RecommendationClient,
    UnavailableError,
)
from recgrpc.db import Database, upgrade

KINDS = ("feedback", "interactions")
ITEMS = [f"kill-item-{i}" for i in range(20)]
RETRY_FOR_SECONDS = 90.0
"""How long one logical call is retried before the run gives up (the server never came back)."""


@dataclass
class KillReport:
    kills: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    """Logical calls per kind, every one acknowledged in the end."""
    resent: Counter[str] = field(default_factory=Counter)
    """Logical calls that failed at least once and were sent again."""
    rows: Counter[str] = field(default_factory=Counter)
    """Rows stored for those calls."""
    duplicated: Counter[str] = field(default_factory=Counter)
    """Logical calls stored more than once."""
    lost: Counter[str] = field(default_factory=Counter)
    """Acknowledged logical calls with no row."""
    errors: list[str] = field(default_factory=list)
    """Failures other than UNAVAILABLE / DEADLINE_EXCEEDED (there should be none)."""

    def lines(self) -> list[str]:
        return [
            f"{kind}: {self.calls[kind]} acknowledged calls ({self.resent[kind]} sent again "
            f"after a failure), {self.rows[kind]} rows, {self.duplicated[kind]} duplicated, "
            f"{self.lost[kind]} lost"
            for kind in KINDS
        ] + [f"kills: {self.kills}; other errors: {len(self.errors)}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _start(database_url: str, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "recgrpc.cli", "--database-url", database_url, "serve"),
        *("--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(free_port())),
    ]
    env = {**os.environ, "RECGRPC_DASHBOARD_PORT": "0", "RECGRPC_REFRESH_SECONDS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 90
    while not _serving(f"127.0.0.1:{port}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("recgrpc serve did not start (see its log)")
        time.sleep(0.1)
    return proc


def _send(client: RecommendationClient, kind: str, key: str, item: str, keyed: bool) -> None:
    if kind == "feedback":
        extra = {"feedback_id": key} if keyed else {}
        client.submit_feedback(key, item, clicked=True, **extra)  # type: ignore[arg-type]
    else:
        client.log_interaction(key, item, "click", event_id=key)


def run(
    database_url: str,
    *,
    kills: int = 3,
    threads: int = 8,
    seed: int = 0,
    log_path: Path | None = None,
) -> KillReport:
    """The load, ``kills`` SIGKILL-and-restart cycles 1-2.5 s apart, then the count."""
    upgrade(database_url)
    rng = random.Random(seed)
    report = KillReport()
    # Older clients have no feedback_id: they resend feedback without a key (the "before").
    keyed = "feedback_id" in inspect.signature(RecommendationClient.submit_feedback).parameters
    port = free_port()
    target = f"127.0.0.1:{port}"
    acknowledged: dict[str, list[str]] = {kind: [] for kind in KINDS}
    lock = threading.Lock()
    stop = threading.Event()

    def load(n: int) -> None:
        kind = KINDS[n % len(KINDS)]
        local = random.Random(n)
        with RecommendationClient(target, timeout=5) as client:
            call = 0
            while not stop.is_set():
                key = f"kill-{kind}-{n}-{call}"
                call += 1
                item = local.choice(ITEMS)
                failures = 0
                give_up = time.monotonic() + RETRY_FOR_SECONDS
                while True:
                    try:
                        _send(client, kind, key, item, keyed)
                        break
                    except (UnavailableError, DeadlineExceededError) as exc:
                        failures += 1
                        if time.monotonic() > give_up:
                            with lock:
                                report.errors.append(f"{key}: gave up ({exc})")
                            return
                        time.sleep(0.05)
                    except Exception as exc:
                        with lock:
                            report.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                        return
                with lock:
                    acknowledged[kind].append(key)
                    report.resent[kind] += failures > 0

    log = log_path.open("ab") if log_path else open(os.devnull, "wb")  # noqa: SIM115
    proc = _start(database_url, port, log)
    try:
        with RecommendationClient(target, timeout=10) as client:
            client.upsert_items([Item(item_id=i) for i in ITEMS])
        workers = [threading.Thread(target=load, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 2.5))
            proc.kill()
            proc.wait()
            report.kills += 1
            proc = _start(database_url, port, log)
        time.sleep(1.5)
        stop.set()
        for worker in workers:
            worker.join(RETRY_FOR_SECONDS + 30)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    db = Database(database_url)
    try:
        with db.reader() as session:
            for kind in KINDS:
                stored = dict(
                    session.execute(
                        text(
                            f"SELECT user_id, count(*) FROM {kind} "  # kind: a fixed table name
                            "WHERE user_id LIKE 'kill-%' GROUP BY user_id"
                        )
                    ).all()
                )
                keys = acknowledged[kind]
                report.calls[kind] = len(keys)
                report.rows[kind] = sum(stored.values())
                report.duplicated[kind] = sum(1 for k in keys if stored.get(k, 0) > 1)
                report.lost[kind] = sum(1 for k in keys if k not in stored)
    finally:
        db.dispose()
    return report
