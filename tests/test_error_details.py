"""Refusals with many bad fields still arrive as INVALID_ARGUMENT with their details: the
BadRequest and the message are capped to fit the client's metadata limit (the first
violations, then how many more), end to end through the typed client and raw stubs."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from recgrpc.client import InvalidArgumentError, Item, RecommendationClient
from recgrpc.errors import FieldViolation, InvalidArgument
from recgrpc.server import RunningServer
from recgrpc.server.converters import items_from_proto
from recgrpc.server.errors import DETAILS_BUDGET, MESSAGE_BUDGET, bad_request
from recgrpc.v1 import catalog_pb2 as cat_pb
from tests.rpc import bad_fields, stubs


def bad_items(count: int) -> list[Item]:
    # A blank id and a title past its length limit, in every item.
    return [Item(item_id=" ", title="x" * 600) for _ in range(count)]


def violations_of(count: int) -> int:
    """How many violations the server's own validation finds in ``bad_items(count)``."""
    request = cat_pb.UpsertItemsRequest(
        items=[cat_pb.Item(item_id=i.item_id, title=i.title) for i in bad_items(count)]
    )
    with pytest.raises(InvalidArgument) as refused:
        items_from_proto(request, datetime.now(UTC))
    return len(refused.value.violations)


@pytest.mark.parametrize("count", [2, 60, 150, 1000])
def test_many_violations_reach_the_typed_client_as_invalid_argument(
    server: RunningServer, count: int
) -> None:
    with (
        RecommendationClient(f"127.0.0.1:{server.port}", max_attempts=1) as client,
        pytest.raises(InvalidArgumentError) as refused,
    ):
        client.upsert_items(bad_items(count))
    violations = refused.value.field_violations
    assert violations[0].field.startswith("items[0].")
    total = violations_of(count)
    if count == 2:  # few: every one listed, nothing summarised
        assert len(violations) == total
        assert all(v.field != "request" for v in violations)
        return
    listed = len(violations) - 1
    assert violations[-1].field == "request"
    assert violations[-1].description == f"and {total - listed} more violations not listed"
    assert all(v.field.startswith("items[") for v in violations[:-1])
    assert refused.value.message.endswith(" more")


def test_long_non_ascii_fields_stay_within_the_budgets(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        _, catalog = stubs(channel)
        # Ids too long, of characters that take several bytes on the wire.
        items = [cat_pb.Item(item_id="é\u200b" * 200) for _ in range(500)]
        with pytest.raises(grpc.RpcError) as refused:
            catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=items), timeout=10)
    fields = bad_fields(refused.value)  # asserts INVALID_ARGUMENT with a BadRequest
    assert fields[0] == "items[0].item_id"
    assert fields[-1] == "request"


def test_status_stays_within_its_budgets_whatever_the_violations() -> None:
    violations = [
        FieldViolation(f"attributes[{'ключ' * 100}{k}]", "значение " * 100) for k in range(3000)
    ]
    status = bad_request(InvalidArgument(violations))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) <= DETAILS_BUDGET + 256
    # As a grpc-message, bytes outside printable ASCII are percent-encoded (3 characters).
    wire = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in status.details.encode())
    assert wire <= MESSAGE_BUDGET
    assert status.details.endswith(" more") or status.details.endswith("details)")
