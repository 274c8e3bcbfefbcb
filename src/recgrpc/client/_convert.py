"""Python values <-> protobuf messages, shared by the sync and the asyncio client.

Only what cannot be encoded is refused here, with a ``ClientArgumentError`` naming the argument
(an unknown enum name, a naive datetime, a value of the wrong type); everything else is validated
by the server, which names each bad field.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2

from recgrpc.client._errors import ClientArgumentError, InternalError
from recgrpc.client._types import (
    Algorithm,
    ChurnFactor,
    ChurnPrediction,
    InteractionLogged,
    InteractionType,
    Item,
    Recommendations,
    RecommendedItem,
    RiskLevel,
    User,
)
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb

Message = TypeVar("Message", bound=pb_message.Message)
Enum = TypeVar("Enum", bound=enum.Enum)


def _message(cls: type[Message], prefix: str = "", **fields: Any) -> Message:
    """``cls(**fields)``; a value protobuf cannot hold is a ``ClientArgumentError`` naming it."""
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        for name, value in fields.items():  # which one? (only on this error path)
            try:
                cls(**{name: value})
            except (TypeError, ValueError) as culprit:
                raise ClientArgumentError(prefix + name, f"cannot be sent: {culprit}") from exc
        raise ClientArgumentError(prefix or "request", f"cannot be sent: {exc}") from exc


def _enum(field: str, cls: type[Enum], value: object) -> Enum:
    try:
        return cls(value)
    except ValueError:
        names = ", ".join(member.name for member in cls)
        raise ClientArgumentError(field, f"{value!r} is not one of {names}") from None


def _timestamp(field: str, value: datetime) -> timestamp_pb2.Timestamp:
    if not isinstance(value, datetime):
        raise ClientArgumentError(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time would be read as UTC silently; make the caller say which zone they mean.
        raise ClientArgumentError(field, "must be timezone-aware (e.g. datetime.now(UTC))")
    ts = timestamp_pb2.Timestamp()
    try:
        ts.FromDatetime(value)
    except (ValueError, OverflowError) as exc:
        raise ClientArgumentError(field, f"cannot be sent: {exc}") from None
    return ts


def _datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _strings(field: str, values: Iterable[str] | str) -> list[str]:
    # A bare string is almost always a mistake for a one-element list.
    if isinstance(values, str):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise ClientArgumentError(field, "must be a list of strings") from None


_ALGORITHM_NUMBERS = {algo: pb.Algorithm.Value("ALGORITHM_" + algo.value) for algo in Algorithm}
_ALGORITHMS = {number: algo for algo, number in _ALGORITHM_NUMBERS.items()}
_INTERACTION_TYPE_NUMBERS = {
    kind: pb.InteractionType.Value("INTERACTION_TYPE_" + kind.value) for kind in InteractionType
}
_RISK_LEVELS = {pb.RiskLevel.Value("RISK_LEVEL_" + level.value): level for level in RiskLevel}


def recommendations_request(
    user_id: str,
    *,
    limit: int,
    algorithm: Algorithm | str,
    exclude_item_ids: Iterable[str],
    categories: Iterable[str],
    platform: str,
) -> pb.GetRecommendationsRequest:
    return _message(
        pb.GetRecommendationsRequest,
        user_id=user_id,
        limit=limit,
        algorithm=_ALGORITHM_NUMBERS[_enum("algorithm", Algorithm, algorithm)],
        exclude_item_ids=_strings("exclude_item_ids", exclude_item_ids),
        categories=_strings("categories", categories),
        platform=platform,
    )


def recommendations(response: pb.GetRecommendationsResponse) -> Recommendations:
    return Recommendations(
        recset_id=response.recset_id,
        items=tuple(
            RecommendedItem(item_id=r.item_id, score=r.score, rank=r.rank, reason=r.reason)
            for r in response.recommendations
        ),
        # UNSPECIFIED (or a source newer than this client) reads as AUTO: the server chose.
        algorithm=_ALGORITHMS.get(response.algorithm, Algorithm.AUTO),
        model_version=response.model_version,
        fallback_reason=response.fallback_reason,
        generated_at=_datetime(response.generated_at),
    )


def interaction_request(
    user_id: str,
    item_id: str,
    type: InteractionType | str,
    *,
    value: float,
    event_id: str | None,
    content_type: str,
    platform: str,
    metadata: Mapping[str, str] | None,
    occurred_at: datetime | None,
    recset_id: str,
) -> pb.LogInteractionRequest:
    request = _message(
        pb.LogInteractionRequest,
        # Generated here, not on the server, so that a retried send carries the same key.
        event_id=str(uuid.uuid4()) if event_id is None else event_id,
        user_id=user_id,
        item_id=item_id,
        type=_INTERACTION_TYPE_NUMBERS[_enum("type", InteractionType, type)],
        value=value,
        content_type=content_type,
        platform=platform,
        metadata=metadata or {},
        recset_id=recset_id,
    )
    if occurred_at is not None:
        request.occurred_at.CopyFrom(_timestamp("occurred_at", occurred_at))
    return request


def interaction_logged(response: pb.LogInteractionResponse) -> InteractionLogged:
    return InteractionLogged(event_id=response.event_id, duplicate=response.duplicate)


def feedback_request(
    user_id: str,
    item_id: str,
    *,
    recset_id: str,
    clicked: bool,
    dismissed: bool,
    rating: float | None,
    feedback_id: str | None,
) -> pb.SubmitFeedbackRequest:
    fields: dict[str, Any] = {"rating": rating} if rating is not None else {}
    return _message(
        pb.SubmitFeedbackRequest,
        # Made once per call, like event_id, so the channel's retries cannot store it twice.
        feedback_id=str(uuid.uuid4()) if feedback_id is None else feedback_id,
        user_id=user_id,
        item_id=item_id,
        recset_id=recset_id,
        clicked=clicked,
        dismissed=dismissed,
        **fields,
    )


def churn_request(user_id: str, *, as_of: datetime | None) -> pb.PredictChurnRequest:
    request = _message(pb.PredictChurnRequest, user_id=user_id)
    if as_of is not None:
        request.as_of.CopyFrom(_timestamp("as_of", as_of))
    return request


def churn_prediction(user_id: str, response: pb.PredictChurnResponse) -> ChurnPrediction:
    if response.risk_level not in _RISK_LEVELS:
        # Not guessable: an unspecified level is a server bug, a newer one needs a newer client.
        raise InternalError(f"the server sent an unknown risk level ({response.risk_level})")
    return ChurnPrediction(
        user_id=user_id,
        risk=response.churn_risk,
        level=_RISK_LEVELS[response.risk_level],
        factors=tuple(
            ChurnFactor(name=f.name, value=f.value, contribution=f.contribution)
            for f in response.factors
        ),
        model_version=response.model_version,
        predicted_at=_datetime(response.predicted_at),
        horizon_days=response.horizon_days,
    )


def _item(n: int, item: Item) -> cat_pb.Item:
    prefix = f"items[{n}]."
    message = _message(
        cat_pb.Item,
        prefix,
        item_id=item.item_id,
        title=item.title,
        categories=_strings(prefix + "categories", item.categories),
        tags=_strings(prefix + "tags", item.tags),
        attributes=item.attributes,
        active=item.active,
    )
    if item.created_at is not None:
        message.created_at.CopyFrom(_timestamp(prefix + "created_at", item.created_at))
    return message


def items_request(items: Sequence[Item]) -> cat_pb.UpsertItemsRequest:
    return cat_pb.UpsertItemsRequest(items=[_item(n, item) for n, item in enumerate(items)])


def users_request(users: Sequence[User]) -> cat_pb.UpsertUsersRequest:
    return cat_pb.UpsertUsersRequest(
        users=[
            _message(
                cat_pb.User,
                f"users[{n}].",
                user_id=user.user_id,
                attributes=user.attributes,
                preferences=user.preferences,
            )
            for n, user in enumerate(users)
        ]
    )


def delete_user_request(user_id: str) -> cat_pb.DeleteUserRequest:
    return _message(cat_pb.DeleteUserRequest, user_id=user_id)
