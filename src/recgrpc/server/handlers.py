"""The handler layer: what each RPC does, in domain terms. Servicers only convert and delegate.

Sessions are opened here, at the edge, and passed to the query functions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from recgrpc import domain, recset, tracing
from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.domain import utcnow
from recgrpc.errors import InvalidArgument, NotFound, Unavailable
from recgrpc.jobs.churn_scoring import NO_CHURN_MODEL
from recgrpc.model.ranking import RankingEngine
from recgrpc.recset import Attribution, RecsetTokens
from recgrpc.server.context_cache import CacheCollector, Cached, open_context_cache
from recgrpc.server.db_guard import CircuitBreaker, DatabaseGuard
from recgrpc.server.discovery import Discovery
from recgrpc.server.erasure import erase_from_stored_models
from recgrpc.server.errors import DATABASE_DOWN, is_database_outage
from recgrpc.server.group_commit import (
    ChurnPredictionWriter,
    FeedbackWriter,
    InteractionWriter,
)
from recgrpc.server.impressions import ImpressionWriter
from recgrpc.server.search_index import SearchIndexKeeper

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class ChurnPredictor(Protocol):
    """Scores one user's churn risk from the database as of a time (``jobs.churn_scoring``).

    Raises NotFound for a user with no activity by ``as_of`` (before Unavailable when no
    model is loaded). Reads only: the handler records the prediction.
    """

    @property
    def version(self) -> str | None:
        """The model in use, None before one is loaded."""
        ...

    def refresh(self, db: Database) -> bool:
        """Load a newly trained model; True when one was loaded."""
        ...

    def predict(
        self, session: Session, user_id: str, as_of: datetime
    ) -> domain.ChurnPrediction: ...


class ServiceObserver(Protocol):
    """Told about domain events after they happen (``server.metrics.ServerMetrics`` is one)."""

    def recommendations_served(self, ranking: domain.RecommendationList) -> None: ...

    def impressions_dropped(self, count: int) -> None: ...

    def interaction_logged(
        self, interaction_type: domain.InteractionType, duplicate: bool
    ) -> None: ...

    def feedback_recorded(
        self, feedback: domain.Feedback, source: tuple[str, str] | None
    ) -> None: ...

    def churn_predicted(self, prediction: domain.ChurnPrediction) -> None: ...

    def discovery_served(self, source: str, fallback_reason: str, items: int) -> None: ...

    def models(self) -> Mapping[str, Any]:
        """The models reported so far, by kind; each has a ``version``."""
        ...

    def model_loaded(
        self,
        kind: str,
        version: str,
        created_at: datetime,
        training_metrics: Mapping[str, object] | None = None,
    ) -> None: ...


ERASURE_SECONDS = 30.0
"""DeleteUser's database budget: it decodes and rewrites every stored recommender artifact."""


class Handlers:
    """Domain logic behind every RPC. Thread-safe; one instance per server process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: RankingEngine,
        churn: ChurnPredictor | None = None,
        clock: Clock = utcnow,
        *,
        metrics: ServiceObserver | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.churn = churn
        self.metrics = metrics
        self.clock = clock
        # Set by catalogue writes so the refresher rebuilds the snapshot without waiting.
        self.catalog_changed = threading.Event()
        # Every database wait on the request path is bounded (server.db_guard).
        self.guard = DatabaseGuard(
            settings.db_workers,
            settings.db_deadline_seconds,
            CircuitBreaker(settings.db_breaker_failures, settings.db_breaker_reset_seconds),
        )
        guard = self.guard
        # Held while a snapshot is built from the current one and swapped in, so an erasure's
        # masking is never undone by a refresh that started before it.
        self.snapshot_lock = threading.Lock()
        # Concurrent writes share transactions (group commit). SQLite has one writer at a time
        # anyway; on PostgreSQL two writers per kind overlap their commits' disk flushes while
        # leaving most of the connection pool (db_pool_size, doubled by overflow) to reads.
        writers = db.writer_threads
        catalogued = self._catalogued_items
        # Users' contexts for GetRecommendations; every write of a user's context evicts it
        # after its commit (server.context_cache).
        self.contexts = open_context_cache(settings, db)
        registry = getattr(metrics, "registry", None)  # ServerMetrics' Prometheus registry
        if registry is not None:
            registry.register(CacheCollector(self.contexts))
        evict = self.contexts.evict
        # Except LogInteraction's: on PostgreSQL a batch is a single autocommit statement, so
        # a second writer only splits batches (bench/group_commit.py: less CPU per event with
        # one, for about the same rate).
        self.interactions = InteractionWriter(
            db, clock, catalogued=catalogued, guard=guard, committed=evict
        )
        # Served lists are written behind (never waited for): server.impressions.
        self.served_lists = ImpressionWriter(
            db,
            capacity=settings.impression_queue_size,
            flush_seconds=settings.impression_flush_seconds,
            dropped=None if metrics is None else metrics.impressions_dropped,
        )
        self.recsets = RecsetTokens(settings.recset_key)
        self.feedback = FeedbackWriter(
            db, clock, writers=writers, catalogued=catalogued, guard=guard, committed=evict
        )
        self.predictions = ChurnPredictionWriter(db, writers=writers, guard=guard)
        # SearchItems' index, rebuilt by the refresher after the catalogue changes.
        self.search = SearchIndexKeeper(settings)
        observe = None if metrics is None else metrics.discovery_served
        self.discovery = Discovery(
            settings, db, engine, clock, observe, context_of=self._user_context, guard=guard
        )

    def _catalogued_items(self) -> Container[str]:
        return self.engine.snapshot.catalog.position

    def close(self) -> None:
        """Store the writes still queued; call after the server stopped taking calls."""
        self.search.close()
        self.interactions.close()
        self.feedback.close()
        self.served_lists.close()
        self.predictions.close()
        self.guard.close()
        self.discovery.close()
        self.contexts.close()

    # -- RecommendationService ------------------------------------------------------------

    def get_recommendations(self, query: domain.RecommendationQuery) -> domain.ServedList:
        ranking, outage = self._rank(query)
        now = self.clock()
        recset_id = self.recsets.issue(ranking.algorithm, ranking.model_version, now)
        served = domain.ServedList(recset_id=recset_id, generated_at=now, ranking=ranking)
        if outage:
            if self.metrics is not None:
                self.metrics.impressions_dropped(1)
        else:
            self.served_lists.record(query.user_id, served, query.platform)
        if self.metrics is not None:
            self.metrics.recommendations_served(served.ranking)
        return served

    def preview_recommendations(
        self, query: domain.RecommendationQuery
    ) -> domain.RecommendationList:
        """The list GetRecommendations would serve now, recorded nowhere (the dashboard's)."""
        return self._rank(query)[0]

    def _rank(self, query: domain.RecommendationQuery) -> tuple[domain.RecommendationList, bool]:
        """The ranked list and whether the database was down (the list is then not stored)."""
        outage = False
        memo = None
        try:
            with tracing.span("recgrpc.user_context"):
                cached = self._cached_context(query.user_id)
            context, memo = cached.context, cached.memo
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            # Keep serving from memory; the list is not personalised by history this time.
            outage = True
            context = domain.UserContext(user_id=query.user_id, known=False)
        ranking = self.engine.recommend(context, query, memo)
        if outage:
            ranking = domain.RecommendationList(
                items=ranking.items,
                algorithm=ranking.algorithm,
                model_version=ranking.model_version,
                fallback_reason=DATABASE_DOWN,
            )
        return ranking, outage

    def _user_context(self, user_id: str) -> domain.UserContext:
        return self._cached_context(user_id).context

    def _cached_context(self, user_id: str) -> Cached:
        # Only a miss reads, within the request's database budget: a hit is served at once,
        # also while the database is away (it is at most the cache's TTL old). The memo with
        # it is what ranking remembered of this context (model.user_memo).
        return self.contexts.lookup(
            user_id, lambda: self.guard.run(lambda: self._read_context(user_id))
        )

    def _read_context(self, user_id: str) -> domain.UserContext:
        with self.db.connection() as conn:
            context = queries.load_user_context(conn, user_id)
            return self.search.with_searches(conn, context)  # searches shape the profile

    def attribution(self, recset_id: str) -> Attribution | None:
        """What a GetRecommendations list was served by, read from its token; None for other
        ids (discovery and search lists, attributed from their stored impressions).
        InvalidArgument for a token this deployment did not issue (forged or altered)."""
        if not recset.is_token(recset_id):
            return None
        found = self.recsets.read(recset_id)
        if found is None:
            raise InvalidArgument.single(
                "recset_id", "is not a recset_id returned by GetRecommendations"
            )
        return found

    def log_interaction(self, event: domain.Interaction) -> tuple[str, bool]:
        """Store the event once; returns ``(event_id, duplicate)``."""
        self.attribution(event.recset_id)
        duplicate = self.interactions.log(event)
        if self.metrics is not None:
            self.metrics.interaction_logged(event.type, duplicate)
        return event.event_id, duplicate

    def submit_feedback(self, feedback: domain.Feedback) -> bool:
        """Store the feedback once per feedback_id; True when it is stored (now or before)."""
        # Attributed from the token itself: the impression may not be stored yet (or dropped).
        attribution = self.attribution(feedback.recset_id)
        stored, duplicate = self.feedback.record(feedback)
        if self.metrics is not None and not duplicate:
            source = stored if attribution is None else attribution.source
            self.metrics.feedback_recorded(feedback, source)
        return True

    def predict_churn(self, user_id: str, as_of: datetime) -> domain.ChurnPrediction:
        # Scored in a read session; the record of the prediction joins the group commit, so
        # concurrent calls do not queue for SQLite's write lock one by one.
        prediction = self.guard.run(lambda: self._score_churn(user_id, as_of))
        self.predictions.record(prediction)
        if self.metrics is not None:
            self.metrics.churn_predicted(prediction)
        return prediction

    def _score_churn(self, user_id: str, as_of: datetime) -> domain.ChurnPrediction:
        with self.db.reader() as session:
            if self.churn is None:
                if not queries.user_has_history(session, user_id):
                    raise NotFound(f"user {user_id!r} has no recorded activity")
                raise Unavailable(NO_CHURN_MODEL)
            # The predictor answers NotFound itself, from the query that reads the features.
            return self.churn.predict(session, user_id, as_of)

    # -- CatalogService -------------------------------------------------------------------

    # A catalogue write that outlives its deadline answers UNAVAILABLE and may still commit:
    # each is idempotent, so the caller's retry is safe either way.

    def upsert_items(self, items: list[domain.Item]) -> int:
        def write() -> None:
            with self.db.writer() as session:
                queries.upsert_items(session, items, self.clock())

        self.guard.run(write)
        self.catalog_changed.set()
        return len(items)

    def upsert_users(self, users: list[domain.User]) -> int:
        def write() -> None:
            with self.db.writer() as session:
                queries.upsert_users(session, users, self.clock())
                queries.notify_changed(session, (u.user_id for u in users))
            self.contexts.evict(u.user_id for u in users)  # committed, even if past the deadline

        self.guard.run(write)
        return len(users)

    def delete_user(self, user_id: str) -> bool:
        """Erase the user's rows and their trace in every stored model; then mask them in the
        serving model, so their id is a stranger from the next request on."""

        # Impressions written behind must not land after the erasure.
        self.served_lists.flush()

        def write() -> tuple[bool, int]:
            with self.db.writer() as session:
                removed = queries.delete_user(session, user_id)
                erased = removed, erase_from_stored_models(session, user_id)
                queries.notify_erased(session, user_id)
            self.contexts.evict([user_id])
            return erased

        # Rewriting the stored artifacts takes longer than a row write: a budget of its own.
        removed, rewritten = self.guard.run(write, timeout=max(self.guard.timeout, ERASURE_SECONDS))
        with self.snapshot_lock:
            snapshot = self.engine.snapshot
            if snapshot.model is not None:
                self.engine.swap(replace(snapshot, model=snapshot.model.without_user(user_id)))
        return removed or rewritten > 0


__all__ = ["ERASURE_SECONDS", "ChurnPredictor", "Handlers", "ServiceObserver"]
