"""A service configured for a secured Kafka: SASL/SCRAM-SHA-512 per service principal, ACLs, TLS.

A dedicated broker (never the session's: its listeners and users are its own) with a SASL_PLAINTEXT
listener, a SASL_SSL listener whose certificate a CA made here with the JDK's keytool signed,
StandardAuthorizer ACLs from infra/kafka_acls.py and super user `admin`. Classification, built by
its create_app and configured only through the shared KAFKA_* settings, consumes and publishes as
`User:classification`; a wrong password, a missing ACL and an untrusted certificate are refused.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from contracts.events import CATALOGUE
from contracts.topics import CLASSIFICATION_DECISIONS, INTAKE_INCIDENTS, ROUTING_HANDOFFS, SLA_DEADLINES
from infra.kafka_acls import TOPIC_ADMIN, all_acls, create_acls, service_access
from infra.local import BrokerSecurity, LocalKafka, create_topics, ensure_kafka_jars, free_port, run_sync
from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from services.closure.rebuild_kpis import rebuild
from services.runtime.kafka_security import aiokafka_client_kwargs
from services.runtime.settings import KafkaClientSettings
from tests._infra import unavailable
from tests.e2e.stack import eventually
from tests.support import reported

pytestmark = pytest.mark.integration

PREFIX = "sec."
# One principal per service (and the topic job); "stranger" logs in fine but has no ACL at all.
PASSWORDS = {
    "classification": "classification-pw-7f3a",
    "intake": "intake-pw-51c2",
    "routing": "routing-pw-9d0e",
    "closure": "closure-pw-a8c5",
    TOPIC_ADMIN: "topics-pw-22b8",
    "stranger": "stranger-pw-0c41",
}
STORE_PASSWORD = "keystore-pw-e61d"


@dataclass
class SecuredKafka:
    broker: LocalKafka
    security: BrokerSecurity
    ca_file: Path

    def client(self, user: str, *, password: str | None = None, tls: bool = False, **extra) -> KafkaClientSettings:
        """The shared settings a process running as `user` would be given."""
        return KafkaClientSettings(
            kafka_bootstrap_servers=self.broker.tls_bootstrap if tls else self.broker.bootstrap,
            kafka_security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=password or PASSWORDS[user],
            **({"kafka_ssl_cafile": self.ca_file} if tls else {}),
            **extra,
        )

    def classification(self, tmp_path: Path, **overrides) -> ClassificationSettings:
        """Classification's settings as its pods get them, on a SQLite database of its own."""
        client = self.client("classification", **overrides)
        return ClassificationSettings(
            **client.model_dump(),
            topic_prefix=PREFIX,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/classification.db",
            outbox_poll_seconds=0.1,
            health_sample_seconds=0.2,
        )


def _keytool(*args: str, cwd: Path) -> None:
    # A short-lived JVM: the C1 compiler alone starts it in half the time.
    jvm = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]
    result = subprocess.run(["keytool", *jvm, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"keytool {args[0]} failed: {result.stdout}{result.stderr}")


def make_tls_files(where: Path) -> tuple[Path, Path]:
    """A self-signed CA (PEM, for clients) and a broker keystore (PKCS12) it signed for 127.0.0.1."""
    where.mkdir(parents=True, exist_ok=True)
    common = ["-storetype", "PKCS12", "-storepass", STORE_PASSWORD, "-keyalg", "EC", "-groupname", "secp256r1"]
    _keytool("-genkeypair", "-alias", "ca", "-keystore", "ca.p12", "-dname", "CN=gridwhistle test CA", "-validity", "2",
             "-ext", "bc:c", "-ext", "KU:c=keyCertSign,cRLSign", *common, cwd=where)
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-storepass", STORE_PASSWORD,
             "-file", "ca.pem", cwd=where)
    _keytool("-genkeypair", "-alias", "broker", "-keystore", "broker.p12", "-dname", "CN=localhost", "-validity", "2",
             *common, cwd=where)
    _keytool("-certreq", "-alias", "broker", "-keystore", "broker.p12", "-storepass", STORE_PASSWORD,
             "-file", "broker.csr", cwd=where)
    _keytool("-gencert", "-alias", "ca", "-keystore", "ca.p12", "-storepass", STORE_PASSWORD, "-infile", "broker.csr",
             "-outfile", "broker.pem", "-rfc", "-validity", "2", "-ext", "SAN=ip:127.0.0.1,dns:localhost",
             "-ext", "KU:c=digitalSignature", "-ext", "EKU=serverAuth", cwd=where)
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "broker.p12",
             "-storepass", STORE_PASSWORD, cwd=where)
    _keytool("-importcert", "-alias", "broker", "-file", "broker.pem", "-keystore", "broker.p12",
             "-storepass", STORE_PASSWORD, cwd=where)
    return where / "ca.pem", where / "broker.p12"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    if shutil.which("keytool") is None:
        unavailable("keytool (JDK) is needed for the secured-broker test's certificates")
    root = tmp_path_factory.mktemp("secured-kafka")
    try:
        ensure_kafka_jars()
        ca_file, keystore = make_tls_files(root / "tls")
    except Exception as exc:  # noqa: BLE001 - reported as missing infrastructure
        unavailable(f"no secured local Kafka (needs Java 17 + Maven + keytool): {exc}")
    security = BrokerSecurity(
        users=dict(PASSWORDS),
        admin_password="admin-pw-3b7f",
        keystore=keystore,
        keystore_password=STORE_PASSWORD,
        tls_port=free_port(),
    )
    broker = LocalKafka(root / "kafka", port=free_port(), security=security)
    try:
        broker.start()
        broker.wait_ready(timeout=120)
    except Exception as exc:  # noqa: BLE001
        broker.stop()
        unavailable(f"the secured local Kafka did not start: {exc}")
    try:
        # The topic job's own principal creates the topics; only the super user may write ACLs.
        run_sync(lambda: create_acls(broker.bootstrap, all_acls(PREFIX), security.client_kwargs()))
        topics_login = security.client_kwargs(TOPIC_ADMIN, PASSWORDS[TOPIC_ADMIN])
        run_sync(lambda: create_topics(broker.bootstrap, prefix=PREFIX, security=topics_login))
        yield SecuredKafka(broker, security, ca_file)
    finally:
        broker.stop()


async def _send(settings: KafkaClientSettings, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, request_timeout_ms=10000, **aiokafka_client_kwargs(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
    finally:
        await producer.stop()


async def _read_all(settings: KafkaClientSettings, topic: str, partitions: int) -> list[bytes]:
    """Every record value of a topic, from offset zero, without a consumer group."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
        return values
    finally:
        await consumer.stop()


async def _subscribe(settings: KafkaClientSettings, topic: str, group_id: str | None = None) -> None:
    """Start a consumer subscribed to `topic` (in `group_id`) and stop it again."""
    consumer = AIOKafkaConsumer(topic, group_id=group_id, enable_auto_commit=False, **aiokafka_client_kwargs(settings))
    try:
        await asyncio.wait_for(consumer.start(), 20)
    finally:
        await consumer.stop()


async def test_a_service_consumes_and_publishes_as_its_own_principal(secured, tmp_path, capfd):
    settings = secured.classification(tmp_path)
    app = create_app(settings)
    runtime = app.state.runtime
    # What the principal's ACLs were derived from is what the app really subscribes to and joins.
    access = next(a for a in service_access(PREFIX) if a.service == "classification")
    assert {t for s in runtime.broker.subscribers for t in s.topic_names} == set(access.reads)
    assert all(c.name.startswith(access.group_prefix) and c.dead_letter_topic in access.writes for c in runtime.consumers)

    incident = reported("厨房着火了，火很大")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            ready = await eventually(lambda: client.get("/health"), lambda r: r.status_code == 200, what="ready")
            assert ready.json()["broker"] == "ok"
            # intake's principal reports; classification consumes and publishes its decision
            await _send(secured.client("intake"), PREFIX + INTAKE_INCIDENTS.name, incident.key(), incident.encode(), incident.headers())

            async def decisions() -> list[str]:
                values = await _read_all(secured.client("routing"), PREFIX + CLASSIFICATION_DECISIONS.name, CLASSIFICATION_DECISIONS.partitions)
                return [e.type for e in map(CATALOGUE.decode, values) if e.subject == incident.subject]

            assert await eventually(decisions, lambda types: "IncidentClassified" in types, what="decision published") == ["IncidentClassified"]
    printed = capfd.readouterr()
    assert PASSWORDS["classification"] not in printed.out + printed.err


async def test_a_wrong_password_is_refused_and_the_service_reports_the_broker_unreachable(secured, tmp_path, capfd):
    wrong = "not-the-password-4e1"
    app = create_app(secured.classification(tmp_path, password=wrong))
    runtime = app.state.runtime
    # The login is refused when the broker connects, so the app does not start serving: under
    # uvicorn the process exits non-zero and its pod restarts with back-off, never Ready.
    with pytest.raises(KafkaConnectionError):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - the broker refuses the login before the app serves
    assert runtime.started is False and not runtime._tasks  # noqa: SLF001 - no relay or consumer left running
    checks = await runtime.readiness()
    assert checks["broker"].startswith("unreachable") and checks["ready"] is False
    await runtime.engine.dispose()
    printed = capfd.readouterr()
    said = printed.out + printed.err
    assert "SaslAuthenticationFailed" in said or "Authentication failed" in said
    assert wrong not in said
    # the broker is unharmed: with the right password the same principal gets in
    await _subscribe(secured.client("classification"), PREFIX + INTAKE_INCIDENTS.name)


async def test_a_principal_without_an_acl_is_refused(secured):
    classification = secured.client("classification")
    await _subscribe(classification, PREFIX + INTAKE_INCIDENTS.name, PREFIX + "gridwhistle.classification.main")
    # write a topic it does not own
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(classification, PREFIX + ROUTING_HANDOFFS.name, b"k", b"{}", {})
    # read a topic it does not consume
    with pytest.raises(TopicAuthorizationFailedError):
        await _subscribe(classification, PREFIX + SLA_DEADLINES.name)
    # join another service's consumer group, even on a topic it may read
    with pytest.raises(GroupAuthorizationFailedError):
        await _subscribe(classification, PREFIX + INTAKE_INCIDENTS.name, PREFIX + "gridwhistle.routing.decisions")
    # an authenticated principal with no ACL reads nothing, and may not even start an idempotent
    # producer: that needs WRITE on some topic
    stranger = secured.client("stranger")
    with pytest.raises(TopicAuthorizationFailedError):
        await _subscribe(stranger, PREFIX + INTAKE_INCIDENTS.name)
    with pytest.raises(ClusterAuthorizationFailedError):
        await _send(stranger, PREFIX + INTAKE_INCIDENTS.name, b"k", b"{}", {})


async def test_over_tls_the_service_is_ready_and_an_untrusted_certificate_is_refused(secured, tmp_path, capfd):
    app = create_app(secured.classification(tmp_path, tls=True))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            ready = await eventually(lambda: client.get("/health"), lambda r: r.status_code == 200, what="ready over TLS")
            assert ready.json()["broker"] == "ok"
    # without the CA (the system trust store only) the broker's certificate is not trusted
    untrusted = secured.client("classification", tls=True).model_copy(update={"kafka_ssl_cafile": None})
    capfd.readouterr()
    with pytest.raises(KafkaConnectionError):
        await _send(untrusted, PREFIX + CLASSIFICATION_DECISIONS.name, b"k", b"{}", {})
    printed = capfd.readouterr()
    assert "CERTIFICATE_VERIFY_FAILED" in printed.out + printed.err


async def test_the_kpi_rebuild_replays_every_source_topic_as_closure(secured, tmp_path):
    report = await rebuild(
        secured.broker.bootstrap, PREFIX, f"sqlite+aiosqlite:///{tmp_path}/kpis.db", kafka=secured.client("closure")
    )
    assert report.unreadable == 0
