"""deploy/ and README.md agree with the server they describe.

Every manifest parses; names, ports, probes and variables match ``Settings`` and the CLI; alert
rules and dashboard queries only use metrics (and labels) the server really exports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recgrpc import domain
from recgrpc.cli import build_parser
from recgrpc.config import ENV_PREFIX, Settings
from recgrpc.config_doc import BEGIN_MARKER, END_MARKER, settings_table
from recgrpc.db import Database
from recgrpc.server.metrics import ServerMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DEFAULTS = Settings()
FIELDS = {f.name for f in dataclasses.fields(Settings)}
# Labels Prometheus adds itself (scrape config, histogram buckets).
TARGET_LABELS = {"le", "job", "instance", "namespace", "pod", "component"}


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in manifests():
        if doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif doc["kind"] in {"Deployment", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def subcommands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the CLI has no subcommands")


def test_every_file_parses() -> None:
    yaml_files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    assert len(yaml_files) >= 9
    for path in yaml_files:
        assert list(yaml.safe_load_all(path.read_text())), path
    kinds = {d["kind"] for d in manifests()}
    assert kinds >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "ConfigMap", "Secret", "Job", "CronJob",
    }  # fmt: skip
    dashboard = json.loads((DEPLOY / "grafana" / "recgrpc.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10


def test_deployment_ports_probes_and_shutdown_agree_with_settings() -> None:
    deployment = one("Deployment", "recgrpc")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": DEFAULTS.port,
        "metrics": DEFAULTS.metrics_port,
        "dashboard": DEFAULTS.dashboard_port,
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == DEFAULTS.port, probe
    assert "limits" in container["resources"]
    assert "requests" in container["resources"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(DEFAULTS.metrics_port)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    config = one("ConfigMap", "recgrpc-config")["data"]
    drain = float(config["RECGRPC_DRAIN_DELAY_SECONDS"])
    grace = float(config["RECGRPC_GRACE_SECONDS"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain + grace
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )

    # The tokens file the ConfigMap names is where the Secret is mounted.
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["tokens"]
    volume = {v["name"]: v for v in pod["spec"]["volumes"]}["tokens"]["secret"]
    assert config["RECGRPC_AUTH_TOKENS_FILE"] == f"{mount}/{volume['items'][0]['path']}"
    assert volume["items"][0]["key"] in one("Secret", volume["secretName"])["stringData"]


def test_headless_service_hpa_and_pdb_select_the_server_pods() -> None:
    deployment = one("Deployment", "recgrpc")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "recgrpc")["spec"]
    assert service["clusterIP"] == "None"  # headless: clients balance per call
    assert service["selector"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["port"] == DEFAULTS.port
    assert port["targetPort"] == "grpc"
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "recgrpc",
    }
    assert hpa["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


def test_environment_names_are_settings_fields_and_values_parse() -> None:
    config = one("ConfigMap", "recgrpc-config")["data"]
    secret = one("Secret", "recgrpc-secrets")["stringData"]
    names = set(config)
    for _, spec in pod_specs():
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in {"recgrpc-config", "recgrpc-secrets"}
    for name in names:
        assert name.startswith(ENV_PREFIX), name
        assert name.removeprefix(ENV_PREFIX).lower() in FIELDS, f"{name} is not a setting"
    environ = {**config, "RECGRPC_DATABASE_URL": secret["RECGRPC_DATABASE_URL"]}
    settings = Settings.from_env(environ)  # every value parses and validates
    assert settings.port == DEFAULTS.port
    assert settings.metrics_port == DEFAULTS.metrics_port
    # The dashboard answers only on the pod's loopback, where kubectl port-forward connects.
    assert settings.dashboard_port == DEFAULTS.dashboard_port
    assert settings.dashboard_host == "127.0.0.1"
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_jobs_run_real_subcommands_on_one_image() -> None:
    commands = subcommands()
    images, args = set(), {}
    for name, spec in pod_specs():
        for container in spec["containers"]:
            images.add(container["image"])
            args[name] = container["args"]
            assert container["args"][0] in commands, (name, container["args"])
    assert len(images) == 1
    assert args["recgrpc"] == ["serve"]
    assert args["recgrpc-migrate"] == ["migrate"]
    assert args["recgrpc-train"] == ["train"]
    assert args["recgrpc-train-churn"] == ["train-churn"]
    for name in ("recgrpc-train", "recgrpc-train-churn"):
        assert one("CronJob", name)["spec"]["concurrencyPolicy"] == "Forbid"


def test_dockerfile_is_multi_stage_slim_non_root_server_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    assert '".[server]"' in text
    assert "dev]" not in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE)[0].split()}
    assert exposed == {DEFAULTS.port, DEFAULTS.metrics_port, DEFAULTS.dashboard_port}
    assert 'ENTRYPOINT ["recgrpc"]' in text  # exec form: SIGTERM reaches the server


def test_prometheus_scrapes_the_metrics_port_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).exists()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "recgrpc"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    port_name = keeps[("__meta_kubernetes_pod_container_port_name",)]
    container = one("Deployment", "recgrpc")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port_name] == DEFAULTS.metrics_port


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Every sample name the server exports, with its label names, with each metric in use."""
    metrics = ServerMetrics()
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('pool') / 'pool.db'}")
    try:
        metrics.watch_pool(db.engine.pool)  # type: ignore[arg-type]
        now = datetime.now(UTC)
        metrics.rpc_started("unary", "recgrpc.v1.RecommendationService", "GetRecommendations")
        metrics.rpc_handled(
            "unary", "recgrpc.v1.RecommendationService", "GetRecommendations", "OK", 0.002
        )
        metrics.model_loaded("recommender", "v1", now - timedelta(days=1), {"auc": 0.9})
        metrics.recommendations_served(
            domain.RecommendationList(
                items=[domain.ScoredItem("i1", 1.0, "trending")],
                algorithm=domain.Algorithm.POPULAR,
                fallback_reason="no trained model is active",
            )
        )
        metrics.interaction_logged(domain.InteractionType.CLICK, duplicate=False)
        metrics.feedback_recorded(domain.Feedback("u", "i", "", clicked=True, dismissed=False))
        metrics.churn_predicted(
            domain.ChurnPrediction(
                user_id="u",
                risk=0.1,
                level=domain.RiskLevel.LOW,
                factors=[],
                model_version="c1",
                predicted_at=now,
                as_of=now,
                horizon_days=30,
            )
        )
        text = generate_latest(metrics.registry).decode()
    finally:
        db.dispose()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


METRIC = re.compile(r"\b((?:grpc_server|recgrpc)_[a-z_]+)\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def promql_expressions() -> Iterator[tuple[str, str]]:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]
    dashboard = json.loads((DEPLOY / "grafana" / "recgrpc.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']}", target["expr"]


def test_alerts_and_dashboard_use_exported_metrics_and_labels(
    exported: dict[str, set[str]],
) -> None:
    all_labels = set().union(*exported.values()) | TARGET_LABELS
    alerts = {name for name, _ in promql_expressions() if name.startswith("alert ")}
    assert {"alert RecgrpcHighLatencyP99", "alert RecgrpcErrorRatio"} <= alerts
    assert "alert RecgrpcModelStale" in alerts
    for where, expr in promql_expressions():
        used = set(METRIC.findall(expr))
        assert used or expr.startswith('up{job="recgrpc"}'), f"{where} uses no recgrpc metric"
        for name in used:
            assert name in exported, f"{where}: {name} is not exported"
        for group in GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                assert label in all_labels, f"{where}: no metric has the label {label}"
    latency = dict(promql_expressions())["alert RecgrpcHighLatencyP99"]
    assert "histogram_quantile(0.99" in latency
    assert "grpc_server_handling_seconds_bucket" in latency
    errors = dict(promql_expressions())["alert RecgrpcErrorRatio"]
    assert 'grpc_code!~"OK|INVALID_ARGUMENT|NOT_FOUND"' in errors


def test_operations_doc_lists_every_setting_and_metric(exported: dict[str, set[str]]) -> None:
    doc = (ROOT / "README.md").read_text()
    begin, end = doc.index(BEGIN_MARKER) + len(BEGIN_MARKER), doc.index(END_MARKER)
    assert doc[begin:end].strip() == settings_table().strip(), (
        "README.md's configuration table is stale: replace the block between the "
        "settings-table markers with the output of `python -m recgrpc.config_doc`"
    )
    for field in FIELDS:
        assert f"`{ENV_PREFIX}{field.upper()}`" in doc
    families = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in exported}
    for family in families:
        if family.startswith(("grpc_server_", "recgrpc_")):
            assert family in doc, f"metric {family} is missing from README.md"
