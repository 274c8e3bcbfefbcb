"""Every RPC's happy path against a real server and database (SQLite, and PostgreSQL when
configured); the refusals are in test_service_validation.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from sqlalchemy import func, select

from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.db import training_data as td
from recgrpc.server import RunningServer
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import stubs, ts
from tests.service_calls import ALL_TABLES, counts, seed_catalogue


def log(
    channel: grpc.Channel,
    user: str,
    item: str,
    kind: int = pb.INTERACTION_TYPE_CLICK,
    event_id: str = "",
) -> pb.LogInteractionResponse:
    rec, _ = stubs(channel)
    return rec.LogInteraction(
        pb.LogInteractionRequest(event_id=event_id, user_id=user, item_id=item, type=kind),
        timeout=5,
    )


def recommend(channel: grpc.Channel, user: str, **fields: object) -> pb.GetRecommendationsResponse:
    rec, _ = stubs(channel)
    return rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, **fields), timeout=5)


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def served_list(channel: grpc.Channel, user: str) -> pb.GetRecommendationsResponse:
    """A list of all six seeded items served to ``user`` once trending knows them."""
    seed_catalogue(channel)
    for k in range(6):
        log(channel, f"p{k}", f"i{k}")
    wait_for(lambda: len(recommend(channel, user).recommendations) == 6)
    return recommend(channel, user)


# -- happy paths -------------------------------------------------------------------------------


def test_recommendations_are_recorded_as_an_impression_soon_after(
    channel: grpc.Channel, database: Database
) -> None:
    seed_catalogue(channel)
    log(channel, "someone", "i3")
    wait_for(lambda: [r.item_id for r in recommend(channel, "u1").recommendations][:1] == ["i3"])
    response = recommend(channel, "u1", limit=3, exclude_item_ids=["i0"], platform="web")
    ids = [r.item_id for r in response.recommendations]
    assert ids[0] == "i3"
    assert "i0" not in ids
    assert len(ids) == 3
    assert [r.rank for r in response.recommendations] == [1, 2, 3]
    assert all(r.reason == "trending" for r in response.recommendations)
    assert response.generated_at.seconds > 0

    def stored() -> m.Impression | None:
        with database.reader() as s:
            return s.get(m.Impression, response.recset_id)

    # Written behind the request, within the flush interval (0.2 s by default).
    wait_for(lambda: stored() is not None)
    impression = stored()
    assert impression is not None
    assert impression.item_ids == ids
    assert impression.platform == "web"
    # The stored top-N is the training job's; serving does not write it.
    assert counts(database)["recommendations"] == 0


def test_limit_defaults_and_is_coerced(channel: grpc.Channel) -> None:
    _, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=f"x{k}") for k in range(150)]),
        timeout=10,
    )
    for k in range(150):
        log(channel, f"pop{k}", f"x{k}", kind=pb.INTERACTION_TYPE_VIEW)
    wait_for(lambda: len(recommend(channel, "u").recommendations) == 10)
    assert len(recommend(channel, "u", limit=1000).recommendations) == 100
    assert len(recommend(channel, "u", limit=3).recommendations) == 3


def test_category_filter(channel: grpc.Channel) -> None:
    seed_catalogue(channel)
    for k in range(6):
        log(channel, f"p{k}", f"i{k}")
    wait_for(lambda: len(recommend(channel, "u").recommendations) == 6)
    response = recommend(channel, "u", categories=["news"])
    assert {r.item_id for r in response.recommendations} == {"i1", "i3", "i5"}


def test_log_interaction_is_idempotent_on_event_id(
    channel: grpc.Channel, database: Database
) -> None:
    seed_catalogue(channel)
    first = log(channel, "u1", "i1", event_id="evt-1")
    again = log(channel, "u1", "i1", event_id="evt-1")
    assert (first.event_id, first.duplicate) == ("evt-1", False)
    assert (again.event_id, again.duplicate) == ("evt-1", True)
    generated = log(channel, "u1", "i2")
    assert generated.event_id
    assert not generated.duplicate
    assert counts(database)["interactions"] == 2


def test_twenty_concurrent_duplicates_store_exactly_one_row(
    channel: grpc.Channel, database: Database
) -> None:
    seed_catalogue(channel)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: log(channel, "u1", "i1", event_id="same"), range(20)))
    assert sum(not r.duplicate for r in results) == 1
    assert sum(r.duplicate for r in results) == 19
    assert counts(database)["interactions"] == 1


def test_occurred_at_defaults_to_now_and_keeps_past_times(
    channel: grpc.Channel, database: Database
) -> None:
    seed_catalogue(channel)
    rec, _ = stubs(channel)
    before = datetime.now(UTC)
    log(channel, "u1", "i1", event_id="now")
    past = datetime(2020, 5, 1, 12, tzinfo=UTC)
    rec.LogInteraction(
        pb.LogInteractionRequest(
            event_id="past",
            user_id="u1",
            item_id="i1",
            type=pb.INTERACTION_TYPE_RATING,
            value=4,
            occurred_at=ts(past),
            metadata={"source": "import"},
        ),
        timeout=5,
    )
    with database.reader() as s:
        rows = {r.event_id: r for r in s.scalars(select(m.Interaction))}
    assert before - timedelta(seconds=1) <= rows["now"].occurred_at <= datetime.now(UTC)
    assert rows["past"].occurred_at == past
    assert rows["past"].type == "RATING"
    assert rows["past"].value == 4
    assert rows["past"].event_metadata == {"source": "import"}


def test_dismissed_item_is_never_recommended_again(
    channel: grpc.Channel, database: Database
) -> None:
    served = served_list(channel, "u1")
    top = served.recommendations[0].item_id
    rec, _ = stubs(channel)
    ack = rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id="u1", item_id=top, recset_id=served.recset_id, dismissed=True
        ),
        timeout=5,
    )
    assert ack.recorded
    for algorithm in (pb.ALGORITHM_AUTO, pb.ALGORITHM_POPULAR, pb.ALGORITHM_HYBRID):
        again = recommend(channel, "u1", algorithm=algorithm, limit=100)
        assert top not in [r.item_id for r in again.recommendations]
    with database.reader() as s:
        feedback = s.scalars(select(m.Feedback)).one()
    assert (feedback.user_id, feedback.item_id, feedback.dismissed) == ("u1", top, True)


def test_feedback_marks_the_stored_recommendation(
    channel: grpc.Channel, database: Database
) -> None:
    served = served_list(channel, "u1")
    clicked = served.recommendations[1].item_id
    # The training job's stored top-N for the user (what `recgrpc train` writes).
    listed = [r.item_id for r in served.recommendations]
    with database.writer() as session:
        td.replace_top_n(
            session,
            user_ids=["u1"],
            item_ids=listed,
            top_items=np.arange(len(listed), dtype=np.int64)[None, :],
            top_scores=np.ones((1, len(listed)), dtype=np.float32),
            algorithm="HYBRID",
            model_version="v1",
            generated_at=datetime.now(UTC),
        )
    rec, _ = stubs(channel)
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id="u1", item_id=clicked, recset_id=served.recset_id, clicked=True, rating=4.5
        ),
        timeout=5,
    )
    with database.reader() as s:
        flags = {
            r.item_id: r.is_clicked
            for r in s.scalars(select(m.Recommendation).where(m.Recommendation.user_id == "u1"))
        }
        feedback = s.scalars(select(m.Feedback)).one()
    assert flags[clicked] is True
    assert sum(flags.values()) == 1
    assert feedback.rating == 4.5


def test_predict_churn_without_history_is_not_found(channel: grpc.Channel) -> None:
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        rec.PredictChurn(pb.PredictChurnRequest(user_id="ghost"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_catalog_upserts_are_idempotent(channel: grpc.Channel, database: Database) -> None:
    _, catalog = stubs(channel)
    created = datetime(2024, 1, 2, tzinfo=UTC)
    item = cat_pb.Item(
        item_id="a",
        title="A",
        categories=["c1", "c2"],
        tags=["x"],
        created_at=ts(created),
        attributes={"lang": "en"},
    )
    user = cat_pb.User(
        user_id="u", attributes={"country": "NL"}, preferences={"c1": 0.9, "c2": 0.2}
    )
    for _ in range(2):
        assert catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[item]), timeout=5).upserted == 1
        assert catalog.UpsertUsers(cat_pb.UpsertUsersRequest(users=[user]), timeout=5).upserted == 1
    # Re-sending without created_at keeps the original; preferences are replaced as a whole.
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="a", title="A2")]), timeout=5
    )
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(users=[cat_pb.User(user_id="u", preferences={"c3": 1.0})]),
        timeout=5,
    )
    with database.reader() as s:
        stored = s.get(m.Item, "a")
        assert stored is not None
        assert (stored.title, stored.created_at, stored.active) == ("A2", created, True)
        prefs = {p.category: p.score for p in s.scalars(select(m.Preference))}
    assert prefs == {"c3": 1.0}
    assert counts(database)["items"] == 1
    assert counts(database)["users"] == 1


def test_inactive_items_are_not_recommended(channel: grpc.Channel) -> None:
    seed_catalogue(channel, n=2)
    log(channel, "p", "i0")
    log(channel, "q", "i1")
    wait_for(lambda: len(recommend(channel, "u").recommendations) == 2)
    _, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="i0", active=False)]), timeout=5
    )
    wait_for(lambda: [r.item_id for r in recommend(channel, "u").recommendations] == ["i1"])


def test_delete_user_leaves_no_row_behind(
    channel: grpc.Channel, database: Database, server: RunningServer
) -> None:
    seed_catalogue(channel)
    _, catalog = stubs(channel)
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(users=[cat_pb.User(user_id="gone", preferences={"news": 1})]),
        timeout=5,
    )
    log(channel, "gone", "i1")
    log(channel, "stay", "i2")
    served = recommend(channel, "gone")
    rec, _ = stubs(channel)
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id="gone", item_id="i3", recset_id=served.recset_id, dismissed=True
        ),
        timeout=5,
    )
    assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="gone"), timeout=5).deleted
    with database.reader() as s:
        for table in ALL_TABLES:
            if "user_id" in table.__table__.c:
                left = s.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.__table__.c.user_id == "gone")
                )
                assert left == 0, table.__tablename__
    assert counts(database)["interactions"] == 1
    assert not catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="gone"), timeout=5).deleted
