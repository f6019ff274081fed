"""The Kubernetes manifests build with kustomize, validate with kubeconform, and match the services.

Built-in kinds validate against kubernetes-validate's offline schemas; the Strimzi kinds against
schemas built from Strimzi's own model classes and CRD generator (deploy/k8s/strimzi_schemas.py,
Maven Central, cached under .cache/strimzi-schemas/).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from infra.devstack import SERVICES
from tests._infra import unavailable
from tests.support import ops_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic"}
KUBERNETES_VERSION = "v1.33.0"
# The kinds the manifests use (plus the shared definitions); copying only these keeps the test fast.
SCHEMA_FILES = {
    "_definitions.json", "namespace-v1.json", "service-v1.json", "configmap-v1.json", "secret-v1.json",
    "deployment-apps-v1.json", "poddisruptionbudget-policy-v1.json", "job-batch-v1.json",
}


def build(target: str) -> str:
    """The YAML kustomize renders for a base or overlay directory."""
    result = subprocess.run(
        [ops_tool("kustomize"), "build", str(K8S / target)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> Path:
    """kubernetes-validate's offline schemas, with their references made relative for kubeconform."""
    source = files("kubernetes_validate") / "kubernetes-json-schema" / f"{KUBERNETES_VERSION}-local-strict"
    target = tmp_path_factory.mktemp("k8s-schemas")
    for name in SCHEMA_FILES:
        entry = source / name
        schema = json.loads(entry.read_text(encoding="utf-8"))
        schema.pop("$id", None)  # an absolute id would make kubeconform resolve references remotely
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        (target / name).write_text(text, encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def strimzi_schemas() -> Path:
    """The Strimzi CRD schemas (built with Maven and Java on first use, then cached)."""
    if shutil.which("mvn") is None or shutil.which("java") is None:
        unavailable("Maven and Java are needed to build the Strimzi CRD schemas")
    result = subprocess.run(
        [sys.executable, str(K8S / "strimzi_schemas.py")], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def kubeconform(paths: list[str], schemas: Path, strimzi: Path) -> subprocess.CompletedProcess[str]:
    """Validate rendered manifests strictly against the built-in and the Strimzi schemas."""
    return subprocess.run(
        [
            ops_tool("kubeconform"), "-strict", "-summary",
            "-schema-location", f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-schema-location", f"{strimzi}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            *paths,
        ],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(build("overlays/production")) if doc]


def test_generated_base_is_up_to_date():
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_and_overlay_validate_against_the_kubernetes_and_strimzi_schemas(schemas, strimzi_schemas, tmp_path):
    rendered = []
    for target in ("base", "overlays/production"):
        path = tmp_path / f"{target.replace('/', '-')}.yaml"
        path.write_text(build(target), encoding="utf-8")
        rendered.append(str(path))
    # One kubeconform run for both: it compiles each schema once. Nothing is skipped.
    result = kubeconform(rendered, schemas, strimzi_schemas)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_strimzi_resources_with_a_misspelt_field_or_a_wrong_type_are_rejected(schemas, strimzi_schemas, production, tmp_path):
    strimzi = copy.deepcopy([doc for doc in production if doc["kind"] in STRIMZI_KINDS])
    (kafka,) = [doc for doc in strimzi if doc["kind"] == "Kafka"]
    (pool,) = [doc for doc in strimzi if doc["kind"] == "KafkaNodePool"]
    topic = next(doc for doc in strimzi if doc["kind"] == "KafkaTopic")
    kafka["spec"]["entityOperator"]["topicOperater"] = {}
    pool["spec"]["storage"]["volumes"][0]["kraftMetadata"] = "separate"
    topic["spec"]["partitions"] = "six"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all([kafka, pool, topic]), encoding="utf-8")
    result = kubeconform([str(broken)], schemas, strimzi_schemas)
    assert result.returncode != 0
    assert "Valid: 0, Invalid: 3" in result.stdout, result.stdout
    assert "topicOperater" in result.stdout and "kraftMetadata" in result.stdout and "partitions" in result.stdout


def _strimzi_schemas_module():
    spec = importlib.util.spec_from_file_location("strimzi_schemas", K8S / "strimzi_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crd_schema_conversion_is_strict_except_where_the_crd_keeps_unknown_fields():
    convert = _strimzi_schemas_module().to_json_schema
    schema = convert({
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "nullable": True},
            "port": {"x-kubernetes-int-or-string": True},
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "listeners": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    })
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["replicas"] == {"type": ["integer", "null"]}
    assert props["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert props["config"] == {"type": "object"}
    assert props["listeners"]["items"]["additionalProperties"] is False
    assert props["labels"]["additionalProperties"] == {"type": "string"}


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_every_service_has_probes_resources_replicas_budget_and_a_secret_database_url(production):
    deployments = by_kind(production, "Deployment")
    services = by_kind(production, "Service")
    budgets = by_kind(production, "PodDisruptionBudget")
    for name, port in SERVICES:
        dns = name.replace("_", "-")
        deployment = deployments[dns]
        assert deployment["spec"]["replicas"] >= 2
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["livenessProbe"]["httpGet"]["path"] == "/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        assert set(container["resources"]) == {"requests", "limits"}
        database = next(e for e in container["env"] if e["name"] == f"GW_{name.upper()}_DATABASE_URL")
        assert database["valueFrom"]["secretKeyRef"]["key"] == name
        token_secret = next(e for e in container["env"] if e["name"] == "GW_AUTH_TOKEN_SECRET")
        assert token_secret["valueFrom"]["secretKeyRef"] == {"name": "gridwhistle-access", "key": "token-secret"}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert services[dns]["spec"]["ports"][0]["port"] == port
        assert budgets[dns]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployments["intake"]["spec"]["replicas"] == 3  # the overlay's patch
    open311 = next(e for e in deployments["intake"]["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "GW_INTAKE_OPEN311_API_KEYS")
    assert open311["valueFrom"]["secretKeyRef"]["name"] == "gridwhistle-access"
    assert "Secret" not in {doc["kind"] for doc in production}, "production takes its secrets from outside git"


def test_kafka_runs_in_kraft_mode_under_strimzi_with_a_topic_per_catalogue_entry(production):
    (kafka,) = by_kind(production, "Kafka").values()
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    (pool,) = by_kind(production, "KafkaNodePool").values()
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    catalogue = yaml.safe_load((ROOT / "infra" / "topics.yaml").read_text(encoding="utf-8"))["topics"]
    topics = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in by_kind(production, "KafkaTopic").values()}
    assert topics == {t["name"]: t["partitions"] for t in catalogue}
    (job,) = by_kind(production, "Job").values()
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "infra.local", "create-topics"]
