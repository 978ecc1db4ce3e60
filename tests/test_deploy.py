"""deploy/: the Kubernetes manifests are valid objects (checked offline against the schemas that
kubernetes-validate bundles, and the KEDA ScaledObject against the schema vendored beside them),
they agree with the code (probe paths, variable names, grace periods), and a worker stopped the
way Kubernetes stops it finishes its batch and leaves no item leased."""

from __future__ import annotations

import inspect
import json
import re
import secrets
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.core.cache import cache

from pipelines.models import Item
from pipelines.services import configuration as config
from pipelines.services.engine import engine_drain, engine_run_batch
from tests.processes import ROOT, WorkerCluster, embedded_env, manage, wait_until
from tests.test_engine import simulated_route, submit

DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests are written for (preStop `sleep` needs 1.30).
KUBERNETES_VERSION = "1.30"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest(kind: str, name: str) -> dict:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in documents(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise LookupError(f"no {kind} {name} in {MANIFESTS}")


def pod_spec(name: str) -> dict:
    return manifest("Deployment", name)["spec"]["template"]["spec"]


KUBERNETES_OBJECTS = [
    (path.name, doc)
    for path in sorted(MANIFESTS.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in documents(path)
    if doc["apiVersion"] != "keda.sh/v1alpha1"
]


@pytest.mark.parametrize(
    ("filename", "resource"), KUBERNETES_OBJECTS, ids=[name for name, _ in KUBERNETES_OBJECTS]
)
def test_each_manifest_is_a_valid_kubernetes_object_checked_offline(filename, resource):
    # Strict: a field Kubernetes does not know (a typo) fails, instead of being dropped.
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_scaled_object_is_valid_against_the_vendored_keda_schema():
    schema = json.loads((DEPLOY / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    scaled = manifest("ScaledObject", "sluice-worker")
    validator.validate(scaled)
    # The schema bites: a misspelt field or a prometheus trigger without its query fails.
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert not validator.is_valid(typo)
    no_query = json.loads(json.dumps(scaled))
    del no_query["spec"]["triggers"][0]["metadata"]["query"]
    assert not validator.is_valid(no_query)


def test_the_kustomization_applies_every_manifest_but_the_example_secret():
    kustomization = documents(MANIFESTS / "kustomization.yaml")[0]
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}


def test_workers_scale_on_queue_depth_that_metrics_serves(client, settings, acme_item):
    scaled = manifest("ScaledObject", "sluice-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sluice-worker"
    manifest("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    metric = re.search(r"(sluice_[a-z_]+)\{", query).group(1)
    statuses = re.search(r'status=~"([^"]+)"', query).group(1).split("|")
    settings.SLUICE_METRICS_TOKEN = token = secrets.token_urlsafe(24)
    scrape = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).content.decode()
    for status in statuses:
        assert re.search(rf'^{metric}{{[^}}]*status="{status}"', scrape, re.M), (status, scrape)


@pytest.mark.parametrize("name", ["sluice-web", "sluice-worker"])
def test_rolling_upgrades_never_take_a_pod_away_before_its_replacement(name):
    strategy = manifest("Deployment", name)["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_the_worker_grace_period_is_longer_than_a_drain():
    drain = inspect.signature(engine_drain).parameters["seconds"].default
    grace = pod_spec("sluice-worker")["terminationGracePeriodSeconds"]
    # A drain, then the last batch's model calls and writes, with room to spare.
    assert grace >= 3 * drain, (grace, drain)


def test_the_variables_the_manifests_set_are_ones_sluice_reads():
    read = set(
        re.findall(r'env\w*\(\s*"([A-Z_]+)"', (ROOT / "controlplane/settings.py").read_text())
    )
    read |= set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    configmap = manifest("ConfigMap", "sluice-config")["data"]
    secret = documents(MANIFESTS / "secret.example.yaml")[0]["stringData"]
    unknown = (set(configmap) | set(secret)) - read
    assert not unknown, f"variables Sluice does not read: {sorted(unknown)}"
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(secret)
    assert not {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} & set(configmap)


def test_every_container_runs_a_command_that_exists():
    commands = {p.stem for p in (ROOT / "controlplane/management/commands").glob("*.py")}
    commands |= {"migrate", "qcluster", "collectstatic"}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "controlplane.asgi:application" in dockerfile
    assert "-c constraints.txt" in dockerfile
    minimum = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    base = re.search(r"FROM python:(\d+\.\d+)", dockerfile).group(1)
    assert tuple(map(int, base.split("."))) >= tuple(map(int, minimum.group(1).split(".")))
    for name in ("sluice-web", "sluice-worker"):
        spec = pod_spec(name)
        for container in spec.get("initContainers", []) + spec["containers"]:
            line = " ".join(container["command"])
            if "manage.py" in line:
                assert line.split("manage.py ")[1].split()[0] in commands, line
            else:
                assert "controlplane.asgi:application" in line
    job = manifest("Job", "sluice-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][-2:] == ["migrate", "--no-input"]


def test_the_probes_reach_their_views_under_the_production_configmap(tmp_path):
    web = pod_spec("sluice-web")["containers"][0]
    probes = {kind: web[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    configmap = manifest("ConfigMap", "sluice-config")["data"]
    hosts = {h["value"] for p in probes.values() for h in p["httpHeaders"] if h["name"] == "Host"}
    assert hosts <= set(configmap["ALLOWED_HOSTS"].split(","))
    env = embedded_env(tmp_path, **configmap, SECRET_KEY=secrets.token_urlsafe(64))
    script = (
        f"from django.test import Client; c = Client(HTTP_HOST={hosts.pop()!r});"
        "print(c.get('/healthz').status_code, c.get('/readyz').status_code)"
    )
    result = manage("shell", "-c", script, env=env)
    # Plain HTTP from the kubelet: answered, not redirected to HTTPS nor refused for its Host.
    # The fresh database has no migrations yet, so /readyz says 503.
    assert result.stdout.split()[-2:] == ["200", "503"], result.stdout + result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_worker_stopped_like_kubernetes_does_finishes_its_batch_and_holds_no_lease(
    operator, acme_step
):
    # Calls take a second, so a batch is surely in flight when SIGTERM arrives.
    simulated_route(acme_step, operator, latency_ms={"p50": 1000, "p95": 1200})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, concurrency_limit=1000)
    grace = pod_spec("sluice-worker")["terminationGracePeriodSeconds"]
    cluster = WorkerCluster(SLUICE_LEASE_SECONDS="600")
    # The database cache outlives transactional tests: a wake-up an earlier test sent less than
    # a second ago would silence this test's (ingest wakes the workers at most once a second).
    cache.delete("engine-wake")
    with cluster:
        items = submit(acme_step.pipeline, *[f"ticket {n}" for n in range(40)])
        running = Item.objects.filter(status=Item.Status.RUNNING)
        assert wait_until(running.exists, timeout=60, interval=0.05), cluster.output
        stopping = time.monotonic()
    stopped_in = time.monotonic() - stopping
    assert cluster.returncode == 0, cluster.output
    assert stopped_in < grace, stopped_in
    # The batch in flight wrote its outcomes and released its leases: nothing waits for the
    # sweeper, and every item is still there.
    assert not running.exists()
    assert not Item.objects.exclude(lease_owner="").exists()
    assert Item.objects.count() == len(items)
    # What the stopped worker had not started is still queued and runs on the next worker.
    while engine_run_batch(worker="worker:next"):
        pass
    assert set(Item.objects.values_list("status", flat=True)) == {Item.Status.ACCEPTED}
