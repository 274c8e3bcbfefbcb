"""Many callers at once: idempotent logging under group commit, dismissals that stick, and lists
served to one user concurrently (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select

from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer
from recgrpc.server.group_commit import BatchFailed, GroupCommitter, _Pending
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import stubs

CLIENTS = 50
EVENTS_PER_CLIENT = 200
DUPLICATES_PER_CLIENT = 20
# The clients run in separate processes so they do not share the in-process server's GIL.
LOAD_PROCESSES = 2


def seed_items(channel: grpc.Channel, n: int) -> list[str]:
    _, catalog = stubs(channel)
    ids = [f"item-{k:03d}" for k in range(n)]
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(
            items=[
                cat_pb.Item(item_id=i, title=i, categories=[f"c{k % 4}"]) for k, i in enumerate(ids)
            ]
        ),
        timeout=10,
    )
    return ids


def stored_event_ids(database: Database) -> Counter[str]:
    with database.reader() as s:
        return Counter(s.scalars(select(m.Interaction.event_id)))


def run_client(
    target: str, index: int, items: list[str], start: threading.Barrier
) -> list[tuple[str, bool]]:
    """One client: its own channel, its events and duplicates in random order, one at a time."""
    rng = random.Random(index)
    own = [f"c{index}-e{k}" for k in range(EVENTS_PER_CLIENT)]
    # Duplicates: this client's own retries and other clients' ids (which race them).
    repeats = rng.sample(own, DUPLICATES_PER_CLIENT // 2) + [
        f"c{(index + 1 + k) % CLIENTS}-e{rng.randrange(EVENTS_PER_CLIENT)}"
        for k in range(DUPLICATES_PER_CLIENT // 2)
    ]
    sends = own + repeats
    rng.shuffle(sends)
    answers: list[tuple[str, bool]] = []
    with grpc.insecure_channel(target) as ch:
        rec, _ = stubs(ch)
        start.wait()
        for event_id in sends:
            reply = rec.LogInteraction(
                pb.LogInteractionRequest(
                    event_id=event_id,
                    user_id=f"u{index}",
                    item_id=rng.choice(items),
                    type=pb.INTERACTION_TYPE_CLICK,
                ),
                timeout=60,
            )
            assert reply.event_id == event_id
            answers.append((event_id, reply.duplicate))
    return answers


def run_clients(target: str, indices: list[int], items: list[str]) -> list[tuple[str, bool]]:
    """Several clients as threads of one load process (the server keeps its own GIL)."""
    start = threading.Barrier(len(indices))
    with ThreadPoolExecutor(len(indices)) as pool:
        futures = [pool.submit(run_client, target, i, items, start) for i in indices]
        return [answer for f in futures for answer in f.result()]


def test_fifty_clients_with_duplicates_store_exactly_the_distinct_events(
    server: RunningServer, channel: grpc.Channel, database: Database
) -> None:
    items = seed_items(channel, 20)
    target = f"127.0.0.1:{server.port}"
    groups = [list(range(CLIENTS))[g::LOAD_PROCESSES] for g in range(LOAD_PROCESSES)]
    with multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES) as pool:
        parts = pool.starmap(run_clients, [(target, group, items) for group in groups])
    answers = [answer for part in parts for answer in part]

    distinct = CLIENTS * EVENTS_PER_CLIENT
    assert len(answers) == CLIENTS * (EVENTS_PER_CLIENT + DUPLICATES_PER_CLIENT)
    stored = stored_event_ids(database)
    assert len(stored) == distinct
    assert max(stored.values()) == 1
    # Every id was answered "new" exactly once, and every other send of it "duplicate".
    fresh = Counter(event_id for event_id, duplicate in answers if not duplicate)
    assert set(fresh) == set(stored)
    assert max(fresh.values()) == 1


def test_dismissal_holds_for_every_list_requested_after_its_acknowledgement(
    channel: grpc.Channel, server: RunningServer
) -> None:
    items = seed_items(channel, 30)
    rec, _ = stubs(channel)
    user = "racer"
    # The user exists with some history, so lists are built from their stored context.
    rec.LogInteraction(
        pb.LogInteractionRequest(user_id=user, item_id=items[0], type=pb.INTERACTION_TYPE_VIEW),
        timeout=10,
    )
    deadline = time.monotonic() + 15
    while True:
        shown = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, limit=100))
        if len(shown.recommendations) == len(items) - 1:
            break
        assert time.monotonic() < deadline, "catalogue never reached the serving snapshot"
        time.sleep(0.1)

    dismissed_at: dict[str, float] = {}
    served: list[tuple[float, set[str]]] = []
    served_lock = threading.Lock()
    stop = threading.Event()
    target = f"127.0.0.1:{server.port}"

    def reader() -> None:
        with grpc.insecure_channel(target) as ch:
            stub, _ = stubs(ch)
            while not stop.is_set():
                asked = time.monotonic()
                reply = stub.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id=user, limit=100), timeout=10
                )
                with served_lock:
                    served.append((asked, {r.item_id for r in reply.recommendations}))

    to_dismiss = items[1:16]
    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(reader) for _ in range(4)]
        try:
            for item in to_dismiss:
                rec.SubmitFeedback(
                    pb.SubmitFeedbackRequest(user_id=user, item_id=item, dismissed=True),
                    timeout=10,
                )
                dismissed_at[item] = time.monotonic()
                time.sleep(0.02)
        finally:
            stop.set()
        for future in readers:
            future.result()

    checked = 0
    for asked, shown_ids in served:
        for item, acknowledged in dismissed_at.items():
            if asked > acknowledged:
                checked += 1
                assert item not in shown_ids, f"{item} served after its dismissal was acknowledged"
    assert checked > len(to_dismiss), "the readers never overlapped the dismissals"
    final = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, limit=100))
    assert {r.item_id for r in final.recommendations}.isdisjoint(to_dismiss)


def test_lists_served_to_one_user_at_once_all_succeed(
    channel: grpc.Channel, server: RunningServer, database: Database
) -> None:
    items = seed_items(channel, 20)
    rec, _ = stubs(channel)
    rec.LogInteraction(
        pb.LogInteractionRequest(
            user_id="popular", item_id=items[0], type=pb.INTERACTION_TYPE_VIEW
        ),
        timeout=10,
    )
    target = f"127.0.0.1:{server.port}"

    def burst(_: int) -> list[str]:
        with grpc.insecure_channel(target) as ch:
            stub, _ = stubs(ch)
            return [
                stub.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id="popular", limit=10), timeout=30
                ).recset_id
                for _ in range(15)
            ]

    with ThreadPoolExecutor(12) as pool:
        recsets = [r for batch in pool.map(burst, range(12)) for r in batch]
    assert len(set(recsets)) == len(recsets) == 12 * 15

    def counted() -> tuple[int, int]:
        with database.reader() as s:
            impressions = s.scalar(
                select(func.count())
                .select_from(m.Impression)
                .where(m.Impression.user_id == "popular")
            )
            stored = s.scalar(
                select(func.count())
                .select_from(m.Recommendation)
                .where(m.Recommendation.user_id == "popular")
            )
        return int(impressions or 0), int(stored or 0)

    # Every list's impression is stored (written behind, within the flush interval) ...
    server.handlers.served_lists.flush()
    assert counted()[0] == len(recsets)
    # ... and serving leaves the stored top-N (the training job's) alone.
    assert counted()[1] == 0


def test_unknown_items_fail_only_their_own_calls_in_a_shared_batch(
    channel: grpc.Channel, server: RunningServer, database: Database
) -> None:
    items = seed_items(channel, 5)
    target = f"127.0.0.1:{server.port}"
    start = threading.Barrier(24)

    def send(k: int) -> grpc.StatusCode:
        known = k % 2 == 0
        with grpc.insecure_channel(target) as ch:
            rec, _ = stubs(ch)
            start.wait()
            try:
                rec.LogInteraction(
                    pb.LogInteractionRequest(
                        event_id=f"mixed-{k}",
                        user_id=f"{'known' if known else 'stray'}-{k}",
                        item_id=items[k % len(items)] if known else f"missing-{k}",
                        type=pb.INTERACTION_TYPE_VIEW,
                    ),
                    timeout=30,
                )
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(send, range(24)))
    assert codes == [
        grpc.StatusCode.OK if k % 2 == 0 else grpc.StatusCode.NOT_FOUND for k in range(24)
    ]
    assert set(stored_event_ids(database)) == {f"mixed-{k}" for k in range(0, 24, 2)}
    with database.reader() as s:
        users = set(s.scalars(select(m.User.user_id)))
    assert not {u for u in users if u.startswith("stray-")}


def test_a_writer_that_trips_over_its_own_bug_fails_its_callers_and_goes_on(
    database: Database,
) -> None:
    # The writer's safety net: whatever escapes a batch, its callers get an error (never a
    # success that may not be true) and the next batch is still written.
    stored: list[int] = []

    class Buggy(GroupCommitter[int]):
        def _commit(self, batch: Sequence[_Pending[int]]) -> None:
            if any(p.item < 0 for p in batch):
                raise RuntimeError("a bug outside _store's error handling")
            stored.extend(p.item for p in batch)

    writer = Buggy(database)
    try:
        with pytest.raises(BatchFailed):
            writer.submit(-1)
        assert writer.submit(7).error is None
    finally:
        writer.close()
    assert stored == [7]
