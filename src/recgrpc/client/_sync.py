"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from recgrpc.client import _convert
from recgrpc.client._channel import (
    DEFAULT_TIMEOUT,
    HEALTH_CHECK_METHOD,
    HEALTH_SERVING,
    Metadata,
    decode_health_status,
    encode_health_request,
    plan_client,
)
from recgrpc.client._discovery_calls import DiscoveryCalls
from recgrpc.client._errors import (
    DeadlineExceededError,
    UnavailableError,
    translated_errors,
)
from recgrpc.client._history import SyncHistoryCalls
from recgrpc.client._types import (
    Algorithm,
    ChurnPrediction,
    InteractionLogged,
    InteractionType,
    Item,
    Recommendations,
    User,
)
from recgrpc.v1 import catalog_pb2_grpc, recommendation_pb2_grpc

Request = TypeVar("Request")
Response = TypeVar("Response")


def _identity(data: bytes) -> bytes:
    return data


class RecommendationClient(DiscoveryCalls, SyncHistoryCalls):
    """A blocking client for both recgrpc services (recommendations and catalogue).

    Either give a ``target`` (``"localhost:50051"``) and the client opens and owns a channel with
    retries and keepalive set up, or give an existing ``channel``, which the client uses and
    leaves open. Use it as a context manager (or call :meth:`close`). Thread-safe: one client
    serves a whole process.

    Args:
        target: ``host:port`` of the server, when the client should open its channel.
        channel: An existing channel to use instead; it is not closed by the client.
        timeout: Default deadline in seconds for each call; ``None`` means no deadline.
        tls: Use TLS with the system's root certificates.
        root_certificates: PEM root certificates to trust; implies TLS.
        token: Bearer token sent as ``authorization: Bearer <token>``.
        metadata: Headers sent with every call (e.g. a service name for tracing).
        max_attempts: Tries per call when the server is UNAVAILABLE (1..5, default 4).
        options: Extra channel options, e.g. ``("grpc.ssl_target_name_override", "host")``.

    Every method raises a :class:`~recgrpc.client.RecGrpcError` subclass when the call fails.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        metadata: Metadata | None = None,
        max_attempts: int | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        plan, self._defaults = plan_client(
            target,
            channel_given=channel is not None,
            timeout=timeout,
            tls=tls,
            root_certificates=root_certificates,
            token=token,
            metadata=metadata,
            max_attempts=max_attempts,
            options=options,
        )
        if plan is None:
            assert channel is not None
            self._channel = channel
            self._owns_channel = False
        elif plan.credentials is not None:
            self._channel = grpc.secure_channel(plan.target, plan.credentials, plan.options)
            self._owns_channel = True
        else:
            self._channel = grpc.insecure_channel(plan.target, plan.options)
            self._owns_channel = True
        self._recommendations = recommendation_pb2_grpc.RecommendationServiceStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._health: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            HEALTH_CHECK_METHOD, request_serializer=_identity, response_deserializer=_identity
        )

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (for extra stubs sharing the connection)."""
        return self._channel

    def close(self) -> None:
        """Close the channel if the client opened it; a caller's channel stays open."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        timeout: float | None,
        call_metadata: Metadata | None,
        wait_for_ready: bool | None = None,
    ) -> Response:
        with translated_errors():
            return method(
                request,
                timeout=self._defaults.timeout_for(timeout),
                metadata=self._defaults.metadata_for(call_metadata),
                wait_for_ready=wait_for_ready,
            )

    # -- RecommendationService ---------------------------------------------------------------

    def get_recommendations(
        self,
        user_id: str,
        *,
        limit: int = 0,
        algorithm: Algorithm | str = Algorithm.AUTO,
        exclude_item_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> Recommendations:
        """A ranked list for ``user_id``, recorded by the server as an impression.

        Args:
            user_id: Who the list is for; unknown users get trending items.
            limit: Items wanted; 0 means the server's default (10), more than 100 is capped.
            algorithm: Preferred source; the result's ``algorithm`` says which one was used.
            exclude_item_ids: Items never to return (e.g. already on screen).
            categories: When given, only items in at least one of these categories.
            platform: Where the list is shown (``"web"``, ``"ios"``, ...), for analytics.
            timeout: Deadline in seconds for this call (default: the client's).
            call_metadata: Extra headers for this call, e.g. ``{"x-request-id": "..."}``.
        """
        request = _convert.recommendations_request(
            user_id,
            limit=limit,
            algorithm=algorithm,
            exclude_item_ids=exclude_item_ids,
            categories=categories,
            platform=platform,
        )
        response = self._call(
            self._recommendations.GetRecommendations, request, timeout, call_metadata
        )
        return _convert.recommendations(response)

    def log_interaction(
        self,
        user_id: str,
        item_id: str,
        type: InteractionType | str,
        *,
        value: float = 0.0,
        event_id: str | None = None,
        content_type: str = "",
        platform: str = "",
        metadata: Mapping[str, str] | None = None,
        occurred_at: datetime | None = None,
        recset_id: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> InteractionLogged:
        """Store what a user did with an item, exactly once per ``event_id``.

        Args:
            user_id: Who acted.
            item_id: The catalogue item acted on; an unknown item raises ``NotFoundError``.
            type: ``InteractionType.CLICK`` or a name such as ``"click"``.
            value: Rating (1..5), watch seconds, quantity, ... depending on ``type``.
            event_id: Idempotency key; when omitted the client makes a UUID, so the automatic
                retries of this call can never store the event twice.
            content_type: Kind of content (``"video"``, ``"article"``, ...).
            platform: Where it happened (``"web"``, ``"ios"``, ...).
            metadata: Free-form string pairs stored with the event (at most 64, 4 KiB).
            occurred_at: When it happened (timezone-aware); default: when the server got it.
            recset_id: The served list the item came from, for attribution.
            timeout: Deadline in seconds for this call (default: the client's).
            call_metadata: Extra headers for this call.

        Returns ``duplicate=True`` when the event had already been stored (nothing was written).
        """
        request = _convert.interaction_request(
            user_id,
            item_id,
            type,
            value=value,
            event_id=event_id,
            content_type=content_type,
            platform=platform,
            metadata=metadata,
            occurred_at=occurred_at,
            recset_id=recset_id,
        )
        response = self._call(self._recommendations.LogInteraction, request, timeout, call_metadata)
        return _convert.interaction_logged(response)

    def submit_feedback(
        self,
        user_id: str,
        item_id: str,
        *,
        recset_id: str = "",
        clicked: bool = False,
        dismissed: bool = False,
        rating: float | None = None,
        feedback_id: str | None = None,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> bool:
        """Record what a user did with a recommended item; a dismissed item is never shown again.

        Give at least one of ``clicked``, ``dismissed`` or ``rating`` (not clicked and dismissed
        together). ``feedback_id`` is the idempotency key: feedback whose id is stored is not
        stored again. When omitted the client makes a UUID, so the automatic retries of this
        call never store it twice; pass your own to make your retries of it safe too. Returns
        whether the server has it recorded.
        """
        request = _convert.feedback_request(
            user_id,
            item_id,
            recset_id=recset_id,
            clicked=clicked,
            dismissed=dismissed,
            rating=rating,
            feedback_id=feedback_id,
        )
        response = self._call(self._recommendations.SubmitFeedback, request, timeout, call_metadata)
        return response.recorded

    def predict_churn(
        self,
        user_id: str,
        *,
        as_of: datetime | None = None,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> ChurnPrediction:
        """How likely ``user_id`` is to go inactive, with the factors behind the score.

        ``as_of`` (timezone-aware, not in the future) defaults to now. Raises ``NotFoundError``
        for a user with no history and ``UnavailableError`` while no churn model is trained.
        """
        request = _convert.churn_request(user_id, as_of=as_of)
        response = self._call(self._recommendations.PredictChurn, request, timeout, call_metadata)
        return _convert.churn_prediction(user_id, response)

    # -- CatalogService ----------------------------------------------------------------------

    def upsert_items(
        self,
        items: Sequence[Item],
        *,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> int:
        """Insert or replace items by ``item_id`` (at most 1000 per call); returns the count."""
        request = _convert.items_request(items)
        return self._call(self._catalog.UpsertItems, request, timeout, call_metadata).upserted

    def upsert_users(
        self,
        users: Sequence[User],
        *,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> int:
        """Insert or replace users and their preferences (at most 1000); returns the count."""
        request = _convert.users_request(users)
        return self._call(self._catalog.UpsertUsers, request, timeout, call_metadata).upserted

    def delete_user(
        self,
        user_id: str,
        *,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> bool:
        """Erase everything stored about a user; ``False`` when nothing was stored."""
        request = _convert.delete_user_request(user_id)
        return self._call(self._catalog.DeleteUser, request, timeout, call_metadata).deleted

    # -- health ------------------------------------------------------------------------------

    def check_health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> bool:
        """Whether the server (or one named service) reports SERVING right now."""
        response = self._call(self._health, encode_health_request(service), timeout, call_metadata)
        return decode_health_status(response) == HEALTH_SERVING

    def wait_until_serving(self, timeout: float = 30.0, *, service: str = "") -> bool:
        """Block until the server reports SERVING; ``False`` if it did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                response = self._call(
                    self._health,
                    encode_health_request(service),
                    remaining,
                    None,
                    wait_for_ready=True,
                )
                if decode_health_status(response) == HEALTH_SERVING:
                    return True
            except (UnavailableError, DeadlineExceededError):
                pass
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return False
