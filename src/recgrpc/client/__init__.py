"""The typed Python client for recgrpc: blocking and asyncio, one client for both services.

Needs only grpcio, protobuf and googleapis-common-protos (``pip install recgrpc``)::

    from recgrpc.client import RecommendationClient

    with RecommendationClient("localhost:50051") as client:
        recs = client.get_recommendations("user-1", limit=5)
        client.log_interaction("user-1", recs.items[0].item_id, "click", recset_id=recs.recset_id)

Failed calls raise a :class:`RecGrpcError` subclass; its docstring shows the whole tree.
"""

from recgrpc.client._async import AsyncRecommendationClient
from recgrpc.client._channel import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT,
    Metadata,
    channel_options,
    service_config,
)
from recgrpc.client._discovery_types import (
    FrequentlyTogether,
    HomeFeed,
    Shelf,
    ShelfKind,
    SimilarItems,
    SimilarityMode,
)
from recgrpc.client._errors import (
    CallCancelledError,
    ClientArgumentError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RecGrpcError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    from_rpc_error,
)
from recgrpc.client._history_types import (
    ChurnPredictionPage,
    InteractionPage,
    InteractionRecord,
    SearchHit,
    SearchResults,
    StoredChurnPrediction,
    UserStats,
)
from recgrpc.client._sync import RecommendationClient
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

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "Algorithm",
    "AsyncRecommendationClient",
    "CallCancelledError",
    "ChurnFactor",
    "ChurnPrediction",
    "ChurnPredictionPage",
    "ClientArgumentError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "FrequentlyTogether",
    "HomeFeed",
    "InteractionLogged",
    "InteractionPage",
    "InteractionRecord",
    "InteractionType",
    "InternalError",
    "InvalidArgumentError",
    "Item",
    "Metadata",
    "NotFoundError",
    "PermissionDeniedError",
    "RecGrpcError",
    "RecommendationClient",
    "Recommendations",
    "RecommendedItem",
    "ResourceExhaustedError",
    "RiskLevel",
    "SearchHit",
    "SearchResults",
    "Shelf",
    "ShelfKind",
    "SimilarItems",
    "SimilarityMode",
    "StoredChurnPrediction",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "User",
    "UserStats",
    "channel_options",
    "from_rpc_error",
    "service_config",
]
