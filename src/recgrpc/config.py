"""Configuration: one frozen, typed object built from ``RECGRPC_*`` variables and CLI flags.

This is the only module that reads the environment. Every field is documented here and in the
README's configuration table; the variable for field ``foo_bar`` is ``RECGRPC_FOO_BAR``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

ENV_PREFIX = "RECGRPC_"
DEFAULT_DATABASE_URL = "sqlite:///recgrpc.db"
# Backends the server stores data in, and the drivers it ships ("" = the dialect's default).
SUPPORTED_DATABASES: Mapping[str, frozenset[str]] = types.MappingProxyType(
    {
        "sqlite": frozenset({"", "pysqlite"}),
        "postgresql": frozenset({"", "psycopg"}),
        "postgres": frozenset({""}),
    }
)

# Interaction weights for training: stronger signals count more. RATING is scaled by its value.
DEFAULT_INTERACTION_WEIGHTS: Mapping[str, float] = types.MappingProxyType(
    {
        "VIEW": 1.0,
        "CLICK": 2.0,
        "BOOKMARK": 3.0,
        "COMMENT": 3.0,
        "SHARE": 4.0,
        "LIKE": 4.0,
        "ADD_TO_CART": 4.0,
        "PURCHASE": 6.0,
        "RATING": 1.0,
        "DISLIKE": -4.0,
        # A search counts for each of its best matches (model.search) like a view, at serving.
        "SEARCH": 1.0,
    }
)


def _parse_weights(text: str) -> Mapping[str, float]:
    """``"PURCHASE=6,CLICK=2"`` -> mapping; unnamed types keep their defaults."""
    weights = dict(DEFAULT_INTERACTION_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"interaction weight {part!r} is not NAME=NUMBER")
        key = name.strip().upper()
        if key not in weights:
            raise ValueError(f"unknown interaction type {name!r} in weights")
        weights[key] = float(value)
    return types.MappingProxyType(weights)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server, trainer and CLI can be told. Defaults suit a laptop demo."""

    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL: ``sqlite:///file.db`` or ``postgresql+psycopg://user@host/db``."""
    db_pool_size: int = 10
    """Connections kept open per process (PostgreSQL)."""
    db_deadline_seconds: float = 0.5
    """Longest a call waits for the database: then GetRecommendations answers from memory (with
    its fallback_reason) and every other call UNAVAILABLE."""
    db_workers: int = 16
    """Threads that run the calls' database work; a call waits for a free one within
    db_deadline_seconds."""
    db_breaker_failures: int = 5
    """Database timeouts or outages in a row that open the circuit (calls then answer at once
    without trying the database)."""
    db_breaker_reset_seconds: float = 1.0
    """While the circuit is open, one call tries the database this often; its success closes
    the circuit."""
    db_statement_timeout_seconds: float = 15.0
    """PostgreSQL statement_timeout of the server's connections (0: none)."""
    db_lock_timeout_seconds: float = 5.0
    """PostgreSQL lock_timeout of the server's connections (0: none)."""
    db_idle_in_transaction_timeout_seconds: float = 60.0
    """PostgreSQL idle_in_transaction_session_timeout of the server's connections (0: none)."""
    db_connect_timeout_seconds: int = 5
    """Longest wait to open a PostgreSQL connection (libpq connect_timeout, at least 2)."""
    db_pool_timeout_seconds: float = 2.0
    """Longest wait for a free connection from the pool."""
    db_keepalive_seconds: int = 10
    """TCP keepalive: idle seconds before the first probe (then 3 probes this far apart / 3):
    a database host that vanished is noticed even on an idle connection."""
    db_tcp_user_timeout_seconds: float = 10.0
    """TCP_USER_TIMEOUT: a connection whose sent bytes stay unacknowledged this long is closed
    (0: the kernel's default, minutes)."""

    host: str = "0.0.0.0"  # noqa: S104 - a server in a container must listen beyond loopback
    """Address the gRPC server binds."""
    port: int = 50051
    """gRPC port; 0 picks a free one."""
    metrics_port: int = 9464
    """Prometheus endpoint port; 0 disables it."""
    dashboard_port: int = 8088
    """Read-only analytics dashboard (HTTP) port; 0 disables it."""
    dashboard_host: str = ""
    """Address the dashboard binds; empty: the same as host. ``127.0.0.1`` keeps it reachable
    only from inside the pod (``kubectl port-forward`` still works)."""
    max_workers: int = 16
    """Threads handling RPCs concurrently."""
    workers: int = 1
    """Server processes sharing the port (SO_REUSEPORT)."""
    grace_seconds: float = 10.0
    """On SIGTERM, how long in-flight calls may take to finish."""
    drain_delay_seconds: float = 0.0
    """On SIGTERM, keep answering this long with health NOT_SERVING before refusing new calls,
    so probes and load balancers stop routing here first."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response message accepted."""
    keepalive_time_seconds: float = 60.0
    """Server pings idle connections this often to keep load balancers from dropping them."""
    max_connection_age_seconds: float = 300.0
    """Connections are closed (gracefully) after this long so clients re-resolve new replicas."""

    log_level: str = "INFO"
    """Python logging level."""
    log_json: bool = False
    """Emit one JSON object per log line."""

    otlp_endpoint: str = ""
    """OpenTelemetry collector receiving traces over OTLP/gRPC: ``http://collector:4317``
    (``https://`` for TLS); empty: no traces."""
    trace_service_name: str = "recgrpc"
    """``service.name`` of the exported spans."""
    trace_sample_ratio: float = 1.0
    """Share (0..1) of the traces starting here that are kept; a caller's sampled trace is
    always continued."""

    tls_cert_file: str = ""
    """PEM certificate chain; with tls_key_file enables TLS."""
    tls_key_file: str = ""
    """PEM private key for tls_cert_file."""
    auth_tokens_file: str = ""
    """File of accepted bearer tokens, one per line; empty disables authentication."""
    rate_limit_per_second: float = 0.0
    """Per-caller token-bucket refill rate; 0 disables rate limiting."""
    rate_limit_burst: int = 100
    """Per-caller token-bucket size. A caller is the principal of a verified bearer token when
    authentication is on, else the peer address."""
    health_rate_limit_per_second: float = 20.0
    """With rate limiting on, health calls per second per peer address (their own buckets,
    two seconds' worth of burst); probes stay far below it."""
    auth_failures_per_second: float = 1.0
    """With authentication on, refused tokens per second per peer address (burst
    auth_failure_burst); past it the peer hears RESOURCE_EXHAUSTED. 0: unlimited."""
    auth_failure_burst: int = 20
    """Refused tokens a peer address may send at once before auth_failures_per_second applies."""
    stream_limit_per_peer: int = 8
    """Long-lived streams (health Watch, server reflection) one peer address may hold open at
    once; more are refused with RESOURCE_EXHAUSTED. They never hold RPC threads."""
    reflection_workers: int = 2
    """Threads serving server-reflection streams, apart from the max_workers RPC threads."""
    stream_idle_seconds: float = 30.0
    """A reflection stream that sends no request for this long is cancelled (frees its
    thread)."""

    default_limit: int = 10
    """Items returned when a request leaves limit at 0."""
    max_limit: int = 100
    """Largest list served; larger limits are coerced down."""
    trending_half_life_days: float = 7.0
    """Half-life of the time decay in trending (popularity) scores."""
    trending_window_days: float = 60.0
    """How far back trending looks."""
    refresh_seconds: float = 15.0
    """How often a server checks for a newly activated model and refreshes trending."""
    diversity: float = 0.0
    """0..1: how strongly re-ranking penalises repeated categories (0: off)."""
    freshness_boost: float = 0.1
    """Score bonus for new items, decaying with the item's age."""
    freshness_half_life_days: float = 14.0
    """Age at which the freshness bonus halves."""
    recset_secret: str = field(default="", repr=False)
    """Key signing recset_id attribution tokens, the same on every server of a deployment;
    empty derives one from database_url (set it when callers may know that URL)."""
    impression_queue_size: int = 10_000
    """Served lists waiting to be stored; when full, new impressions are dropped and counted."""
    impression_flush_seconds: float = 0.2
    """Longest a served list waits before its impression is written (what a crash can lose)."""
    ann_min_items: int = 200_000
    """Catalogues this large are ranked from an approximate nearest-neighbour index (built at
    model load; filters stay exact); 0 never uses one."""
    context_cache_megabytes: float = 128.0
    """Memory (estimated) for the users' contexts GetRecommendations reads, least recently
    used dropped first; 0 reads the database on every call. 128 MB holds about 3,500 users of
    100 events or more (a history's newest 100 are kept whole), 30,000 of 10: the users of a
    TTL's worth of traffic at several hundred calls a second."""
    context_cache_ttl_seconds: float = 1.0
    """Longest a cached user context is served without a change feed (an in-memory SQLite
    database): how late this process would see another process's writes. Its own, at once."""
    context_cache_notified_ttl_seconds: float = 10.0
    """The same with a change feed (PostgreSQL's LISTEN/NOTIFY, a SQLite file's changed_users
    table polled every 0.2 s), where other processes' writes arrive at once: the bound for a
    write that sends none (a row changed by hand) or a listener that died unnoticed."""

    interaction_weights: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_INTERACTION_WEIGHTS
    )
    """Training weight per interaction type, ``RECGRPC_INTERACTION_WEIGHTS=PURCHASE=6,CLICK=2``."""
    decay_half_life_days: float = 60.0
    """Training time decay, counted back from each user's newest event."""
    loss: str = "warp"
    """LightFM loss: warp, bpr, warp-kos or logistic."""
    components: int = 64
    """Latent dimensions of the LightFM model."""
    epochs: int = 30
    """Maximum training epochs (early stopping may end sooner)."""
    learning_rate: float = 0.05
    """LightFM learning rate."""
    seed: int = 42
    """Random seed of training (LightFM's initial state and sampling)."""
    top_n: int = 50
    """Stored recommendations per user after training."""
    rating_min: float = 0.5
    """Lowest rating accepted (RATING events, feedback ratings, CSV imports): stars by default."""
    rating_max: float = 5.0
    """Highest rating accepted; ratings outside rating_min..rating_max are refused."""

    churn_horizon_days: int = 30
    """A user churns with no activity for this many days after the reference time."""
    churn_medium_threshold: float = 0.35
    """Risk at or above this is MEDIUM."""
    churn_high_threshold: float = 0.65
    """Risk at or above this is HIGH."""
    neighbours_k: int = 100
    """Neighbours kept per item by training's item-to-item tables (behaviour, together)."""
    neighbour_measure: str = "asymmetric"
    """How co-occurrence is normalised: asymmetric (cosine leaning to confidence), cosine,
    jaccard or lift (bench/similar_quality.py compares them)."""
    together_window_minutes: float = 60.0
    """Events of a user this close together form one session for frequently-together."""
    together_min_support: int = 2
    """Sessions a pair must share to become a frequently-together rule."""
    stale_after_days: float = 30.0
    """A user with no activity for this long gets no for_you shelf in the home feed."""

    search_synonyms_file: str = ""
    """SearchItems' synonyms: one group per line, ``earbuds, earphones, in-ear headphones``."""
    search_personal_weight: float = 0.3
    """0..1: how much a user's model scores re-rank SearchItems' matches (0: text only)."""
    page_token_secret: str = ""
    """Key signing ListInteractions' page tokens; empty: derived from database_url (set one
    shared secret when replicas should honour each other's tokens without knowing the URL)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``RECGRPC_*`` variables, then apply explicit overrides (flags).

        Overrides that are ``None`` are ignored so CLI flags can default to "not given".
        """
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, hints[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        scheme, separator, _ = self.database_url.partition("://")
        backend, _, driver = scheme.partition("+")
        if not separator or driver not in SUPPORTED_DATABASES.get(backend, ()):
            raise ValueError(
                f"database_url (--database-url, RECGRPC_DATABASE_URL): {scheme or 'this'!r} is "
                "not a supported database; use sqlite:///FILE or "
                "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        ports = (self.port, self.metrics_port, self.dashboard_port)
        if not all(0 <= p <= 65535 for p in ports):
            raise ValueError("ports must be within 0..65535")
        if not 0 < self.churn_medium_threshold <= self.churn_high_threshold < 1:
            raise ValueError("need 0 < churn_medium_threshold <= churn_high_threshold < 1")
        if self.max_limit < 1 or not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("need 1 <= default_limit <= max_limit")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if self.impression_queue_size < 1 or not 0 < self.impression_flush_seconds <= 60:
            raise ValueError(
                "need impression_queue_size >= 1 and 0 < impression_flush_seconds <= 60"
            )
        if self.context_cache_megabytes < 0 or not (
            self.context_cache_ttl_seconds > 0 and self.context_cache_notified_ttl_seconds > 0
        ):
            raise ValueError(
                "need context_cache_megabytes >= 0 and positive context_cache_*ttl_seconds"
            )
        if self.ann_min_items < 0:
            raise ValueError("ann_min_items (RECGRPC_ANN_MIN_ITEMS) must not be negative")
        if self.workers < 1 or self.max_workers < 1:
            raise ValueError("workers and max_workers must be at least 1")
        if (
            self.db_workers < 1
            or self.db_breaker_failures < 1
            or self.db_connect_timeout_seconds < 2
        ):
            raise ValueError(
                "need db_workers >= 1, db_breaker_failures >= 1, db_connect_timeout_seconds >= 2"
            )
        if not self.db_deadline_seconds > 0:
            raise ValueError("db_deadline_seconds must be positive")
        if self.stream_limit_per_peer < 1 or self.reflection_workers < 1:
            raise ValueError("stream_limit_per_peer and reflection_workers must be at least 1")
        if not self.stream_idle_seconds > 0:
            raise ValueError("stream_idle_seconds must be positive")
        if self.neighbours_k < 1 or self.together_min_support < 1:
            raise ValueError("neighbours_k and together_min_support must be at least 1")
        if self.neighbour_measure not in {"asymmetric", "cosine", "jaccard", "lift"}:
            raise ValueError("neighbour_measure must be asymmetric, cosine, jaccard or lift")
        if not (self.together_window_minutes > 0 and self.stale_after_days > 0):
            raise ValueError("together_window_minutes and stale_after_days must be positive")
        endpoint = urlparse(self.otlp_endpoint)
        if self.otlp_endpoint and (endpoint.scheme not in ("http", "https") or not endpoint.netloc):
            raise ValueError(
                "otlp_endpoint (RECGRPC_OTLP_ENDPOINT) must be http://HOST:PORT or https://HOST:PORT"
            )
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ValueError("trace_sample_ratio (RECGRPC_TRACE_SAMPLE_RATIO) must be within 0..1")
        if not (math.isfinite(self.rating_min) and math.isfinite(self.rating_max)) or not (
            0 <= self.rating_min < self.rating_max
        ):
            raise ValueError("need 0 <= rating_min < rating_max (RECGRPC_RATING_MIN/MAX)")
        if not 0 <= self.search_personal_weight <= 1:
            raise ValueError("search_personal_weight must be within 0..1")

    @property
    def recset_key(self) -> bytes:
        """The key for ``recset.RecsetTokens``."""
        return (self.recset_secret or "derived from " + self.database_url).encode()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, hint: Any, raw: str) -> Any:
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if name == "interaction_weights":
            return _parse_weights(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
