"""The handler layer: what each RPC does, in domain terms. Servicers only convert and delegate.

Sessions are opened here, at the edge, and passed to the query functions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Container, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from recgrpc import domain, tracing
from recgrpc.config import Settings
from recgrpc.db import Database, model_store, queries
from recgrpc.domain import utcnow
from recgrpc.errors import NotFound, Unavailable
from recgrpc.jobs.churn_scoring import NO_CHURN_MODEL
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.representations import needs_load, refresh_view
from recgrpc.model.trending import trending_scores
from recgrpc.server.discovery import Discovery
from recgrpc.server.errors import is_database_outage
from recgrpc.server.group_commit import (
    ChurnPredictionWriter,
    FeedbackWriter,
    InteractionWriter,
    ServedListWriter,
)
from recgrpc.server.search_history import SearchIndexKeeper

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

DATABASE_DOWN_FALLBACK = "database unavailable: served without the user's history"


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


def build_snapshot(
    db: Database, settings: Settings, now: datetime, previous: ServingSnapshot | None = None
) -> ServingSnapshot:
    """Catalogue, trending scores and the active model, read in one read session.

    The model artifact is fetched only when the active version differs from ``previous``'s
    (polling is one indexed query on kind/status). The catalogue is read again only when its
    stamp changed (or a new model must be aligned with it): rebuilding a large catalogue every
    refresh would hold the interpreter long enough to show in every request's tail latency.
    """
    old_view = None if previous is None else previous.model
    rejected = "" if previous is None else previous.rejected_model_version
    with db.reader() as session:
        stamp = queries.catalogue_stamp(session)
        # Trending is anchored at the newest event when that is in the past (history imported
        # from years ago still has a popularity ranking), at the wall clock otherwise.
        newest = queries.newest_event_time(session)
        anchor = now if newest is None else min(now, newest)
        since = anchor - timedelta(days=settings.trending_window_days)
        counts = queries.hourly_event_counts(session, since)
        version = model_store.active_model_version(session, model_store.RECOMMENDER)
        stored = None
        if needs_load(old_view, rejected, version):
            stored = model_store.load_model(session, version or "")
        rows = None
        if previous is None or previous.catalog_stamp != stamp or stored is not None:
            rows = queries.catalogue(session)
    if rows is None:
        assert previous is not None
        catalog = previous.catalog
    else:
        catalog = CatalogIndex.build(rows)
    view, rejected = refresh_view(
        old_view, rejected, version, None if stored is None else stored.artifact, rows,
        ann_min_items=settings.ann_min_items,
    )  # fmt: skip
    trending = trending_scores(
        counts, catalog, anchor, settings.trending_half_life_days, settings.interaction_weights
    )
    return ServingSnapshot.assemble(
        catalog,
        trending,
        now,
        model=view,
        config=RankingConfig.from_settings(settings),
        rejected_model_version=rejected,
        catalog_stamp=stamp,
    )


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
        # Concurrent writes share transactions (group commit). SQLite has one writer at a time
        # anyway; on PostgreSQL two writers per kind overlap their commits' disk flushes while
        # leaving most of the connection pool (db_pool_size, doubled by overflow) to reads.
        writers = db.writer_threads
        catalogued = self._catalogued_items
        # Except LogInteraction's: on PostgreSQL a batch is a single autocommit statement, so
        # a second writer only splits batches (bench/group_commit.py: less CPU per event with
        # one, for about the same rate).
        self.interactions = InteractionWriter(db, clock, catalogued=catalogued)
        # The same for the impressions (and stored top-N) of concurrently served lists.
        self.served_lists = ServedListWriter(db, writers=writers)
        self.feedback = FeedbackWriter(db, clock, writers=writers, catalogued=catalogued)
        self.predictions = ChurnPredictionWriter(db, writers=writers)
        # SearchItems' index, rebuilt by the refresher after the catalogue changes.
        self.search = SearchIndexKeeper(settings)
        observe = None if metrics is None else metrics.discovery_served
        self.discovery = Discovery(
            settings, db, engine, clock, observe, profile=self.search.with_searches
        )

    def _catalogued_items(self) -> Container[str]:
        return self.engine.snapshot.catalog.position

    def close(self) -> None:
        """Store the writes still queued; call after the server stopped taking calls."""
        self.interactions.close()
        self.feedback.close()
        self.served_lists.close()
        self.predictions.close()
        self.discovery.close()

    # -- RecommendationService ------------------------------------------------------------

    def get_recommendations(self, query: domain.RecommendationQuery) -> domain.ServedList:
        ranking, outage = self._rank(query)
        served = domain.ServedList(
            recset_id=str(uuid.uuid4()), generated_at=self.clock(), ranking=ranking
        )
        if not outage:
            try:
                self.served_lists.record(query.user_id, served, query.platform)
            except Unavailable:
                log.warning("impression %s not recorded: database unavailable", served.recset_id)
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
        try:
            with tracing.span("recgrpc.user_context"), self.db.connection() as conn:
                context = queries.load_user_context(conn, query.user_id)
                context = self.search.with_searches(conn, context)  # searches shape the profile
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            # Keep serving from memory; the list is not personalised by history this time.
            outage = True
            context = domain.UserContext(user_id=query.user_id, known=False)
        ranking = self.engine.recommend(context, query)
        if outage:
            ranking = domain.RecommendationList(
                items=ranking.items,
                algorithm=ranking.algorithm,
                model_version=ranking.model_version,
                fallback_reason=DATABASE_DOWN_FALLBACK,
            )
        return ranking, outage

    def log_interaction(self, event: domain.Interaction) -> tuple[str, bool]:
        """Store the event once; returns ``(event_id, duplicate)``."""
        duplicate = self.interactions.log(event)
        if self.metrics is not None:
            self.metrics.interaction_logged(event.type, duplicate)
        return event.event_id, duplicate

    def submit_feedback(self, feedback: domain.Feedback) -> bool:
        source = self.feedback.record(feedback)
        if self.metrics is not None:
            self.metrics.feedback_recorded(feedback, source)
        return True

    def predict_churn(self, user_id: str, as_of: datetime) -> domain.ChurnPrediction:
        # Scored in a read session; the record of the prediction joins the group commit, so
        # concurrent calls do not queue for SQLite's write lock one by one.
        with self.db.reader() as session:
            if self.churn is None:
                if not queries.user_has_history(session, user_id):
                    raise NotFound(f"user {user_id!r} has no recorded activity")
                raise Unavailable(NO_CHURN_MODEL)
            # The predictor answers NotFound itself, from the query that reads the features.
            prediction = self.churn.predict(session, user_id, as_of)
        self.predictions.record(prediction)
        if self.metrics is not None:
            self.metrics.churn_predicted(prediction)
        return prediction

    # -- CatalogService -------------------------------------------------------------------

    def upsert_items(self, items: list[domain.Item]) -> int:
        with self.db.writer() as session:
            queries.upsert_items(session, items, self.clock())
        self.catalog_changed.set()
        return len(items)

    def upsert_users(self, users: list[domain.User]) -> int:
        with self.db.writer() as session:
            queries.upsert_users(session, users, self.clock())
        return len(users)

    def delete_user(self, user_id: str) -> bool:
        with self.db.writer() as session:
            return queries.delete_user(session, user_id)
