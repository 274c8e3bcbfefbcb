"""Hypothesis strategies for test_hostile: a well-formed request per RPC with zero to two
adversarial field values (control characters, huge strings, NaN, absurd timestamps)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2
from hypothesis import strategies as st

from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb

KNOWN_ITEMS = ["known-0", "known-1", "known-2"]
KNOWN_USER = "known-user"


# -- hypothesis: well-formed messages with adversarial values ----------------------------------

CONTROL = st.characters(min_codepoint=0, max_codepoint=31)
plain_text = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(CONTROL, min_size=1, max_size=10),
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(129, 300_000)),
    st.sampled_from(["", " ", "\x00", "\u202e", "a\nb", "../../etc/passwd", "' OR 1=1; --"]),
)
good_ids = st.one_of(st.sampled_from([*KNOWN_ITEMS, KNOWN_USER]), plain_text)
int32 = st.integers(-(2**31), 2**31 - 1)
hostile_float = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300, -1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
)
good_maps = st.dictionaries(plain_text, plain_text, max_size=3)
hostile_maps = st.one_of(
    st.dictionaries(hostile_text, hostile_text, min_size=1, max_size=5),
    st.dictionaries(plain_text, plain_text, min_size=65, max_size=80),
)


@st.composite
def hostile_timestamps(draw: st.DrawFn) -> timestamp_pb2.Timestamp:
    seconds = draw(
        st.one_of(
            st.integers(-(2**40), 2**40),  # pre-1970 and far-future
            st.sampled_from([-1, 0, 253402300800, -62135596801, 2**62, -(2**62)]),
        )
    )
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=draw(st.one_of(st.just(0), int32)))


good_timestamps = st.one_of(
    st.none(), st.builds(timestamp_pb2.Timestamp, seconds=st.integers(10**9, 1.7 * 10**9))
)
Fields = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]


@st.composite
def messages(draw: st.DrawFn, message_class: type[Any], fields: Fields) -> Any:
    """A message whose fields are plausible except zero to two hostile ones, so that a request
    reaches as deep as its one bad value lets it (not just the first validation)."""
    hostile = set(draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)))
    values = {name: draw(bad if name in hostile else good) for name, (good, bad) in fields.items()}
    return message_class(**{k: v for k, v in values.items() if v is not None})


def _items() -> st.SearchStrategy[Any]:
    return messages(
        cat_pb.Item,
        {
            "item_id": (good_ids, hostile_text),
            "title": (plain_text, hostile_text),
            "categories": (st.lists(plain_text, max_size=3), st.lists(hostile_text, max_size=3)),
            "tags": (st.lists(plain_text, max_size=3), st.lists(hostile_text, min_size=101)),
            "created_at": (good_timestamps, hostile_timestamps()),
            "attributes": (good_maps, hostile_maps),
        },
    )


def _users() -> st.SearchStrategy[Any]:
    return messages(
        cat_pb.User,
        {
            "user_id": (good_ids, hostile_text),
            "attributes": (good_maps, hostile_maps),
            "preferences": (
                st.dictionaries(plain_text, st.floats(0, 1), max_size=3),
                st.dictionaries(hostile_text, hostile_float, min_size=1, max_size=3),
            ),
        },
    )


REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "GetRecommendations": messages(
        pb.GetRecommendationsRequest,
        {
            "user_id": (good_ids, hostile_text),
            "limit": (st.integers(0, 100), int32),
            "algorithm": (st.integers(0, 5), int32),
            "exclude_item_ids": (st.lists(good_ids, max_size=3), st.lists(hostile_text)),
            "categories": (st.lists(plain_text, max_size=2), st.lists(hostile_text)),
            "platform": (plain_text, hostile_text),
        },
    ),
    "LogInteraction": messages(
        pb.LogInteractionRequest,
        {
            "event_id": (st.one_of(st.just(""), plain_text), hostile_text),
            "user_id": (good_ids, hostile_text),
            "item_id": (good_ids, hostile_text),
            "type": (st.integers(1, 11), int32),
            "value": (st.floats(0, 10), hostile_float),
            "content_type": (plain_text, hostile_text),
            "platform": (plain_text, hostile_text),
            "metadata": (good_maps, hostile_maps),
            "occurred_at": (good_timestamps, hostile_timestamps()),
            "recset_id": (st.one_of(st.just(""), plain_text), hostile_text),
        },
    ),
    "SubmitFeedback": messages(
        pb.SubmitFeedbackRequest,
        {
            "user_id": (good_ids, hostile_text),
            "item_id": (good_ids, hostile_text),
            "recset_id": (st.one_of(st.just(""), plain_text), hostile_text),
            "clicked": (st.booleans(), st.booleans()),
            "dismissed": (st.booleans(), st.booleans()),
            "rating": (
                st.one_of(st.none(), st.floats(0, 10, width=32)),
                st.floats(allow_nan=True, allow_infinity=True, width=32),
            ),
        },
    ),
    "PredictChurn": messages(
        pb.PredictChurnRequest,
        {
            "user_id": (good_ids, hostile_text),
            "as_of": (good_timestamps, hostile_timestamps()),
        },
    ),
    "UpsertItems": st.builds(
        cat_pb.UpsertItemsRequest,
        items=st.one_of(
            st.lists(_items(), max_size=4),
            # Over the batch limit (built directly: drawing 1000 hostile items is slow).
            st.builds(lambda n: [cat_pb.Item(item_id=f"x{i}") for i in range(n)], st.just(1001)),
        ),
    ),
    "UpsertUsers": st.builds(cat_pb.UpsertUsersRequest, users=st.lists(_users(), max_size=4)),
    "DeleteUser": messages(cat_pb.DeleteUserRequest, {"user_id": (good_ids, hostile_text)}),
    # -- discovery --
    "GetSimilarItems": messages(
        pb.GetSimilarItemsRequest,
        {
            "item_id": (good_ids, hostile_text),
            "limit": (st.integers(0, 100), int32),
            "user_id": (st.one_of(st.just(""), good_ids), hostile_text),
            "exclude_item_ids": (st.lists(good_ids, max_size=3), st.lists(hostile_text)),
            "categories": (st.lists(plain_text, max_size=2), st.lists(hostile_text)),
            "mode": (st.integers(0, 4), int32),
            "platform": (plain_text, hostile_text),
        },
    ),
    "GetFrequentlyTogether": messages(
        pb.GetFrequentlyTogetherRequest,
        {
            "item_ids": (
                st.lists(good_ids, min_size=1, max_size=5),
                st.one_of(st.lists(hostile_text), st.lists(good_ids, min_size=101, max_size=120)),
            ),
            "limit": (st.integers(0, 100), int32),
            "user_id": (st.one_of(st.just(""), good_ids), hostile_text),
            "exclude_item_ids": (st.lists(good_ids, max_size=3), st.lists(hostile_text)),
            "categories": (st.lists(plain_text, max_size=2), st.lists(hostile_text)),
            "platform": (plain_text, hostile_text),
        },
    ),
    "GetHomeFeed": messages(
        pb.GetHomeFeedRequest,
        {
            "user_id": (good_ids, hostile_text),
            "shelf_size": (st.integers(0, 100), int32),
            "shelves": (st.lists(st.integers(1, 6), max_size=6), st.lists(int32, max_size=20)),
            "exclude_item_ids": (st.lists(good_ids, max_size=3), st.lists(hostile_text)),
            "platform": (plain_text, hostile_text),
        },
    ),
    "SearchItems": messages(
        pb.SearchItemsRequest,
        {
            "query": (plain_text, hostile_text),
            "limit": (st.integers(0, 100), int32),
            "user_id": (st.one_of(st.just(""), good_ids), hostile_text),
            "categories": (st.lists(plain_text, max_size=2), st.lists(hostile_text)),
            "exclude_seen": (st.booleans(), st.booleans()),
            "platform": (plain_text, hostile_text),
        },
    ),
    "GetUserStats": messages(pb.GetUserStatsRequest, {"user_id": (good_ids, hostile_text)}),
    "ListInteractions": messages(
        pb.ListInteractionsRequest,
        {
            "user_id": (good_ids, hostile_text),
            "page_size": (st.integers(0, 1000), int32),
            "page_token": (st.just(""), hostile_text),
            "since": (good_timestamps, hostile_timestamps()),
            "last_days": (st.integers(0, 30), int32),
            "types": (st.lists(st.integers(1, 11), max_size=3), st.lists(int32, max_size=20)),
        },
    ),
    "ListChurnPredictions": messages(
        pb.ListChurnPredictionsRequest,
        {
            "user_id": (good_ids, hostile_text),
            "page_size": (st.integers(0, 1000), int32),
            "page_token": (st.just(""), hostile_text),
        },
    ),
}
