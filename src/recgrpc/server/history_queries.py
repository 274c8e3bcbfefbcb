"""GetUserStats, ListInteractions and ListChurnPredictions: a user's numbers and history.

Event and churn-prediction history come in pages whose tokens are signed (server.page_tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from recgrpc.config import Settings
from recgrpc.db import Database, user_history
from recgrpc.errors import NotFound
from recgrpc.server import page_tokens
from recgrpc.server.db_guard import DatabaseGuard, bounded

T = TypeVar("T")
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """ListInteractions' request: a user's events, optionally since a time, of some types."""

    user_id: str
    page_size: int
    page_token: str = ""
    since: datetime | None = None
    last_days: int = 0
    types: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: Sequence[T]
    next_page_token: str


class UserHistory:
    """The three history RPCs' logic; one per server, sharing the handlers' database."""

    def __init__(
        self, settings: Settings, db: Database, clock: Clock, *, guard: DatabaseGuard | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self._guard = guard
        self._key = page_tokens.signing_key(settings.page_token_secret, settings.database_url)

    # -- GetUserStats ----------------------------------------------------------------------------

    def user_stats(self, user_id: str) -> user_history.UserNumbers:
        def read() -> user_history.UserNumbers | None:
            with self.db.reader() as session:
                return user_history.user_numbers(session, user_id)

        numbers = bounded(self._guard, read)
        if numbers is None:
            raise NotFound(f"user {user_id!r} is not known to the service")
        return numbers

    # -- ListInteractions / ListChurnPredictions -------------------------------------------------

    def interactions(self, query: HistoryQuery) -> Page[user_history.EventRow]:
        scope = page_tokens.request_scope(
            "ListInteractions", query.user_id, query.page_size, query.since, query.last_days,
            sorted(query.types),
        )  # fmt: skip
        token = query.page_token
        cursor = page_tokens.decode(self._key, scope, token) if token else None
        since = query.since
        if query.last_days:
            window = self.clock() - timedelta(days=query.last_days)
            since = window if since is None else max(since, window)

        def read() -> list[user_history.EventRow]:
            with self.db.reader() as session:
                return user_history.user_events(
                    session, query.user_id, limit=query.page_size + 1, since=since,
                    types=query.types, cursor=cursor,
                )  # fmt: skip

        rows = bounded(self._guard, read)
        return self._page(rows, query.page_size, scope, lambda r: (r.occurred_at, r.row_id))

    def churn_predictions(
        self, user_id: str, page_size: int, page_token: str
    ) -> Page[user_history.PredictionRow]:
        scope = page_tokens.request_scope("ListChurnPredictions", user_id, page_size)
        cursor = page_tokens.decode(self._key, scope, page_token) if page_token else None

        def read() -> list[user_history.PredictionRow]:
            with self.db.reader() as session:
                return user_history.churn_history(
                    session, user_id, limit=page_size + 1, cursor=cursor
                )

        rows = bounded(self._guard, read)
        return self._page(rows, page_size, scope, lambda r: (r.predicted_at, r.row_id))

    def _page(
        self,
        rows: list[T],
        page_size: int,
        scope: str,
        key: Callable[[T], tuple[datetime, int]],
    ) -> Page[T]:
        if len(rows) <= page_size:
            return Page(rows, "")
        page = rows[:page_size]
        at, row_id = key(page[-1])
        return Page(page, page_tokens.encode(self._key, scope, at, row_id))
