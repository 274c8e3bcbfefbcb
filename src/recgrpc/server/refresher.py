"""The snapshot refresher thread: rebuilds the serving snapshot, loads new models, flips health."""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health_pb2

from recgrpc.db import queries
from recgrpc.model.ranking import ServingSnapshot
from recgrpc.model.representations import ModelView
from recgrpc.server.errors import is_database_outage
from recgrpc.server.handlers import Handlers
from recgrpc.server.health import HealthService
from recgrpc.server.snapshot import build_snapshot
from recgrpc.v1 import catalog_pb2, recommendation_pb2

# The README documents this logger for model loads and outages: one name for the whole server.
log = logging.getLogger("recgrpc.server.app")

SERVICE_NAMES = (
    recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
)


class Refresher(threading.Thread):
    """Rebuilds the serving snapshot periodically (and at once after catalogue writes).

    The first successful build flips health to SERVING; failures keep the last snapshot.
    """

    def __init__(self, handlers: Handlers, health_servicer: HealthService, interval: float) -> None:
        super().__init__(name="recgrpc-refresher", daemon=True)
        self.handlers = handlers
        self.health = health_servicer
        self.interval = interval
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def refresh_once(self) -> bool:
        h = self.handlers
        refresh_churn_model(h)
        try:
            with h.snapshot_lock:
                previous = h.engine.snapshot
                h.engine.swap(build_snapshot(h.db, h.settings, h.clock(), previous))
            h.search.refresh(h.db, h.engine.snapshot)
        except Exception as exc:
            if not is_database_outage(exc):
                log.exception("serving snapshot refresh failed; keeping the previous one")
                return False
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.warning("database unavailable (%s); retrying in %.0fs", reason, self.interval)
            return False
        log_model_change(previous.model, h.engine.snapshot)
        try:
            h.discovery.refresh(h.engine.snapshot)
        except Exception as exc:  # similar items fall back to trending meanwhile
            if not is_database_outage(exc):
                log.exception("neighbour table refresh failed; retrying next refresh")
        report_serving_models(h)
        if not self.ready.is_set():
            self.ready.set()
            set_serving(self.health, True)
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            self.refresh_once()
            self.handlers.catalog_changed.wait(self.interval)
            self.handlers.catalog_changed.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.handlers.catalog_changed.set()


def refresh_churn_model(handlers: Handlers) -> None:
    """Pick up a newly trained churn model; on failure the one in use stays."""
    if handlers.churn is None:
        return
    try:
        if handlers.churn.refresh(handlers.db):
            log.info("churn model %s loaded", handlers.churn.version)
    except Exception as exc:
        if not is_database_outage(exc):  # an outage: the snapshot refresh says so, once
            log.exception("churn model refresh failed; keeping the previous one")


def log_model_change(previous: ModelView | None, snapshot: ServingSnapshot) -> None:
    """One line when the serving recommender model is loaded, hot-swapped or gone."""
    model = snapshot.model
    if model is None:
        if previous is not None:
            log.info("recommender model %s is no longer active; serving trending", previous.version)
        return
    if previous is not None and previous.version == model.version:
        return
    log.info(
        "recommender model %s %s: %d users and %d items trained, %d catalogue items served",
        model.version,
        "loaded" if previous is None else f"hot-swapped in for {previous.version}",
        len(model.user_index),
        int(model.trained.sum()),
        len(snapshot.catalog),
    )


def report_serving_models(handlers: Handlers) -> None:
    """Export the serving models' versions, ages and training metrics when a version changes."""
    metrics = handlers.metrics
    if metrics is None:
        return
    serving: dict[str, str] = {}
    view = handlers.engine.snapshot.model
    if view is not None:
        serving["recommender"] = view.version
    churn_version = handlers.churn.version if handlers.churn is not None else None
    if churn_version:
        serving["churn"] = churn_version
    known = metrics.models()
    changed = {k: v for k, v in serving.items() if k not in known or known[k].version != v}
    if not changed:
        return
    try:
        with handlers.db.reader() as session:
            summaries = {k: queries.model_summary(session, v) for k, v in changed.items()}
    except Exception:
        log.warning("model metadata for metrics not read; retrying next refresh", exc_info=True)
        return
    for kind, summary in summaries.items():
        if summary is not None:
            metrics.model_loaded(kind, changed[kind], *summary)


def set_serving(health_servicer: HealthService, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, status)
