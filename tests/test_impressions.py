"""Served lists are stored behind the request (server.impressions) and ``recset_id`` is a signed
attribution token (recset): feedback is attributed before the impression is flushed, forged
tokens are refused, a full queue or a database outage drops (and counts) impressions while the
request still answers OK, and a graceful shutdown stores every queued impression."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer, create_server
from recgrpc.v1 import recommendation_pb2 as pb
from tests import test_faults as faults
from tests.rpc import bad_fields, stubs
from tests.test_faults import CuttableProxy, seed

# The fault tests' PostgreSQL behind a cuttable TCP proxy (skipped without PostgreSQL).
postgres_url = faults.postgres_url
proxy = faults.proxy
direct = faults.direct

NEVER = 60.0  # a flush interval no test waits for: impressions stay queued until shutdown


def start(settings: Settings) -> RunningServer:
    running = create_server(settings)
    assert running.wait_ready(30), "server never became ready"
    return running


@pytest.fixture
def queued(database_url: str) -> Iterator[RunningServer]:
    """A server that keeps impressions queued (no flush before it stops)."""
    settings = Settings(
        database_url=database_url, host="127.0.0.1", port=0, metrics_port=0,
        refresh_seconds=0.3, impression_flush_seconds=NEVER, impression_queue_size=50,
    )  # fmt: skip
    running = start(settings)
    yield running
    running.stop(grace=1)


def channel_to(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def impressions(db: Database) -> int:
    with db.reader() as session:
        return int(session.scalar(select(func.count()).select_from(m.Impression)) or 0)


def dropped(server: RunningServer) -> float:
    return server.metrics.registry.get_sample_value("recgrpc_impressions_dropped_total") or 0.0


def list_feedback(server: RunningServer, kind: str, algorithm: str, version: str) -> float:
    labels = {"kind": kind, "algorithm": algorithm, "model_version": version}
    value = server.metrics.registry.get_sample_value("recgrpc_list_feedback_total", labels)
    return value or 0.0


def test_feedback_before_the_flush_is_attributed_and_shutdown_stores_every_impression(
    queued: RunningServer, database: Database
) -> None:
    with channel_to(queued) as channel:
        seed(channel)
        rec, _ = stubs(channel)
        served = [
            rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5), timeout=5)
            for _ in range(20)
        ]
        assert impressions(database) == 0  # all still queued
        first = served[0]
        rec.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                user_id="u1",
                item_id=first.recommendations[0].item_id,
                recset_id=first.recset_id,
                clicked=True,
            ),
            timeout=5,
        )
        rec.LogInteraction(
            pb.LogInteractionRequest(
                user_id="u1", item_id=first.recommendations[1].item_id,
                type=pb.INTERACTION_TYPE_CLICK, recset_id=first.recset_id,
            ),
            timeout=5,
        )  # fmt: skip
    assert impressions(database) == 0
    algorithm = pb.Algorithm.Name(first.algorithm).removeprefix("ALGORITHM_")
    assert list_feedback(queued, "clicked", algorithm, first.model_version or "none") == 1
    waiting = queued.handlers.served_lists.queued  # the seed's polling served some too
    assert waiting >= 20
    queued.stop(grace=5)
    assert dropped(queued) == 0
    assert impressions(database) == waiting
    with database.reader() as session:
        stored = session.get(m.Impression, first.recset_id)
        feedback = session.scalars(select(m.Feedback)).all()
    assert stored is not None
    assert stored.item_ids == [r.item_id for r in first.recommendations]
    assert [f.recset_id for f in feedback] == [first.recset_id]


def _altered(token: str) -> str:
    prefix, encoded = token[:3], token[3:]
    raw = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    raw[6] ^= 0x01  # the serving time, a millisecond off
    return prefix + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_forged_recset_ids_are_refused_and_store_nothing(
    queued: RunningServer, database: Database
) -> None:
    with channel_to(queued) as channel:
        seed(channel)
        rec, _ = stubs(channel)
        real = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5))
        item = real.recommendations[0].item_id
        assert real.recset_id.startswith("r1.")
        assert len(real.recset_id) <= 64
        forged = [
            _altered(real.recset_id),
            real.recset_id[:-2],
            "r1." + "A" * 59,
            "r1.not base64 at all!",
            real.recset_id + "A",
            "r1." + real.recset_id,
        ]
        for recset_id in forged:
            with pytest.raises(grpc.RpcError) as refused:
                rec.SubmitFeedback(
                    pb.SubmitFeedbackRequest(
                        user_id="u1", item_id=item, recset_id=recset_id, dismissed=True
                    ),
                    timeout=5,
                )
            assert bad_fields(refused.value) == ["recset_id"]
            with pytest.raises(grpc.RpcError) as refused:
                rec.LogInteraction(
                    pb.LogInteractionRequest(
                        user_id="u1", item_id=item, type=pb.INTERACTION_TYPE_CLICK,
                        recset_id=recset_id,
                    ),
                    timeout=5,
                )  # fmt: skip
            assert bad_fields(refused.value) == ["recset_id"]
    with database.reader() as session:
        assert session.scalars(select(m.Feedback)).all() == []
        clicks = session.scalars(select(m.Interaction).where(m.Interaction.type == "CLICK")).all()
    assert clicks == []


def test_a_full_queue_drops_and_counts_impressions_and_still_answers(
    database_url: str, database: Database
) -> None:
    settings = Settings(
        database_url=database_url, host="127.0.0.1", port=0, metrics_port=0,
        refresh_seconds=0.3, impression_flush_seconds=NEVER, impression_queue_size=3,
    )  # fmt: skip
    running = start(settings)
    try:
        with channel_to(running) as channel:
            seed(channel)
            rec, _ = stubs(channel)
            polled = running.handlers.served_lists.queued  # lists the seed asked for
            assert dropped(running) == 0
            for _ in range(7):
                reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5))
                assert len(reply.recommendations) == 5
            assert running.handlers.served_lists.queued == 3
            assert dropped(running) == polled + 7 - 3
    finally:
        running.stop(grace=5)
    # What was queued is stored at shutdown; the rest was counted as dropped.
    assert impressions(database) == 3


def test_impressions_are_dropped_and_counted_while_the_database_is_down(
    postgres_url: str, proxy: CuttableProxy, direct: Database
) -> None:
    through_proxy = (
        make_url(postgres_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = Settings(
        database_url=through_proxy, host="127.0.0.1", port=0, metrics_port=0,
        refresh_seconds=0.5, impression_flush_seconds=NEVER,
    )  # fmt: skip
    running = start(settings)
    try:
        with channel_to(running) as channel:
            seed(channel)
            rec, _ = stubs(channel)
            queued_before_cut = 4
            for _ in range(queued_before_cut):
                rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5))
            assert impressions(direct) == 0
            faults.cut_and_noticed(proxy, running)
            for _ in range(3):
                reply = rec.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id="u1", limit=5), timeout=10
                )
                assert len(reply.recommendations) == 5
            assert dropped(running) == 3
            served_before_cut = running.handlers.served_lists.queued
    finally:
        running.stop(grace=5)  # the flush fails: the queued impressions are dropped too
    assert served_before_cut >= queued_before_cut
    assert dropped(running) == 3 + served_before_cut
    proxy.restore()
    assert impressions(direct) == 0
