"""Every string a caller can send fits the column that stores it, on every backend.

The lengths are read from the migrated database itself; each request string field is sent
through the real server at exactly its column's length (stored, read back intact) and one
character over (INVALID_ARGUMENT naming the field), and the CSV columns likewise through
``recgrpc import``. A new string field on a request fails the completeness check until it is
listed here with its column (or as kept in a JSON document, which the size rules bound).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from sqlalchemy import inspect, text

from recgrpc.cli import main
from recgrpc.db import Database
from recgrpc.server import RunningServer
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import bad_fields, stubs

# (request message, field path) -> (table, column) that stores the value.
STORED: dict[tuple[str, str], tuple[str, str]] = {
    ("GetRecommendationsRequest", "user_id"): ("impressions", "user_id"),
    ("GetRecommendationsRequest", "platform"): ("impressions", "platform"),
    ("LogInteractionRequest", "event_id"): ("interactions", "event_id"),
    ("LogInteractionRequest", "user_id"): ("interactions", "user_id"),
    ("LogInteractionRequest", "item_id"): ("interactions", "item_id"),
    ("LogInteractionRequest", "content_type"): ("interactions", "content_type"),
    ("LogInteractionRequest", "platform"): ("interactions", "platform"),
    ("LogInteractionRequest", "recset_id"): ("interactions", "recset_id"),
    ("SubmitFeedbackRequest", "user_id"): ("feedback", "user_id"),
    ("SubmitFeedbackRequest", "item_id"): ("feedback", "item_id"),
    ("SubmitFeedbackRequest", "recset_id"): ("feedback", "recset_id"),
    ("SubmitFeedbackRequest", "feedback_id"): ("feedback", "feedback_id"),
    ("PredictChurnRequest", "user_id"): ("churn_predictions", "user_id"),
    ("UpsertItemsRequest", "items.item_id"): ("items", "item_id"),
    ("UpsertItemsRequest", "items.title"): ("items", "title"),
    ("UpsertUsersRequest", "users.user_id"): ("users", "user_id"),
    ("UpsertUsersRequest", "users.preferences.key"): ("preferences", "category"),
    ("DeleteUserRequest", "user_id"): ("users", "user_id"),
    ("SearchItemsRequest", "user_id"): ("impressions", "user_id"),
    ("SearchItemsRequest", "platform"): ("impressions", "platform"),
    ("GetUserStatsRequest", "user_id"): ("users", "user_id"),
    ("ListInteractionsRequest", "user_id"): ("interactions", "user_id"),
    ("ListChurnPredictionsRequest", "user_id"): ("churn_predictions", "user_id"),
    ("GetSimilarItemsRequest", "user_id"): ("impressions", "user_id"),
    ("GetSimilarItemsRequest", "platform"): ("impressions", "platform"),
    ("GetFrequentlyTogetherRequest", "user_id"): ("impressions", "user_id"),
    ("GetFrequentlyTogetherRequest", "platform"): ("impressions", "platform"),
    ("GetHomeFeedRequest", "user_id"): ("impressions", "user_id"),
    ("GetHomeFeedRequest", "platform"): ("impressions", "platform"),
}
# Kept inside JSON documents (bounded by the entry and byte limits) or never stored.
NOT_IN_A_COLUMN = {
    ("GetRecommendationsRequest", "exclude_item_ids"),
    ("GetRecommendationsRequest", "categories"),
    ("LogInteractionRequest", "metadata.key"),
    ("LogInteractionRequest", "metadata.value"),
    ("UpsertItemsRequest", "items.categories"),
    ("UpsertItemsRequest", "items.tags"),
    ("UpsertItemsRequest", "items.attributes.key"),
    ("UpsertItemsRequest", "items.attributes.value"),
    ("UpsertUsersRequest", "users.attributes.key"),
    ("UpsertUsersRequest", "users.attributes.value"),
    ("SearchItemsRequest", "query"),  # logged in a SEARCH event's metadata, never a column
    ("SearchItemsRequest", "categories"),
    ("ListInteractionsRequest", "page_token"),
    ("ListChurnPredictionsRequest", "page_token"),
    ("GetSimilarItemsRequest", "item_id"),  # looked up in the catalogue
    ("GetSimilarItemsRequest", "exclude_item_ids"),
    ("GetSimilarItemsRequest", "categories"),
    ("GetFrequentlyTogetherRequest", "item_ids"),
    ("GetFrequentlyTogetherRequest", "exclude_item_ids"),
    ("GetFrequentlyTogetherRequest", "categories"),
    ("GetHomeFeedRequest", "exclude_item_ids"),
}
# Calls whose success writes no row to read back: their limit is still checked.
NO_ROW_WRITTEN = {
    ("PredictChurnRequest", "user_id"),  # recorded only once a churn model is trained
    ("DeleteUserRequest", "user_id"),  # erases
    ("GetUserStatsRequest", "user_id"),  # reads
    ("ListInteractionsRequest", "user_id"),  # reads
    ("ListChurnPredictionsRequest", "user_id"),  # reads
    # Discovery lists: their limits are checked here, their impressions by their own tests.
    *(
        (m, f)
        for m in ("GetSimilarItemsRequest", "GetFrequentlyTogetherRequest")
        for f in ("user_id", "platform")
    ),
    ("GetHomeFeedRequest", "user_id"),
    ("GetHomeFeedRequest", "platform"),
}


def _string_fields(message: Descriptor, prefix: str = "") -> list[str]:
    found = []
    for f in message.fields:
        path = prefix + f.name
        if f.type == FieldDescriptor.TYPE_STRING:
            found.append(path)
        elif f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name.startswith(
            "recgrpc."
        ):
            found.extend(_string_fields(f.message_type, path + "."))
    return found


def _request_string_fields() -> set[tuple[str, str]]:
    fields = set()
    for module in (pb, cat_pb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request = method.input_type
                fields.update((request.name, p) for p in _string_fields(request))
    return fields


def test_every_request_string_field_is_accounted_for() -> None:
    listed = set(STORED) | NOT_IN_A_COLUMN
    assert _request_string_fields() == listed, (
        "a request string field was added or removed: list it in STORED with the column that "
        "keeps it (and give it a limit in recgrpc.validation), or in NOT_IN_A_COLUMN"
    )


def _column_lengths(database: Database) -> dict[tuple[str, str], int | None]:
    inspector = inspect(database.engine)
    return {
        (table, c["name"]): getattr(c["type"], "length", None)
        for table in inspector.get_table_names()
        for c in inspector.get_columns(table)
    }


def _value(length: int, tag: str) -> str:
    """A distinct printable string of exactly ``length`` characters."""
    return (tag + "-" + "x" * length)[:length] if length > len(tag) + 1 else "y" * length


def _catalogue(catalog: Any, item_id: str) -> None:
    """Put ``item_id`` in the catalogue when it is a valid id (interactions need their item)."""
    with contextlib.suppress(grpc.RpcError):  # over the limit: the call under test refuses it
        catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=item_id)]))


def _call(server: RunningServer, field: tuple[str, str], value: str) -> Callable[[], Any]:
    """The RPC that sends ``value`` in ``field``, everything else valid (prerequisites made)."""
    message, path = field
    target = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(target) as channel:
        _catalogue(stubs(channel)[1], "base-item")

    def run() -> Any:
        with grpc.insecure_channel(target) as channel:
            recs, catalog = stubs(channel)
            if message == "GetRecommendationsRequest":
                args = {"user_id": "base-user", path: value}
                return recs.GetRecommendations(pb.GetRecommendationsRequest(**args), timeout=10)
            if message == "LogInteractionRequest":
                args = {
                    "user_id": "base-user",
                    "item_id": "base-item",
                    "type": pb.INTERACTION_TYPE_CLICK,
                    path: value,
                }
                if path == "item_id":
                    _catalogue(catalog, value)
                return recs.LogInteraction(pb.LogInteractionRequest(**args), timeout=10)
            if message == "SubmitFeedbackRequest":
                args = {"user_id": "base-user", "item_id": "base-item", "clicked": True}
                args[path] = value
                if path == "item_id":
                    _catalogue(catalog, value)
                return recs.SubmitFeedback(pb.SubmitFeedbackRequest(**args), timeout=10)
            if message == "SearchItemsRequest":
                args = {"query": "base", "user_id": "base-user", path: value}
                return recs.SearchItems(pb.SearchItemsRequest(**args), timeout=10)
            if message == "GetSimilarItemsRequest":
                args = {"item_id": "base-item", "user_id": "base-user", path: value}
                return recs.GetSimilarItems(pb.GetSimilarItemsRequest(**args), timeout=10)
            if message == "GetFrequentlyTogetherRequest":
                args = {"item_ids": ["base-item"], "user_id": "base-user", path: value}
                request = pb.GetFrequentlyTogetherRequest(**args)
                return recs.GetFrequentlyTogether(request, timeout=10)
            if message == "GetHomeFeedRequest":
                args = {"user_id": "base-user", path: value}
                return recs.GetHomeFeed(pb.GetHomeFeedRequest(**args), timeout=10)
            if message == "GetUserStatsRequest":
                return recs.GetUserStats(pb.GetUserStatsRequest(user_id=value), timeout=10)
            if message == "ListInteractionsRequest":
                request = pb.ListInteractionsRequest(user_id=value)
                return recs.ListInteractions(request, timeout=10)
            if message == "ListChurnPredictionsRequest":
                request = pb.ListChurnPredictionsRequest(user_id=value)
                return recs.ListChurnPredictions(request, timeout=10)
            if message == "PredictChurnRequest":
                return recs.PredictChurn(pb.PredictChurnRequest(user_id=value), timeout=10)
            if message == "DeleteUserRequest":
                return catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id=value), timeout=10)
            if message == "UpsertItemsRequest":
                item = {"item_id": "base-item", path.removeprefix("items."): value}
                request = cat_pb.UpsertItemsRequest(items=[cat_pb.Item(**item)])
                return catalog.UpsertItems(request, timeout=10)
            if message == "UpsertUsersRequest":
                if path == "users.preferences.key":
                    user = cat_pb.User(user_id="base-user", preferences={value: 1.0})
                else:
                    user = cat_pb.User(user_id=value)
                return catalog.UpsertUsers(cat_pb.UpsertUsersRequest(users=[user]), timeout=10)
            raise AssertionError(f"no call for {field}")

    return run


def _stored(database: Database, table: str, column: str, value: str) -> bool:
    with database.engine.connect() as conn:
        query = text(f"SELECT count(*) FROM {table} WHERE {column} = :v")  # names from STORED
        return bool(conn.execute(query, {"v": value}).scalar_one())


def _wait_stored(database: Database, table: str, column: str, value: str) -> bool:
    deadline = time.monotonic() + 10  # impressions are written behind the reply
    while time.monotonic() < deadline:
        if _stored(database, table, column, value):
            return True
        time.sleep(0.05)
    return False


def test_each_string_fits_its_column_through_the_server(
    server: RunningServer, database: Database
) -> None:
    lengths = _column_lengths(database)
    problems = []
    for field, (table, column) in sorted(STORED.items()):
        length = lengths[(table, column)]
        assert length, f"{table}.{column} has no length"
        fits, over = _value(length, field[0][:6]), _value(length + 1, field[0][:6])
        call = _call(server, field, fits)
        try:
            call()
        except grpc.RpcError as exc:
            if field not in NO_ROW_WRITTEN or exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                problems.append(f"{field} at {length} chars ({table}.{column}): {exc.code()}")
                continue
        if field not in NO_ROW_WRITTEN and not _wait_stored(database, table, column, fits):
            problems.append(f"{field} at {length} chars: not stored intact in {table}.{column}")
        try:
            _call(server, field, over)()
        except grpc.RpcError as exc:
            refused = exc
        else:
            problems.append(f"{field} at {length + 1} chars ({table}.{column}): accepted")
            continue
        if refused.code() != grpc.StatusCode.INVALID_ARGUMENT:
            problems.append(f"{field} at {length + 1} chars ({table}.{column}): {refused.code()}")
            continue
        name = field[1].split(".")[-2 if field[1].endswith(".key") else -1]
        if not any(name in f for f in bad_fields(refused)):
            problems.append(f"{field}: refused without naming it ({bad_fields(refused)})")
    assert not problems, "\n".join(problems)


# CSV kind -> column -> (table, column), with the other columns of a valid row.
CSV_COLUMNS = {
    "interactions": {
        "event_id": ("interactions", "event_id"),
        "user_id": ("interactions", "user_id"),
        "item_id": ("interactions", "item_id"),
        "content_type": ("interactions", "content_type"),
        "platform": ("interactions", "platform"),
        "recset_id": ("interactions", "recset_id"),
    },
    "items": {"item_id": ("items", "item_id"), "title": ("items", "title")},
    "users": {"user_id": ("users", "user_id")},
    "preferences": {"user_id": ("preferences", "user_id"), "category": ("preferences", "category")},
}
CSV_BASE = {
    "interactions": {"user_id": "u", "item_id": "i", "type": "click", "occurred_at": "1767225600"},
    "items": {"item_id": "i"},
    "users": {"user_id": "u"},
    "preferences": {"user_id": "u", "category": "jazz", "score": "1"},
}


def _csv(tmp_path: Path, kind: str, row: dict[str, str]) -> Path:
    path = tmp_path / f"{kind}-{len(row)}-{sum(map(len, row.values()))}.csv"
    path.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n", encoding="utf-8")
    return path


def test_each_csv_column_fits_its_column_through_import(
    database_url: str,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lengths = _column_lengths(database)
    base = ["--database-url", database_url, "import"]
    problems = []
    for kind, columns in CSV_COLUMNS.items():
        for name, (table, column) in columns.items():
            length = lengths[(table, column)]
            assert length
            fits = _value(length, f"{kind[:4]}{name[:3]}")
            over = fits + "z"
            row = {**CSV_BASE[kind], name: fits}
            if kind == "interactions":  # a new event each time (ids derive from the content)
                row["occurred_at"] = str(1767225600 + 60 * list(columns).index(name))
            code = main([*base, kind, str(_csv(tmp_path, kind, row))])
            out = capsys.readouterr()
            if code != 0 or not _stored(database, table, column, fits):
                problems.append(f"{kind}.{name} at {length}: exit {code} {out.err[-300:]}")
            code = main([*base, kind, str(_csv(tmp_path, kind, {**row, name: over}))])
            err = capsys.readouterr().err
            expected = f"line 2, column {name}: must be at most {length} characters"
            if code != 1 or expected not in err or "Traceback" in err:
                problems.append(f"{kind}.{name} at {length + 1}: exit {code} {err[-300:]}")
    assert not problems, "\n".join(problems)
