"""deploy/: the Kubernetes manifests (both overlays, rendered by the real kustomize) validate
against the Kubernetes schemas, the compose file against the compose specification, and
every process they start is one the `opspilot` CLI really has, with settings it really reads.

No cluster or container engine runs here, so this is what can be proven: the objects are
well-formed for the API server, and they agree with the code (commands, flags, settings,
queue names, metric names, probe ports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from opspilot.adapters.prometheus.worker import WorkerTelemetry
from opspilot.domain.ingest import Stream
from opspilot.entrypoints.cli import _parser
from opspilot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
KUBERNETES_VERSION = "1.33.0"
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "Job", "PodDisruptionBudget",
              "HorizontalPodAutoscaler"}
SETTINGS = {f"OPSPILOT_{name.upper()}" for name in Settings.model_fields}
QUEUES = {stream.value for stream in Stream}


def kustomize() -> str:
    found = shutil.which("kustomize") or str(ROOT / ".cache" / "bin" / "kustomize")
    if not os.access(found, os.X_OK):
        pytest.fail("kustomize is missing: scripts/test installs it (go install)")
    return found


def rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([kustomize(), "build", str(KUBERNETES / overlay)], check=True,
                         capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in {"Deployment", "Job"}]
    return [c for pod in pods for c in pod["containers"]]


@pytest.fixture(scope="module", params=["base", "keda"])
def overlay(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return rendered(request.param)


def test_every_core_object_is_valid_for_the_api_server(overlay: list[dict[str, Any]]) -> None:
    core = [o for o in overlay if o["kind"] in CORE_KINDS]
    assert {o["kind"] for o in overlay} - CORE_KINDS <= {"ScaledObject"}
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_deployment() -> None:
    """The check above can fail: a misspelt field is refused."""
    deployment = dict(by_kind(rendered("base"), "Deployment")["opspilot-api"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_container_runs_a_real_command_with_real_flags(overlay: list[dict[str, Any]]) -> None:
    parser = _parser()
    for container in containers(overlay):
        parser.parse_args(container["args"])  # SystemExit on an unknown command or flag


def test_probes_name_ports_the_container_opens(overlay: list[dict[str, Any]]) -> None:
    for container in containers(overlay):
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports
                assert container[probe]["httpGet"]["path"] in {"/healthz", "/readyz"}


def test_settings_are_ones_opspilot_reads() -> None:
    config = by_kind(rendered("base"), "ConfigMap")["opspilot-settings"]["data"]
    example = (KUBERNETES / "base" / "secret.example.env").read_text().splitlines()
    secret_keys = {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
    assert set(config) | secret_keys <= SETTINGS
    assert {"OPSPILOT_DATABASE_URL", "OPSPILOT_AMQP_URL"} <= secret_keys


def test_worker_autoscaling_reads_metrics_and_queues_that_exist() -> None:
    exported = {m.name for m in WorkerTelemetry().registry.collect()}
    hpa = by_kind(rendered("base"), "HorizontalPodAutoscaler")
    external = [m["external"]["metric"] for h in hpa.values() for m in h["spec"]["metrics"]
                if m["type"] == "External"]
    assert external, "the worker scales on queue depth"
    for metric in external:
        assert metric["name"] in exported
        if "selector" in metric:
            assert metric["selector"]["matchLabels"]["queue"] in QUEUES
    names = {m["name"] for m in external}
    assert {"opspilot_queue_depth", "opspilot_queue_message_age_seconds",
            "opspilot_worker_utilisation"} <= names
    rules = yaml.safe_load((KUBERNETES / "prometheus-adapter-rules.yaml").read_text())
    assert names <= {r["name"]["as"] for r in rules["externalRules"]}


def test_keda_replaces_the_hpas_and_scales_the_worker_on_its_queues() -> None:
    objects = rendered("keda")
    assert by_kind(objects, "HorizontalPodAutoscaler") == {}, "KEDA owns the HPAs it creates"
    deployments = by_kind(objects, "Deployment")
    scaled = by_kind(objects, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == set(deployments)
    triggers = scaled["opspilot-worker"]["spec"]["triggers"]
    worker = [t for t in triggers if t["type"] == "rabbitmq"]
    assert {t["metadata"]["queueName"] for t in worker} == {Stream.METRICS.value, Stream.LOGS.value}
    exported = {m.name for m in WorkerTelemetry().registry.collect()}
    ages = [t for t in triggers if t["type"] == "prometheus"]
    assert ages and all(t["metadata"]["query"].split("(")[1].split("{")[0] in exported
                        for t in ages)
    for trigger in worker:
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["hostFromEnv"] in SETTINGS


def test_compose_file_follows_the_compose_spec_and_the_cli() -> None:
    subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                   check=True, capture_output=True)
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    parser = _parser()
    ours = {name: s for name, s in services.items() if s.get("image", "").startswith("opspilot")}
    assert set(ours) == {"migrate", "api", "worker", "alerts", "ai"}
    for service in ours.values():
        parser.parse_args(service["command"])
        assert set(service.get("environment", {})) <= SETTINGS
