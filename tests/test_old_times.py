"""Times before 1970 (a catalogue's publication dates) through every write and read path.

Items are refused only before year 1 (and more than 5 minutes ahead). What is stored must come
back unchanged on both backends through each way the server reads it: the ORM (catalogue), the
prepared statements and, on PostgreSQL, the JSON batch writes and JSON reads of the hot paths, also
when the PostgreSQL server's own time zone is not UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import text
from sqlalchemy.engine import make_url

from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.jobs.importer import ImportKind, import_file
from recgrpc.server.snapshot import build_snapshot
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import bad_fields, stubs, ts
from tests.test_recommender_serving import wait_for

YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
LUMIERE = datetime(1895, 12, 28, 18, 30, tzinfo=UTC)  # the first public film screening
MOON = datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC)
OLD = {"year-one": YEAR_ONE, "lumiere": LUMIERE, "moon": MOON}


def created_at(database: Database) -> dict[str, datetime]:
    with database.reader() as session:
        return {row[0]: row[3] for row in queries.catalogue(session)}


def recent_events(database: Database, user_id: str) -> dict[str, datetime]:
    with database.connection() as conn:
        context = queries.load_user_context(conn, user_id)
    return {event.item_id: event.occurred_at for event in context.recent}


def upsert_old_items_and_events(channel: grpc.Channel) -> None:
    rec, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(
            items=[cat_pb.Item(item_id=k, created_at=ts(v)) for k, v in OLD.items()]
        ),
        timeout=5,
    )
    for n, (item, when) in enumerate(OLD.items()):
        rec.LogInteraction(
            pb.LogInteractionRequest(
                event_id=f"old-{n}",
                user_id="historian",
                item_id=item,
                type=pb.INTERACTION_TYPE_VIEW,
                occurred_at=ts(when),
            ),
            timeout=5,
        )


def test_times_before_1970_round_trip_through_the_api(
    channel: grpc.Channel, database: Database, settings: Settings
) -> None:
    upsert_old_items_and_events(channel)
    stored = created_at(database)
    assert {k: stored[k] for k in OLD} == OLD
    assert recent_events(database, "historian") == OLD
    # The serving snapshot reads them too (as Unix seconds), and serving still works.
    snapshot = build_snapshot(database, settings, datetime.now(UTC))
    position = snapshot.catalog.position
    assert snapshot.catalog.created_at[position["year-one"]] == YEAR_ONE.timestamp()
    rec = stubs(channel)[0]

    def served() -> set[str]:
        request = pb.GetRecommendationsRequest(user_id="someone-else")
        return {r.item_id for r in rec.GetRecommendations(request, timeout=5).recommendations}

    # The server's own refresh picks them up (none of its refreshes may fail on them).
    wait_for(lambda: served() == set(OLD), seconds=10)


def test_a_history_whose_newest_event_is_in_year_one_still_has_a_snapshot(
    channel: grpc.Channel, database: Database, settings: Settings
) -> None:
    """Trending looks back a window from the newest event: from year 1 that window is empty."""
    rec, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="year-one", created_at=ts(YEAR_ONE))]),
        timeout=5,
    )
    rec.LogInteraction(
        pb.LogInteractionRequest(
            event_id="ancient", user_id="historian", item_id="year-one",
            type=pb.INTERACTION_TYPE_VIEW, occurred_at=ts(YEAR_ONE),
        ),
        timeout=5,
    )  # fmt: skip
    snapshot = build_snapshot(database, settings, datetime.now(UTC))
    assert snapshot.catalog.item_ids == ("year-one",)


def test_absurd_times_are_refused_with_the_field_named(channel: grpc.Channel) -> None:
    rec, catalog = stubs(channel)
    before_year_one = timestamp_pb2.Timestamp(seconds=-62135596801)
    with pytest.raises(grpc.RpcError) as refused:
        catalog.UpsertItems(
            cat_pb.UpsertItemsRequest(
                items=[
                    cat_pb.Item(item_id="ok", created_at=ts(LUMIERE)),
                    cat_pb.Item(item_id="ancient", created_at=before_year_one),
                ]
            ),
            timeout=5,
        )
    assert bad_fields(refused.value) == ["items[1].created_at"]
    assert "before year 1" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as refused:
        rec.PredictChurn(pb.PredictChurnRequest(user_id="u", as_of=before_year_one), timeout=5)
    assert bad_fields(refused.value) == ["as_of"]


def test_csv_import_of_an_old_catalogue(database: Database, tmp_path: Path) -> None:
    items = tmp_path / "films.csv"
    items.write_text(
        "item_id,title,created_at\n"
        "arrival,L'Arrivée d'un train,1896-01-25\n"
        "metropolis,Metropolis,-1341014400\n"  # 1927-07-05 in Unix seconds
        "antiquity,Year one,0001-01-01T00:00:00Z\n",
        encoding="utf-8",
    )
    history = tmp_path / "history.csv"
    history.write_text(
        "user_id,item_id,type,value,occurred_at\n"
        "critic,arrival,rating,4.5,1950-03-01T12:00:00Z\n"
        "critic,metropolis,view,,-600000000\n",
        encoding="utf-8",
    )
    import_file(database, ImportKind.ITEMS, items)
    import_file(database, ImportKind.INTERACTIONS, history)
    stored = created_at(database)
    assert stored["arrival"] == datetime(1896, 1, 25, tzinfo=UTC)
    assert stored["metropolis"] == datetime(1927, 7, 5, tzinfo=UTC)
    assert stored["antiquity"] == YEAR_ONE
    assert recent_events(database, "critic") == {
        "arrival": datetime(1950, 3, 1, 12, tzinfo=UTC),
        "metropolis": datetime.fromtimestamp(-600000000, UTC),
    }


def test_postgresql_in_another_time_zone_reads_the_same_times(
    database_url: str, channel: grpc.Channel
) -> None:
    """A PostgreSQL server whose default zone is west of Greenwich renders year 1 as 1 BC."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite stores UTC text, without a zone")
    upsert_old_items_and_events(channel)
    name = make_url(database_url).database
    admin = Database(database_url)
    try:
        with admin.autocommit_connection() as conn:
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET TimeZone = 'America/New_York'"))
        fresh = Database(database_url)  # new connections get the database's default zone
        try:
            assert {k: created_at(fresh)[k] for k in OLD} == OLD
            assert recent_events(fresh, "historian") == OLD
        finally:
            fresh.dispose()
    finally:
        with admin.autocommit_connection() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET TimeZone'))
        admin.dispose()
