"""The server's Prometheus metrics, scraped over HTTP from a real server: calls by method and
code, domain counters with bounded labels, and the serving models' version and training numbers."""

from __future__ import annotations

import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from recgrpc import domain
from recgrpc.client import (
    InvalidArgumentError,
    Item,
    RecommendationClient,
)
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.churn_training import train_churn
from recgrpc.jobs.train import train
from recgrpc.server import RunningServer
from recgrpc.server.metrics import (
    LATENCY_BUCKETS,
    BoundedLabel,
    MetricsEndpoint,
    ServerMetrics,
    fallback_code,
)
from tests import churn_history
from tests.recommender_data import load, taste_data
from tests.rpc import CATALOG_SERVICE, REC_SERVICE


def scrape(port: int) -> dict[str, list[Sample]]:
    """GET /metrics and parse it with prometheus-client's own parser: samples by metric name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- metrics -------------------------------------------------------------------------------


def test_metrics_endpoint_counts_real_calls_by_method_and_code(server: RunningServer) -> None:
    endpoint = MetricsEndpoint(server.metrics.registry, 0, "127.0.0.1")
    try:
        with RecommendationClient(f"127.0.0.1:{server.port}") as client:
            client.upsert_items([Item(item_id=f"item-{n}", categories=["news"]) for n in range(4)])
            for n in range(3):
                client.log_interaction(f"reader-{n}", "item-1", "click")
            client.log_interaction("reader-0", "item-2", "view")
            with pytest.raises(InvalidArgumentError):
                client.get_recommendations("")  # an empty user id is the caller's fault
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the refresher has trending scores
                recs = client.get_recommendations("reader-9", limit=3)
                if recs.items:
                    break
                time.sleep(0.2)
            assert recs.items
            client.submit_feedback(
                "reader-9", recs.items[0].item_id, recset_id=recs.recset_id, clicked=True
            )
            client.submit_feedback(
                "reader-9",
                recs.items[1].item_id,
                recset_id=recs.recset_id,
                dismissed=True,
                rating=1.0,
            )
            assert client.check_health()

        families = scrape(endpoint.port)
    finally:
        endpoint.close()

    def handled(service: str, method: str, code: str) -> float:
        return value(
            families["grpc_server_handled"],
            "grpc_server_handled_total",
            grpc_type="unary",
            grpc_service=service,
            grpc_method=method,
            grpc_code=code,
        )

    assert handled(REC_SERVICE, "GetRecommendations", "OK") >= 1
    assert handled(REC_SERVICE, "GetRecommendations", "INVALID_ARGUMENT") == 1
    assert handled(REC_SERVICE, "LogInteraction", "OK") == 4
    assert handled(CATALOG_SERVICE, "UpsertItems", "OK") == 1
    assert handled("grpc.health.v1.Health", "Check", "OK") >= 1
    get_recs = {"grpc_service": REC_SERVICE, "grpc_method": "GetRecommendations"}
    started = value(families["grpc_server_started"], "grpc_server_started_total", **get_recs)
    total = value(families["grpc_server_handled"], "grpc_server_handled_total", **get_recs)
    assert started == total

    latency = families["grpc_server_handling_seconds"]
    buckets = {
        float(s.labels["le"])
        for s in latency
        if s.name.endswith("_bucket") and s.labels["grpc_method"] == "LogInteraction"
    }
    assert buckets == {*LATENCY_BUCKETS, float("inf")}
    count = value(latency, "grpc_server_handling_seconds_count", grpc_method="LogInteraction")
    assert count == 4
    assert 0 < value(latency, "grpc_server_handling_seconds_sum", grpc_method="LogInteraction") < 4

    assert value(families["recgrpc_interactions"], "recgrpc_interactions_total", type="CLICK") == 3
    feedback = families["recgrpc_feedback"]
    for kind in ("clicked", "dismissed", "rated"):
        assert value(feedback, "recgrpc_feedback_total", kind=kind) == 1, kind
    items = families["recgrpc_recommended_items"]
    assert value(items, "recgrpc_recommended_items_total") >= len(recs.items)
    lists = families["recgrpc_recommendation_lists"]
    assert value(lists, "recgrpc_recommendation_lists_total") >= 1
    # Feedback is attributed to the served list's source: online CTR per algorithm and version.
    on_lists = families["recgrpc_list_feedback"]
    source = {"algorithm": "POPULAR", "model_version": "none"}
    assert value(lists, "recgrpc_recommendation_lists_total", **source) >= 1
    assert value(on_lists, "recgrpc_list_feedback_total", kind="clicked", **source) == 1
    assert value(on_lists, "recgrpc_list_feedback_total", kind="dismissed", **source) == 1
    assert families["recgrpc_db_pool_size"][0].value >= 1
    assert families["recgrpc_db_pool_checked_out"][0].value >= 0

    # Never a user or item id in any label value.
    for samples in families.values():
        for sample in samples:
            for label in sample.labels.values():
                assert "reader-" not in label, sample
                assert "item-" not in label, sample


def test_domain_metrics_use_bounded_labels() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, clock=lambda: 1_000_000.0)
    now = datetime.fromtimestamp(1_000_000.0, UTC)
    metrics.model_loaded(
        "recommender",
        "rec-20260101",
        now - timedelta(hours=2),
        {"precision@10": 0.25, "auc": 0.9, "note": "text is not exported", "flag": True},
    )
    reasons = [f"similar to item-{n}" for n in range(50)] + ["hybrid"] * 3 + ["trending"]
    metrics.recommendations_served(
        domain.RecommendationList(
            items=[domain.ScoredItem(f"i{n}", 1.0, reason) for n, reason in enumerate(reasons)],
            algorithm=domain.Algorithm.HYBRID,
            model_version="rec-20260101",
            fallback_reason="user u-123 is not in the model: served trending items",
        )
    )
    metrics.churn_predicted(
        domain.ChurnPrediction(
            user_id="u-123",
            risk=0.8,
            level=domain.RiskLevel.HIGH,
            factors=[],
            model_version="churn-1",
            predicted_at=now,
            as_of=now,
            horizon_days=30,
        )
    )
    families = {
        f.name: f.samples
        for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    info = families["recgrpc_model_info"][0]
    assert info.labels == {"kind": "recommender", "version": "rec-20260101"}
    assert value(families["recgrpc_model_age_seconds"], "recgrpc_model_age_seconds") == 7200
    training = {s.labels["metric"]: s.value for s in families["recgrpc_model_training_metric"]}
    assert training == {"precision_10": 0.25, "auc": 0.9}
    items = {
        s.labels["reason"]: s.value
        for s in families["recgrpc_recommended_items"]
        if s.name.endswith("_total")
    }
    assert items == {"other": 50, "hybrid": 3, "trending": 1}
    fallbacks = [
        s.labels["reason"]
        for s in families["recgrpc_recommendation_fallbacks"]
        if s.name.endswith("_total")
    ]
    assert fallbacks == ["cold_start"]
    churn = families["recgrpc_churn_predictions"]
    assert value(churn, "recgrpc_churn_predictions_total", risk_level="HIGH") == 1


def test_fallback_codes_and_bounded_label() -> None:
    assert fallback_code("database unavailable: served without the user's history") == (
        "database_unavailable"
    )
    assert fallback_code("no trained model is active") == "no_model"
    assert fallback_code("something new from 'user-42'") == "other"
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("hybrid", "Trending", "content", "hybrid", "item 42!")] == [
        "hybrid",
        "trending",
        "other",
        "hybrid",
        "other",
    ]


# -- model metrics from real training ----------------------------------------------------------


def wait_for_model(running: RunningServer, kind: str, version: str) -> dict[str, list[Sample]]:
    """Samples of the server's registry once the refresher reports ``version`` for ``kind``."""
    deadline = time.monotonic() + 20
    while True:
        text = generate_latest(running.metrics.registry).decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        versions = {s.labels["kind"]: s.labels["version"] for s in families["recgrpc_model_info"]}
        if versions.get(kind) == version:
            return families
        assert time.monotonic() < deadline, f"{kind} model {version} never reported"
        time.sleep(0.1)


def test_serving_recommender_model_is_exported(
    server: RunningServer, database: Database, settings: Settings
) -> None:
    load(database, taste_data(n_users=60, n_items=40, events_per_user=12))
    report = train(database, settings, progress=False, epochs=3)
    assert report.promoted
    families = wait_for_model(server, "recommender", report.version)
    age = value(
        families["recgrpc_model_age_seconds"], "recgrpc_model_age_seconds", kind="recommender"
    )
    assert 0 <= age < 600
    training = {
        s.labels["metric"]: s.value
        for s in families["recgrpc_model_training_metric"]
        if s.labels["kind"] == "recommender"
    }
    assert training["precision"] == pytest.approx(report.model.precision)
    assert training["auc"] == pytest.approx(report.model.auc)


def test_serving_churn_model_is_exported(server: RunningServer, database: Database) -> None:
    end = datetime(2026, 6, 1, tzinfo=UTC)
    churn_history.generate(database, end, users=60, days=120, seed=3)
    trained = train_churn(database, as_of=end, horizon_days=30)
    version = trained.model.version
    families = wait_for_model(server, "churn", version)
    metrics = {
        s.labels["metric"]
        for s in families["recgrpc_model_training_metric"]
        if s.labels["kind"] == "churn"
    }
    assert metrics  # the evaluation numbers recorded at training
    assert all(re.fullmatch(r"[a-zA-Z0-9_]+", name) for name in metrics)
