"""The per-service Kafka ACLs (infra/kafka_acls.py) match what the services really do, and their renderings.

The ACLs are derived from the topic catalogue's owners and consumers; here they are checked against
each service's own app (its subscriptions, consumer groups and dead-letter topics, as the runtime
builds them), against deploy/KAFKA_SECURITY.md, and the Strimzi KafkaUser resources against the
schema Strimzi's CRD generator makes for KafkaUser. Classification's app is checked by the
secured-broker integration test (building its model takes seconds).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from contracts.topics import TOPICS
from infra.devstack import SERVICES
from infra.kafka_acls import markdown_table, service_access, service_acls, strimzi_kafka_users
from tests._infra import unavailable

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "deploy" / "KAFKA_SECURITY.md"
CHEAP_APPS = ("intake", "routing", "sla_timer", "closure", "console")


def _app(name: str, tmp_path: Path):
    settings_module = importlib.import_module(f"services.{name}.settings")
    (settings_class,) = [
        value for value in vars(settings_module).values()
        if isinstance(value, type) and value.__name__.endswith("Settings") and value.__module__ == settings_module.__name__
    ]
    settings = settings_class(topic_prefix="p.", database_url=f"sqlite+aiosqlite:///{tmp_path}/{name}.db")
    return importlib.import_module(f"services.{name}.app").create_app(settings)


@pytest.mark.parametrize("name", CHEAP_APPS)
def test_each_service_reads_joins_and_dead_letters_only_what_its_acls_allow(name, tmp_path):
    runtime = _app(name, tmp_path).state.runtime
    access = next(a for a in service_access("p.") if a.service == name)
    assert {t for s in runtime.broker.subscribers for t in s.topic_names} == set(access.reads)
    for consumer in runtime.consumers:
        assert consumer.name.startswith(access.group_prefix)
        assert consumer.dead_letter_topic in access.writes
    owned = {"p." + spec.name for spec in TOPICS if spec.owner == name}
    dead_letters = {c.dead_letter_topic for c in runtime.consumers}
    assert set(access.writes) == owned | dead_letters  # nothing granted that the service does not use


def test_every_service_has_a_principal_named_as_its_kubernetes_resources():
    names = {a.service for a in service_access()}
    assert names == {name for name, _port in SERVICES}
    for access in service_access():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", access.username)
        assert access.principal == f"User:{access.username}"
        acls = service_acls(access)
        assert len(acls) == len(set(acls))
        assert all(acl.principal == access.principal for acl in acls)


def test_the_security_doc_shows_the_current_acl_table():
    text = DOC.read_text(encoding="utf-8")
    table = re.search(r"<!-- acl-table:begin[^>]*-->\n(.*?)\n<!-- acl-table:end -->", text, re.S)
    assert table is not None, "deploy/KAFKA_SECURITY.md lost its acl-table markers"
    assert table.group(1) == markdown_table(), "ACL table out of date: paste `python -m infra.kafka_acls` into the doc"


def _strimzi_schemas_module():
    spec = importlib.util.spec_from_file_location("strimzi_schemas", ROOT / "deploy" / "k8s" / "strimzi_schemas.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kafka_user_schema(tmp_path_factory) -> dict:
    """The KafkaUser v1beta2 schema, from Strimzi's CRD generator run on the jars strimzi_schemas.py caches."""
    strimzi = _strimzi_schemas_module()
    java = shutil.which("java")
    if java is None:
        unavailable("Java 17+ is needed to run Strimzi's CRD generator")
    try:
        libs = strimzi.ensure_schemas().parent / "work" / "lib"
    except Exception as exc:  # noqa: BLE001 - reported as missing infrastructure
        unavailable(f"no Strimzi jars for the KafkaUser schema: {exc}")
    out = tmp_path_factory.mktemp("kafkauser") / "kafkauser.yaml"
    result = subprocess.run(
        [java, "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", strimzi.GENERATOR, "--yaml", "--crd-api-version", "v1",
         "--api-versions", strimzi.API_VERSION, f"io.strimzi.api.kafka.model.user.KafkaUser={out}"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schemas = strimzi.crd_schemas(yaml.safe_load(out.read_text(encoding="utf-8")))
    return schemas[f"kafkauser_{strimzi.API_VERSION}.json"]


def test_the_strimzi_kafka_users_validate_against_strimzis_own_schema(kafka_user_schema):
    import jsonschema

    users = strimzi_kafka_users()
    assert [u["metadata"]["name"] for u in users] == [a.username for a in service_access()] + ["gridwhistle-topics"]
    for user in users:
        jsonschema.validate(user, kafka_user_schema)
    # the schema is strict: a misspelt field is caught
    broken = {**users[0], "spec": {**users[0]["spec"], "authentication": {"type": "scram-sha-512", "pasword": "x"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, kafka_user_schema)
