"""Proto <-> domain conversion, with every field validated on the way in.

Each ``*_from_proto`` collects all violations before refusing, so a caller fixes a request in one
round trip; nothing reaches the handler layer unless the whole request is valid.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from recgrpc import domain, validation
from recgrpc.errors import FieldViolation, InvalidArgument
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb

# The rules and limits themselves live in recgrpc.validation, shared with the CSV importer.
_ALGORITHMS = {
    pb.ALGORITHM_UNSPECIFIED: domain.Algorithm.AUTO,
    pb.ALGORITHM_AUTO: domain.Algorithm.AUTO,
    pb.ALGORITHM_HYBRID: domain.Algorithm.HYBRID,
    pb.ALGORITHM_COLLABORATIVE: domain.Algorithm.COLLABORATIVE,
    pb.ALGORITHM_CONTENT: domain.Algorithm.CONTENT,
    pb.ALGORITHM_POPULAR: domain.Algorithm.POPULAR,
}
_ALGORITHM_TO_PROTO = {
    algo: number for number, algo in _ALGORITHMS.items() if number != pb.ALGORITHM_UNSPECIFIED
}
_INTERACTION_TYPES = {
    number: domain.InteractionType(name.removeprefix("INTERACTION_TYPE_"))
    for name, number in pb.InteractionType.items()
    if number != pb.INTERACTION_TYPE_UNSPECIFIED
}
_RISK_LEVELS = {
    domain.RiskLevel.LOW: pb.RISK_LEVEL_LOW,
    domain.RiskLevel.MEDIUM: pb.RISK_LEVEL_MEDIUM,
    domain.RiskLevel.HIGH: pb.RISK_LEVEL_HIGH,
}


class _Checker:
    """Collects field violations; ``raise_if_any`` refuses the request with all of them."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def identifier(
        self,
        field: str,
        value: str,
        *,
        required: bool = True,
        limit: int = validation.MAX_ID_LENGTH,
    ) -> str:
        if not value and not required:
            return value
        problem = validation.identifier_problem(value, limit)
        if problem:
            self.add(field, problem)
        return value

    def text(self, field: str, value: str, limit: int = validation.MAX_TEXT_LENGTH) -> str:
        problem = validation.text_problem(value, limit)
        if problem:
            self.add(field, problem)
        return value

    def identifiers(self, field: str, values: Iterable[str], limit: int) -> list[str]:
        items = list(values)
        if len(items) > limit:
            self.add(field, f"must have at most {limit} entries")
            return []
        for i, value in enumerate(items):
            self.identifier(f"{field}[{i}]", value)
        return items

    def string_map(self, field: str, values: Mapping[str, str]) -> dict[str, str]:
        entries = dict(values)
        for key, problem in validation.string_map_problems(entries):
            self.add(f"{field}[{key}]" if key else field, problem)
        return entries

    def problem(self, field: str, problem: str | None) -> None:
        if problem:
            self.add(field, problem)

    def finite(self, field: str, value: float, low: float, high: float) -> float:
        self.problem(field, validation.number_problem(value, low, high))
        return value

    def timestamp(
        self, field: str, value: timestamp_pb2.Timestamp, now: datetime
    ) -> datetime | None:
        """A set timestamp within year 1 .. now + 5 minutes; ``None`` when invalid."""
        problem = validation.unix_seconds_problem(value.seconds, now)
        if problem:
            self.add(field, problem)
            return None
        try:
            when = value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError, OSError):
            self.add(field, "is not a valid timestamp")
            return None
        problem = validation.time_problem(when, now)
        if problem:
            self.add(field, problem)
            return None
        return when


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def list_limit(check: _Checker, field: str, value: int, default: int, maximum: int) -> int:
    """The rule for every list size a caller asks for: 0 means ``default``, more than
    ``maximum`` is coerced down, negative is refused."""
    if value < 0:
        check.add(field, "must not be negative (0 means the default)")
    return max(1, default if value == 0 else min(value, maximum))


def recommendation_query(
    request: pb.GetRecommendationsRequest, default_limit: int, max_limit: int
) -> domain.RecommendationQuery:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    limit = list_limit(check, "limit", request.limit, default_limit, max_limit)
    algorithm = _ALGORITHMS.get(request.algorithm)
    if algorithm is None:
        check.add("algorithm", f"unknown value {request.algorithm}")
    excluded = check.identifiers(
        "exclude_item_ids", request.exclude_item_ids, validation.MAX_LIST_FIELD
    )
    categories = check.identifiers("categories", request.categories, validation.MAX_LABELS)
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    assert algorithm is not None
    return domain.RecommendationQuery(
        user_id=user_id,
        limit=limit,
        algorithm=algorithm,
        exclude_item_ids=frozenset(excluded),
        categories=frozenset(categories),
        platform=platform,
    )


def recommendations_response(served: domain.ServedList) -> pb.GetRecommendationsResponse:
    ranking = served.ranking
    return pb.GetRecommendationsResponse(
        recset_id=served.recset_id,
        recommendations=[
            pb.Recommendation(item_id=it.item_id, score=it.score, rank=rank, reason=it.reason)
            for rank, it in enumerate(ranking.items, start=1)
        ],
        algorithm=_ALGORITHM_TO_PROTO[ranking.algorithm],
        model_version=ranking.model_version,
        fallback_reason=ranking.fallback_reason,
        generated_at=_timestamp(served.generated_at),
    )


def interaction_from_proto(
    request: pb.LogInteractionRequest, now: datetime, ratings: validation.RatingScale
) -> domain.Interaction:
    check = _Checker()
    event_id = check.identifier("event_id", request.event_id, required=False) or str(uuid.uuid4())
    user_id = check.identifier("user_id", request.user_id)
    kind = _INTERACTION_TYPES.get(request.type)
    if kind is None:
        check.add("type", "must be a known interaction type other than UNSPECIFIED")
    item_id = request.item_id
    if kind is domain.InteractionType.SEARCH:  # a query, not an item
        if item_id:
            check.add("item_id", "must be empty for a SEARCH event (the query goes in metadata)")
        check.problem(
            "metadata[query]", validation.search_query_problem(request.metadata.get("query", ""))
        )
    else:
        check.identifier("item_id", item_id)
    value = request.value
    if kind is None:
        check.finite("value", value, -validation.MAX_VALUE, validation.MAX_VALUE)
    else:
        check.problem("value", validation.interaction_value_problem(kind, value, ratings))
    occurred_at = now
    if request.HasField("occurred_at"):
        occurred_at = check.timestamp("occurred_at", request.occurred_at, now) or now
    metadata = check.string_map("metadata", request.metadata)
    recset_id = check.identifier(
        "recset_id", request.recset_id, required=False, limit=validation.MAX_RECSET_ID_LENGTH
    )
    content_type = check.text("content_type", request.content_type)
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    assert kind is not None
    return domain.Interaction(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        type=kind,
        occurred_at=occurred_at,
        value=value,
        content_type=content_type,
        platform=platform,
        metadata=metadata,
        recset_id=recset_id,
    )


def feedback_from_proto(
    request: pb.SubmitFeedbackRequest, ratings: validation.RatingScale
) -> domain.Feedback:
    check = _Checker()
    feedback_id = check.identifier("feedback_id", request.feedback_id, required=False) or str(
        uuid.uuid4()
    )
    user_id = check.identifier("user_id", request.user_id)
    item_id = check.identifier("item_id", request.item_id)
    recset_id = check.identifier(
        "recset_id", request.recset_id, required=False, limit=validation.MAX_RECSET_ID_LENGTH
    )
    rating: float | None = None
    if request.HasField("rating"):
        rating = request.rating
        check.problem("rating", ratings.problem(rating))
    if not (request.clicked or request.dismissed or rating is not None):
        check.add("clicked", "feedback needs clicked, dismissed or a rating")
    if request.clicked and request.dismissed:
        check.add("dismissed", "an item cannot be clicked and dismissed in one feedback")
    check.raise_if_any()
    return domain.Feedback(
        user_id=user_id,
        item_id=item_id,
        recset_id=recset_id,
        clicked=request.clicked,
        dismissed=request.dismissed,
        rating=rating,
        feedback_id=feedback_id,
    )


def churn_request(request: pb.PredictChurnRequest, now: datetime) -> tuple[str, datetime]:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    as_of = now
    if request.HasField("as_of"):
        as_of = check.timestamp("as_of", request.as_of, now) or now
    check.raise_if_any()
    return user_id, as_of


def churn_response(prediction: domain.ChurnPrediction) -> pb.PredictChurnResponse:
    return pb.PredictChurnResponse(
        churn_risk=prediction.risk,
        risk_level=_RISK_LEVELS[prediction.level],
        factors=[
            pb.ChurnFactor(name=f.name, value=f.value, contribution=f.contribution)
            for f in prediction.factors
        ],
        model_version=prediction.model_version,
        predicted_at=_timestamp(prediction.predicted_at),
        horizon_days=prediction.horizon_days,
    )


def _batch_size(check: _Checker, field: str, count: int) -> None:
    if count == 0:
        check.add(field, "must not be empty")
    elif count > validation.MAX_BATCH:
        check.add(field, f"must have at most {validation.MAX_BATCH} entries")


def _no_repeats(check: _Checker, field: str, ids: list[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value in seen:
            check.add(f"{field}[{i}].{key}", f"repeats {value[:64]!r} from earlier in the batch")
        seen.add(value)


def items_from_proto(request: cat_pb.UpsertItemsRequest, now: datetime) -> list[domain.Item]:
    check = _Checker()
    _batch_size(check, "items", len(request.items))
    if check.violations:
        check.raise_if_any()
    items: list[domain.Item] = []
    for i, item in enumerate(request.items):
        prefix = f"items[{i}]"
        created_at = None
        if item.HasField("created_at"):
            created_at = check.timestamp(f"{prefix}.created_at", item.created_at, now)
        items.append(
            domain.Item(
                item_id=check.identifier(f"{prefix}.item_id", item.item_id),
                title=check.text(f"{prefix}.title", item.title, validation.MAX_TITLE_LENGTH),
                categories=tuple(
                    dict.fromkeys(
                        check.identifiers(
                            f"{prefix}.categories", item.categories, validation.MAX_LABELS
                        )
                    )
                ),
                tags=tuple(
                    dict.fromkeys(
                        check.identifiers(f"{prefix}.tags", item.tags, validation.MAX_LABELS)
                    )
                ),
                created_at=created_at,
                attributes=check.string_map(f"{prefix}.attributes", item.attributes),
                active=item.active if item.HasField("active") else True,
            )
        )
    _no_repeats(check, "items", [it.item_id for it in items], "item_id")
    check.raise_if_any()
    return items


def users_from_proto(request: cat_pb.UpsertUsersRequest) -> list[domain.User]:
    check = _Checker()
    _batch_size(check, "users", len(request.users))
    if check.violations:
        check.raise_if_any()
    users: list[domain.User] = []
    for i, user in enumerate(request.users):
        prefix = f"users[{i}]"
        prefs = dict(user.preferences)
        if len(prefs) > validation.MAX_LABELS:
            check.add(f"{prefix}.preferences", f"must have at most {validation.MAX_LABELS} entries")
        for category, score in prefs.items():
            check.identifier(f"{prefix}.preferences", category)
            check.problem(
                f"{prefix}.preferences[{category[:64]}]", validation.preference_score_problem(score)
            )
        users.append(
            domain.User(
                user_id=check.identifier(f"{prefix}.user_id", user.user_id),
                attributes=check.string_map(f"{prefix}.attributes", user.attributes),
                preferences=prefs,
            )
        )
    _no_repeats(check, "users", [u.user_id for u in users], "user_id")
    check.raise_if_any()
    return users


def user_id_from(request: cat_pb.DeleteUserRequest) -> str:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    check.raise_if_any()
    return user_id
