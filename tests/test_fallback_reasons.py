"""Every empty or non-personalised list says truly why (``fallback_reason``), through a real
server with a trained model: what the user has that the model cannot use, or why nothing is left.
"""

from __future__ import annotations

import grpc
import pytest

from recgrpc.db import Database
from recgrpc.server.metrics import fallback_code
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests import test_recommender_serving as serving
from tests.recommender_data import TasteData
from tests.rpc import stubs
from tests.test_recommender_serving import ids, recommend, wait_for, wait_for_model

pytestmark = pytest.mark.slow

# The serving tests' world: taste data, a trained active model, no re-ranking.
settings = serving.settings
taste = serving.taste
trained = serving.trained


def test_a_user_whose_preferences_the_model_never_saw(
    trained: str, channel: grpc.Channel, taste: TasteData
) -> None:
    wait_for_model(channel, trained)
    rec, catalog = stubs(channel)
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(
            users=[cat_pb.User(user_id="newcomer", preferences={"never-seen": 1.0})]
        ),
        timeout=5,
    )
    first = recommend(channel, "newcomer")
    assert first.algorithm == pb.ALGORITHM_POPULAR
    assert first.recommendations
    assert first.fallback_reason == (
        "this user's preferred categories are not in the model: trending instead"
    )
    assert fallback_code(first.fallback_reason) == "cold_start"
    content = recommend(channel, "newcomer", "CONTENT")
    assert content.fallback_reason == (
        "content requested, but this user's preferred categories are not in the model: "
        "trending instead"
    )

    # A click, then a dismissal of the same item: the only event cannot personalise anything.
    clicked = ids(first)[0]
    rec.LogInteraction(
        pb.LogInteractionRequest(
            event_id="newcomer-click",
            user_id="newcomer",
            item_id=clicked,
            type=pb.INTERACTION_TYPE_CLICK,
            recset_id=first.recset_id,
        ),
        timeout=5,
    )
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id="newcomer", item_id=clicked, recset_id=first.recset_id, dismissed=True
        ),
        timeout=5,
    )
    after = recommend(channel, "newcomer")
    assert after.algorithm == pb.ALGORITHM_POPULAR
    assert clicked not in ids(after)
    assert after.fallback_reason == (
        "this user's preferred categories are not in the model; the items they interacted with "
        "were dismissed: trending instead"
    )
    assert "no history" not in after.fallback_reason

    # A second click, on an item it may keep, personalises the next list: no reason needed.
    rec.LogInteraction(
        pb.LogInteractionRequest(
            user_id="newcomer", item_id=ids(after)[0], type=pb.INTERACTION_TYPE_CLICK
        ),
        timeout=5,
    )
    personalised = recommend(channel, "newcomer")
    assert personalised.algorithm == pb.ALGORITHM_HYBRID
    assert personalised.fallback_reason == ""


def test_a_user_with_nothing_yet_or_nothing_usable(trained: str, channel: grpc.Channel) -> None:
    wait_for_model(channel, trained)
    reply = recommend(channel, "nobody-yet")
    assert reply.algorithm == pb.ALGORITHM_POPULAR
    assert reply.fallback_reason == "no history or preferences for this user yet"

    rec, catalog = stubs(channel)
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="soon-gone")]))
    for user, item, kind in [
        ("critic", "i001", pb.INTERACTION_TYPE_DISLIKE),
        ("collector", "soon-gone", pb.INTERACTION_TYPE_CLICK),
    ]:
        rec.LogInteraction(pb.LogInteractionRequest(user_id=user, item_id=item, type=kind))
    assert recommend(channel, "critic").fallback_reason == (
        "the items they interacted with count against the item (disliked, rated low): "
        "trending instead"
    )
    # Served from a catalogue with soon-gone first: else the wait below could pass on the
    # catalogue from before soon-gone was added, and the refresh adding it land after.
    wait_for(lambda: recommend(channel, "collector").fallback_reason == "")
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="soon-gone", active=False)])
    )
    wait_for(lambda: "not in the catalogue" in recommend(channel, "collector").fallback_reason)
    assert recommend(channel, "collector").fallback_reason == (
        "the items they interacted with are not in the catalogue any more: trending instead"
    )


def test_an_empty_list_says_why(
    trained: str, channel: grpc.Channel, database: Database, taste: TasteData
) -> None:
    wait_for_model(channel, trained)
    for algorithm in ("AUTO", "HYBRID", "POPULAR"):
        nothing = recommend(channel, "u000", algorithm, categories=["nonexistent"])
        assert list(nothing.recommendations) == []
        assert nothing.fallback_reason == (
            "nothing to recommend: no active item is in the requested categories"
        ), algorithm
        assert fallback_code(nothing.fallback_reason) == "empty"

    everything = [item.item_id for item in taste.items]
    excluded = recommend(channel, "u000", "HYBRID", exclude_item_ids=everything)
    assert list(excluded.recommendations) == []
    assert excluded.fallback_reason == (
        "nothing to recommend: every active item was already seen, dismissed or excluded"
    )
    in_c0 = recommend(channel, "u000", categories=["c0"], exclude_item_ids=everything)
    assert in_c0.fallback_reason == (
        "nothing to recommend: every active item in the requested categories was already "
        "seen, dismissed or excluded"
    )
    # With a reason of its own, the list keeps it and adds why it is empty.
    stranger = recommend(channel, "stranger", categories=["nonexistent"])
    assert stranger.fallback_reason == (
        "no history or preferences for this user yet; "
        "nothing to recommend: no active item is in the requested categories"
    )
