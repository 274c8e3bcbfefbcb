"""The benchmark harness's data and load: seeding, the served process, load generators."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from recgrpc.db import Database, models, queries, upgrade
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.v1 import recommendation_pb2 as pb

CLI = (sys.executable, "-m", "recgrpc.cli")
HEALTH = "Health/Check"
RPC_PATHS = {
    HEALTH: "/grpc.health.v1.Health/Check",
    "GetRecommendations": "/recgrpc.v1.RecommendationService/GetRecommendations",
    "LogInteraction": "/recgrpc.v1.RecommendationService/LogInteraction",
    "SubmitFeedback": "/recgrpc.v1.RecommendationService/SubmitFeedback",
    "PredictChurn": "/recgrpc.v1.RecommendationService/PredictChurn",
    # Discovery: an item's neighbours for a signed-in user, a two-item basket, a whole feed.
    "GetSimilarItems": "/recgrpc.v1.RecommendationService/GetSimilarItems",
    "GetFrequentlyTogether": "/recgrpc.v1.RecommendationService/GetFrequentlyTogether",
    "GetHomeFeed": "/recgrpc.v1.RecommendationService/GetHomeFeed",
    "SearchItems": "/recgrpc.v1.RecommendationService/SearchItems",
    "GetUserStats": "/recgrpc.v1.RecommendationService/GetUserStats",
    "ListInteractions": "/recgrpc.v1.RecommendationService/ListInteractions",
    "ListChurnPredictions": "/recgrpc.v1.RecommendationService/ListChurnPredictions",
}
# SearchItems' queries: words of the demo's titles and categories, one to three at a time,
# half of them for a user (re-ranked and recorded), and a few that match nothing.
SEARCH_WORDS = ["jazz", "guide", "live", "rock", "classical", "documentary", "hiking", "quiet"]
CATEGORIES = [f"category-{i:02d}" for i in range(24)]
TAGS = [f"tag-{i:03d}" for i in range(80)]
EVENT_TYPES = ["VIEW"] * 12 + ["CLICK"] * 5 + ["LIKE", "ADD_TO_CART", "PURCHASE", "SHARE"]


DISCOVERY_REQUESTS: dict[str, Callable[[str, list[str]], bytes]] = {
    "GetSimilarItems": lambda uid, picked: pb.GetSimilarItemsRequest(
        item_id=picked[0], user_id=uid, limit=10
    ).SerializeToString(),
    "GetFrequentlyTogether": lambda uid, picked: pb.GetFrequentlyTogetherRequest(
        item_ids=picked, user_id=uid, limit=10
    ).SerializeToString(),
    "GetHomeFeed": lambda uid, _picked: pb.GetHomeFeedRequest(
        user_id=uid, shelf_size=10
    ).SerializeToString(),
}


# -- generated data ---------------------------------------------------------------------------


def seed_database(url: str, items: int, users: int, events: int, seed: int = 7) -> None:
    """Migrate and fill ``url`` with the demo world (skipped when it already holds that much)."""
    upgrade(url)
    db = Database(url)
    try:
        with db.reader() as session:
            have_items = queries.count_rows(session, models.Item)
            have_events = queries.count_rows(session, models.Interaction)
        if have_items < items or have_events < events:
            data = generate_demo(seed, n_users=users, n_items=items, n_interactions=events)
            write_demo(db, data)
    finally:
        db.dispose()


def train_models(url: str) -> None:
    """Train the recommender and the churn model (``recgrpc train``, ``train-churn``) unless
    active ones exist, so GetRecommendations is measured warm and PredictChurn can answer."""
    db = Database(url)
    try:
        with db.reader() as session:
            active = set(
                session.scalars(
                    select(models.ModelArtifact.kind).where(models.ModelArtifact.status == "active")
                )
            )
    finally:
        db.dispose()
    for kind, command in (("recommender", "train"), ("churn", "train-churn")):
        if kind in active:
            continue
        started = time.monotonic()
        done = subprocess.run(
            [*CLI, "--log-level", "WARNING", "--database-url", url, command],
            capture_output=True,
            text=True,
            check=False,
        )
        outcome = "ok" if done.returncode == 0 else f"failed ({done.stderr.strip()[-200:]})"
        print(f"recgrpc {command}: {outcome} in {time.monotonic() - started:.1f}s")


def request_ids(url: str, limit: int = 5000) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(users with history, active items) to build requests from."""
    db = Database(url)
    try:
        with db.reader() as session:
            users = session.scalars(
                select(models.Interaction.user_id)
                .distinct()
                .order_by(models.Interaction.user_id)
                .limit(limit)
            )
            items = session.scalars(
                select(models.Item.item_id)
                .where(models.Item.active.is_(True))
                .order_by(models.Item.item_id)
            )
            return tuple(users), tuple(items)
    finally:
        db.dispose()


# -- load generation (runs in separate processes) ---------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One measurement, split evenly over the load processes."""

    rpc: str
    mode: str  # "closed" or "open"
    concurrency: int  # in-flight requests per process (closed loop)
    rate: float  # requests/s per process (open loop)
    duration: float
    max_requests: int  # per process
    start_at: float  # wall-clock time all processes start together
    users: tuple[str, ...]
    items: tuple[str, ...]
    prime: bool = False  # first send each distinct pre-built request once (warm-up)


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, OK answers only
    codes: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0


def request_maker(
    rpc: str,
    users: Sequence[str],
    items: Sequence[str],
    worker: int,
    pool: list[bytes],
) -> Callable[[], bytes]:
    """Serialized request bodies; pre-built where they may repeat, fresh where ids must differ.
    The pre-built ones (the same in every run of a worker) are also appended to ``pool``."""
    rng = random.Random(worker * 7919 + len(rpc))
    if rpc == HEALTH:
        body = health_pb2.HealthCheckRequest().SerializeToString()
        return lambda: body
    if rpc == "LogInteraction":
        prefix = f"bench-{uuid.uuid4().hex[:12]}-"
        counter = iter(range(1 << 62))

        def log_interaction() -> bytes:
            return pb.LogInteractionRequest(
                event_id=f"{prefix}{next(counter)}",
                user_id=rng.choice(users),
                item_id=rng.choice(items),
                type=pb.INTERACTION_TYPE_VIEW,
            ).SerializeToString()

        return log_interaction
    for _ in range(512):
        uid = rng.choice(users)
        if rpc == "GetRecommendations":
            pool.append(pb.GetRecommendationsRequest(user_id=uid, limit=10).SerializeToString())
        elif rpc == "SubmitFeedback":
            pool.append(
                pb.SubmitFeedbackRequest(
                    user_id=uid, item_id=rng.choice(items), clicked=True
                ).SerializeToString()
            )
        elif rpc == "PredictChurn":
            pool.append(pb.PredictChurnRequest(user_id=uid).SerializeToString())
        elif rpc in DISCOVERY_REQUESTS:
            pool.append(DISCOVERY_REQUESTS[rpc](uid, rng.sample(list(items), 2)))
        elif rpc == "SearchItems":
            words = rng.sample(SEARCH_WORDS, rng.randint(1, 3)) if rng.random() > 0.05 else ["zq"]
            pool.append(
                pb.SearchItemsRequest(
                    query=" ".join(words), limit=10, user_id=uid if rng.random() < 0.5 else ""
                ).SerializeToString()
            )
        elif rpc == "GetUserStats":
            pool.append(pb.GetUserStatsRequest(user_id=uid).SerializeToString())
        elif rpc == "ListInteractions":
            pool.append(pb.ListInteractionsRequest(user_id=uid, page_size=50).SerializeToString())
        elif rpc == "ListChurnPredictions":
            pool.append(pb.ListChurnPredictionsRequest(user_id=uid).SerializeToString())
        else:
            raise ValueError(f"unknown RPC {rpc!r}")
    return lambda: rng.choice(pool)


async def _run_spec(channels: Sequence[Any], spec: LoadSpec, worker: int) -> LoadResult:
    calls = [channel.unary_unary(RPC_PATHS[spec.rpc]) for channel in channels]
    pool: list[bytes] = []
    make = request_maker(spec.rpc, spec.users, spec.items, worker, pool)
    result = LoadResult()
    codes: Counter[str] = Counter()
    latencies = result.latencies
    clock = time.perf_counter

    async def send(call: Any, body: bytes, since: float) -> None:
        try:
            await call(body, timeout=30)
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        else:
            codes["OK"] += 1
            latencies.append(clock() - since)

    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    if spec.prime and pool:  # a warm-up: every request this worker will send, served once
        distinct = iter(dict.fromkeys(pool))

        async def prime(call: Any) -> None:
            for body in distinct:
                await send(call, body, clock())

        await asyncio.gather(*(prime(calls[i % len(calls)]) for i in range(spec.concurrency)))
    begin = clock()
    deadline = begin + spec.duration
    if spec.mode == "closed":
        sent = 0

        async def slot(call: Any) -> None:
            nonlocal sent
            while sent < spec.max_requests and clock() < deadline:
                sent += 1
                await send(call, make(), clock())

        await asyncio.gather(*(slot(calls[i % len(calls)]) for i in range(spec.concurrency)))
    else:
        interval = 1.0 / spec.rate
        total = min(spec.max_requests, int(spec.duration * spec.rate))
        pending = []
        for i in range(total):
            scheduled = begin + i * interval
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            call = calls[i % len(calls)]
            pending.append(asyncio.ensure_future(send(call, make(), scheduled)))
        await asyncio.gather(*pending)
    result.elapsed = clock() - begin
    result.codes = dict(codes)
    return result


async def _worker_loop(conn: Connection, target: str, worker: int, connections: int) -> None:
    loop = asyncio.get_running_loop()
    # A local subchannel pool gives each channel its own TCP connection; with several, the
    # kernel's SO_REUSEPORT hashing spreads them over `serve --workers` processes.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    try:
        while True:
            spec: LoadSpec | None = await loop.run_in_executor(None, conn.recv)
            if spec is None:
                return
            conn.send(await _run_spec(channels, spec, worker))
    finally:
        for channel in channels:
            await channel.close(None)


def load_process(conn: Connection, target: str, worker: int, connections: int) -> None:
    """Entry point of one load-generating process: runs the specs it is sent until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_worker_loop(conn, target, worker, connections))


class LoadGenerators:
    """N load processes (spawned: no gRPC state is inherited) driven over pipes."""

    def __init__(self, target: str, processes: int, connections: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for worker in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=load_process, args=(child, target, worker, connections), daemon=True
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, specs: Sequence[LoadSpec]) -> LoadResult:
        """Run ``specs[i]`` in process ``i`` (fewer specs leave the other processes idle)."""
        for conn, spec in zip(self.conns, specs, strict=False):
            conn.send(spec)
        merged = LoadResult()
        codes: Counter[str] = Counter()
        for conn in self.conns[: len(specs)]:
            part: LoadResult = conn.recv()
            merged.latencies.extend(part.latencies)
            codes.update(part.codes)
            merged.elapsed = max(merged.elapsed, part.elapsed)
        merged.codes = dict(codes)
        return merged

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


# -- the server under test --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``recgrpc serve`` in a subprocess on a loopback port; stopped with SIGTERM (drain)."""

    def __init__(self, url: str, workers: int) -> None:
        self.port = free_port()
        command = [
            *CLI,
            "--database-url",
            url,
            "--log-level",
            "WARNING",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            "0",
            "--workers",
            str(workers),
        ]
        self.proc = subprocess.Popen(command)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}")
            with grpc.insecure_channel(self.target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.3)
        raise RuntimeError("server did not become SERVING in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- measurement and reporting ----------------------------------------------------------------
