"""A database that stops answering under load: what callers see during and after the stall.

    python bench/db_stall.py --database-url postgresql+psycopg://USER@HOST/DB \
        [--stall 12] [--clients 24]

The bench owns a TCP proxy between the server and PostgreSQL. After a warm-up it stops
forwarding bytes (connections stay open, nothing flows: a stalled disk, a saturated network or
a frozen primary look like this) for ``--stall`` seconds, then lets them flow again. Throughout,
``--clients`` threads call GetRecommendations (2 s deadline), one prober calls the health check
every 0.5 s (1 s deadline) and one writer calls LogInteraction every 0.5 s (2 s deadline).

Prints, for the stall window: health checks OK; GetRecommendations answered OK within 1 s with
the database-down ``fallback_reason``; LogInteraction answered UNAVAILABLE within 1 s (and any
OK, which must be in the database afterwards); then how long after the bytes flow again the
first write succeeds and the first personalised (no fallback) list is served. The database's
tables are truncated first: use a throwaway database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from recgrpc.config import Settings
from recgrpc.db import Database, upgrade
from recgrpc.db import models as m
from recgrpc.server import create_server
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import catalog_pb2_grpc as cat_grpc
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

ITEMS = [f"item-{k}" for k in range(30)]


class StallingProxy:
    """Forwards TCP to ``upstream``; while stalled, bytes are held (nothing is closed)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return
            server.settimeout(None)
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class Tally:
    """Outcomes per (phase, label), phases being before/stall/after by the clock."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.phase = "warm-up"
        self.ok_events: list[str] = []

    def add(self, label: str) -> None:
        with self.lock:
            self.counts[(self.phase, label)] += 1


def outcome(call: Callable[[], object]) -> tuple[str, object, float]:
    started = time.monotonic()
    try:
        reply = call()
        code = "OK"
    except grpc.RpcError as exc:
        reply, code = None, exc.code().name  # type: ignore[attr-defined]
    return code, reply, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("RECGRPC_TEST_DATABASE_URL", ""))
    parser.add_argument("--stall", type=float, default=12.0)
    parser.add_argument("--clients", type=int, default=24)
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        raise SystemExit("needs --database-url postgresql+psycopg://... (a throwaway database)")
    upgrade(args.database_url)
    direct = Database(args.database_url)
    with direct.writer() as s:
        names = ", ".join(t.name for t in m.Base.metadata.sorted_tables)
        s.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    url = make_url(args.database_url)
    proxy = StallingProxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings.from_env(
        {}, database_url=through, host="127.0.0.1", port=0, metrics_port=0, dashboard_port=0
    )
    running = create_server(settings)
    assert running.wait_ready(30)
    target = f"127.0.0.1:{running.port}"
    channel = grpc.insecure_channel(target)
    rec = pb_grpc.RecommendationServiceStub(channel)
    cat_grpc.CatalogServiceStub(channel).UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=i, title=i) for i in ITEMS]),
        timeout=10,
    )
    for k in range(args.clients):
        rec.LogInteraction(
            pb.LogInteractionRequest(
                user_id=f"u{k}", item_id=ITEMS[k % len(ITEMS)], type=pb.INTERACTION_TYPE_LIKE
            ),
            timeout=10,
        )
    time.sleep(1.5)  # the refresher picks up the catalogue and trending
    tally = Tally()
    stop = threading.Event()
    resumed_at: list[float] = []
    first_ok: dict[str, float] = {}

    def note_recovery(what: str) -> None:
        if resumed_at and what not in first_ok:
            first_ok[what] = time.monotonic() - resumed_at[0]

    def recommender(k: int) -> None:
        ask = pb.GetRecommendationsRequest(user_id=f"u{k}", limit=5)
        while not stop.is_set():
            code, reply, took = outcome(lambda: rec.GetRecommendations(ask, timeout=2))
            if code == "OK":
                assert isinstance(reply, pb.GetRecommendationsResponse)
                fallback = "fallback" if reply.fallback_reason.startswith("database") else "live"
                fast = "<1s" if took < 1.0 else ">=1s"
                tally.add(f"GetRecommendations OK {fallback} {fast}")
                if fallback == "live" and tally.phase == "after":
                    note_recovery("personalised list")
            else:
                tally.add(f"GetRecommendations {code}")
                time.sleep(0.05)

    def prober() -> None:
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            code, _, _ = outcome(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1))
            tally.add(f"health {code}")
            time.sleep(0.5)

    def writer() -> None:
        for n in range(10_000):
            if stop.is_set():
                return
            event_id = f"stall-bench-{n}"
            event = pb.LogInteractionRequest(
                event_id=event_id,
                user_id="writer",
                item_id=ITEMS[n % len(ITEMS)],
                type=pb.INTERACTION_TYPE_VIEW,
            )
            code, _, took = outcome(lambda: rec.LogInteraction(event, timeout=2))  # noqa: B023
            fast = "<1s" if took < 1.0 else ">=1s"
            tally.add(f"LogInteraction {code} {fast}")
            if code == "OK":
                tally.ok_events.append(event_id)
                if tally.phase == "after":
                    note_recovery("write")
            time.sleep(0.5)

    threads = [threading.Thread(target=recommender, args=(k,)) for k in range(args.clients)]
    threads += [threading.Thread(target=prober), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    tally.phase = "stall"
    proxy.flowing.clear()
    time.sleep(args.stall)
    tally.phase = "after"
    resumed_at.append(time.monotonic())
    proxy.flowing.set()
    time.sleep(10.0)
    stop.set()
    for thread in threads:
        thread.join(30)
    running.stop(grace=2)
    proxy.close()
    with direct.reader() as s:
        stored = set(s.scalars(select(m.Interaction.event_id)))
    lost = [e for e in tally.ok_events if e not in stored]
    print(f"stall {args.stall:g}s, {args.clients} GetRecommendations clients")
    for phase in ("warm-up", "stall", "after"):
        rows = sorted((label, n) for (p, label), n in tally.counts.items() if p == phase)
        print(f"{phase}: " + "; ".join(f"{label} {n}" for label, n in rows))
    for what in ("write", "personalised list"):
        seconds = first_ok.get(what)
        print(
            f"first {what} after the bytes flow again: "
            + (f"{seconds:.1f}s" if seconds is not None else "never within 10s")
        )
    print(f"acknowledged writes missing from the database: {len(lost)}")
    direct.dispose()
    channel.close()


if __name__ == "__main__":
    main()
