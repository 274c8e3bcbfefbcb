"""Prometheus metrics, defined once. Each server owns a ``ServerMetrics`` on its own registry.

The RPC metrics follow go-grpc-prometheus / grpc-ecosystem naming (``grpc_server_handled_total``
and friends with ``grpc_type``, ``grpc_service``, ``grpc_method``, ``grpc_code``) so existing gRPC
dashboards and alerts work unchanged. Domain metrics carry the ``recgrpc_`` prefix.

Labels are always drawn from small, fixed vocabularies: never a user id, item id or free text.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recgrpc import domain

# A few-millisecond service: resolution where it matters (0.5-50 ms), a tail up to 2.5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

OTHER = "other"
# Words only: no digits or spaces, which is where ids and sentences would creep in.
_SLUG = re.compile(r"^[a-z][a-z_]{0,31}$")
_METRIC_KEY = re.compile(r"[^a-zA-Z0-9_]+")

# Fallback reasons are sentences written for people; metrics get a fixed code for each.
_FALLBACK_KEYWORDS = (
    ("database", "database_unavailable"),
    ("no trained model", "no_model"),
    ("no model", "no_model"),
    ("not in the model", "cold_start"),
    ("unknown user", "cold_start"),
    ("new user", "cold_start"),
    ("no history", "cold_start"),
    ("cold", "cold_start"),
    ("nothing to recommend", "empty"),
    ("requested", "requested"),
)


def fallback_code(reason: str) -> str:
    """The bounded label for a free-text fallback reason (``""`` when there was no fallback)."""
    lowered = reason.lower()
    for keyword, code in _FALLBACK_KEYWORDS:
        if keyword in lowered:
            return code
    return OTHER


class BoundedLabel:
    """Keeps a label's value set small: the first ``limit`` slug-like values, then ``other``.

    Used where the vocabulary belongs to another module (e.g. an item's ``reason``), so a new
    value shows up on its own, while anything id-like or unbounded cannot explode the series.
    """

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value.strip().lower().replace("-", "_")
        if value in self._seen:
            return value
        if not _SLUG.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class Children:
    """A labelled metric's children, looked up once per label values: ``labels()`` validates
    and locks on every call, several microseconds each, a few times per RPC. Children are never
    removed, so a cached one stays the metric's."""

    def __init__(self, metric: Any) -> None:
        self._labels = metric.labels
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:  # a racing first lookup finds the same child
            child = self._children[values] = self._labels(*values)
        return child


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ``("pkg.Service", "Method")``."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service or "unknown", method or "unknown"


class PoolStats(Protocol):
    """The part of a SQLAlchemy pool we read (QueuePool has all of these)."""

    def size(self) -> int: ...

    def checkedout(self) -> int: ...


class _ModelState:
    __slots__ = ("created_at", "metrics", "version")

    def __init__(self, version: str, created_at: datetime, metrics: Mapping[str, float]) -> None:
        self.version = version
        self.created_at = created_at
        self.metrics = metrics


class _ScrapeTimeCollector(Collector):
    """Values computed when Prometheus scrapes: model age and database pool usage."""

    def __init__(self, owner: ServerMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterable[Metric]:
        owner = self._owner
        age = GaugeMetricFamily(
            "recgrpc_model_age_seconds",
            "Seconds since the serving model of each kind was trained.",
            labels=["kind"],
        )
        training = GaugeMetricFamily(
            "recgrpc_model_training_metric",
            "Offline evaluation metrics recorded when the serving model was trained.",
            labels=["kind", "metric"],
        )
        now = owner.clock()
        for kind, state in owner.models().items():
            age.add_metric([kind], max(0.0, now - state.created_at.timestamp()))
            for name, value in sorted(state.metrics.items()):
                training.add_metric([kind, name], value)
        yield age
        yield training

        pool = owner.pool
        if pool is not None:
            try:
                size, checked_out = float(pool.size()), float(pool.checkedout())
            except (AttributeError, TypeError):  # a pool class without these counters
                return
            yield GaugeMetricFamily(
                "recgrpc_db_pool_size", "Connections the database pool keeps open.", value=size
            )
            yield GaugeMetricFamily(
                "recgrpc_db_pool_checked_out",
                "Database connections currently in use by requests (may exceed size by overflow).",
                value=checked_out,
            )

    def describe(self) -> Iterable[Metric]:
        # Registering a collector calls describe(); an empty answer avoids an early collect().
        return []


class ServerMetrics:
    """Every metric the server exports, on one registry. Thread-safe.

    Also the observer the handler layer reports domain events to (``recommendations_served``,
    ``feedback_recorded``, ...), so servicers stay thin.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.pool: PoolStats | None = None
        r = self.registry
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            RPC_LABELS,
            registry=r,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code.",
            (*RPC_LABELS, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from receiving an RPC to its final status, by status code.",
            (*RPC_LABELS, "grpc_code"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Info(
            "recgrpc_model", "Version of the model serving each kind.", ["kind"], registry=r
        )
        self.lists_served = Counter(
            "recgrpc_recommendation_lists_total",
            "Recommendation lists served, by the algorithm actually used and model version.",
            ["algorithm", "model_version"],
            registry=r,
        )
        # With lists_served, gives online click-through rate per algorithm and model version.
        self.list_feedback = Counter(
            "recgrpc_list_feedback_total",
            "Feedback on served lists, by kind and the list's algorithm and model version.",
            ["kind", "algorithm", "model_version"],
            registry=r,
        )
        self.impressions_dropped_total = Counter(
            "recgrpc_impressions_dropped",
            "Served lists whose impression was not stored (queue full, database down).",
            registry=r,
        )
        self.fallbacks = Counter(
            "recgrpc_recommendation_fallbacks_total",
            "Lists served from a non-personalised source, by reason.",
            ["reason"],
            registry=r,
        )
        self.items_served = Counter(
            "recgrpc_recommended_items_total",
            "Items served in recommendation lists, by the source that placed each item.",
            ["reason"],
            registry=r,
        )
        self.interactions = Counter(
            "recgrpc_interactions_total",
            "Interaction events received, by type (duplicates included).",
            ["type", "duplicate"],
            registry=r,
        )
        self.feedback = Counter(
            "recgrpc_feedback_total",
            "Feedback on recommendations, by kind (one report may count as several kinds).",
            ["kind"],
            registry=r,
        )
        self.churn_predictions = Counter(
            "recgrpc_churn_predictions_total",
            "Churn predictions served, by risk level.",
            ["risk_level"],
            registry=r,
        )
        self.discovery_lists = Counter(
            "recgrpc_discovery_lists_total",
            "Discovery lists served (similar items, frequently together, home-feed shelves), "
            "by source, and whether a fallback was used.",
            ["source", "fallback"],
            registry=r,
        )
        self.discovery_items = Counter(
            "recgrpc_discovery_items_total",
            "Items served in discovery lists, by source.",
            ["source"],
            registry=r,
        )
        self._discovery_source = BoundedLabel(limit=32)
        self._item_reason = BoundedLabel()
        self._started = Children(self.started)
        self._handled = Children(self.handled)
        self._handling = Children(self.handling)
        self._lists_served = Children(self.lists_served)
        self._items_served = Children(self.items_served)
        self._models: dict[str, _ModelState] = {}
        self._models_lock = threading.Lock()
        r.register(_ScrapeTimeCollector(self))

    # -- RPCs (used by the metrics interceptor) ---------------------------------------------

    def rpc_started(self, grpc_type: str, service: str, method: str) -> None:
        self._started(grpc_type, service, method).inc()

    def rpc_handled(
        self, grpc_type: str, service: str, method: str, code: str, seconds: float
    ) -> None:
        self._handled(grpc_type, service, method, code).inc()
        self._handling(grpc_type, service, method, code).observe(seconds)

    # -- domain events (used by the handler layer) ------------------------------------------

    def recommendations_served(self, ranking: domain.RecommendationList) -> None:
        self._lists_served(str(ranking.algorithm), ranking.model_version or "none").inc()
        if ranking.fallback_reason:
            self.fallbacks.labels(fallback_code(ranking.fallback_reason)).inc()
        counts: dict[str, int] = {}
        for item in ranking.items:
            label = self._item_reason(item.reason)
            counts[label] = counts.get(label, 0) + 1
        for label, count in counts.items():
            self._items_served(label).inc(count)

    def impressions_dropped(self, count: int) -> None:
        self.impressions_dropped_total.inc(count)

    def discovery_served(self, source: str, fallback_reason: str, items: int) -> None:
        label = self._discovery_source(source)
        self.discovery_lists.labels(label, "true" if fallback_reason else "false").inc()
        self.discovery_items.labels(label).inc(items)

    def interaction_logged(self, interaction_type: domain.InteractionType, duplicate: bool) -> None:
        self.interactions.labels(str(interaction_type), "true" if duplicate else "false").inc()

    def feedback_recorded(
        self, feedback: domain.Feedback, source: tuple[str, str] | None = None
    ) -> None:
        kinds = [
            kind
            for kind, present in (
                ("clicked", feedback.clicked),
                ("dismissed", feedback.dismissed),
                ("rated", feedback.rating is not None),
            )
            if present
        ]
        for kind in kinds or ["ignored"]:
            self.feedback.labels(kind).inc()
            if source is not None:
                algorithm, version = source
                self.list_feedback.labels(kind, algorithm, version or "none").inc()

    def churn_predicted(self, prediction: domain.ChurnPrediction) -> None:
        self.churn_predictions.labels(str(prediction.level)).inc()

    # -- model and database state -----------------------------------------------------------

    def model_loaded(
        self,
        kind: str,
        version: str,
        created_at: datetime,
        training_metrics: Mapping[str, object] | None = None,
    ) -> None:
        """Record the model now serving ``kind`` ("recommender" or "churn").

        Only numeric training metrics are exported, under names reduced to ``[a-zA-Z0-9_]``;
        when the record nests the model's own metrics under ``"model"`` (beside baselines),
        those are the ones exported.
        """
        source = training_metrics or {}
        nested = source.get("model")
        if isinstance(nested, Mapping):
            source = nested
        numeric = {
            _METRIC_KEY.sub("_", str(name)).strip("_"): float(value)
            for name, value in source.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        with self._models_lock:
            self._models[kind] = _ModelState(version, created_at, numeric)
        self.model_info.labels(kind).info({"version": version})

    def models(self) -> dict[str, _ModelState]:
        with self._models_lock:
            return dict(self._models)

    def watch_pool(self, pool: PoolStats) -> None:
        """Export ``pool``'s size and checked-out connections at every scrape."""
        self.pool = pool


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes (``/metrics``), serving one registry."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = [
    "LATENCY_BUCKETS",
    "BoundedLabel",
    "MetricsEndpoint",
    "ServerMetrics",
    "fallback_code",
    "split_method",
]
