"""Kafka ACLs per service principal, derived from the topic catalogue (contracts/topics.py).

Each service runs as its own principal `User:<service>` (SASL/SCRAM in deployment; `_` becomes `-`,
as in its Kubernetes name: `User:sla-timer`) and may only:

- write the topic it owns (its outbox relay publishes there, with the idempotent producer;
  since Kafka 3.0 WRITE on a topic is all an idempotent producer needs);
- read the topics it consumes, and write their dead-letter twins (`<topic>.dlq`), where its
  consumers put records they can never process;
- use the consumer groups under its own prefix, `<prefix>gridwhistle.<service>.` (the runtime
  names every group `<prefix>gridwhistle.<service>.<purpose>`).

The topic-provisioning job (`python -m infra.local create-topics`) runs as `User:gridwhistle-topics`,
which may create and describe the catalogue's topics and nothing else. Super users (the broker
itself, operators) are configured on the brokers, not here. deploy/KAFKA_SECURITY.md renders the
same table for people; tests/integration/test_kafka_security.py applies it to a real broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from contracts.topics import TOPICS

TOPIC_ADMIN = "gridwhistle-topics"

# Kafka's wire codes (org.apache.kafka.common.resource / acl).
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_PATTERN = {"literal": 3, "prefixed": 4}
_OPERATION = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
_ALLOW = 3


@dataclasses.dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: principal may do operation on a resource (literal name or name prefix), from any host."""

    principal: str
    resource: str  # topic | group | cluster
    name: str
    pattern: str  # literal | prefixed
    operation: str


@dataclasses.dataclass(frozen=True)
class ServiceAccess:
    """What one service principal reads, writes and which consumer groups it joins."""

    service: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    group_prefix: str

    @property
    def username(self) -> str:
        """The SASL username: the service's Kubernetes name (sla-timer), as a Strimzi KafkaUser is named."""
        return self.service.replace("_", "-")

    @property
    def principal(self) -> str:
        """The Kafka principal."""
        return f"User:{self.username}"


def service_access(prefix: str = "") -> list[ServiceAccess]:
    """Every service's access, in a stable order (owners first, then consumer-only services)."""
    services = list(dict.fromkeys([spec.owner for spec in TOPICS] + [c for spec in TOPICS for c in spec.consumers]))
    access = []
    for service in services:
        reads = tuple(prefix + spec.name for spec in TOPICS if service in spec.consumers)
        owned = tuple(prefix + spec.name for spec in TOPICS if spec.owner == service)
        dead_letters = tuple(prefix + spec.dead_letter for spec in TOPICS if service in spec.consumers)
        access.append(
            ServiceAccess(
                service=service,
                reads=reads,
                writes=owned + dead_letters,
                group_prefix=f"{prefix}gridwhistle.{service}.",
            )
        )
    return access


def service_acls(access: ServiceAccess) -> list[Acl]:
    """The ALLOW rules that give one service exactly its access."""
    who = access.principal
    acls = [Acl(who, "topic", topic, "literal", op) for topic in access.reads for op in ("Read", "Describe")]
    acls += [Acl(who, "topic", topic, "literal", op) for topic in access.writes for op in ("Write", "Describe")]
    acls.append(Acl(who, "group", access.group_prefix, "prefixed", "Read"))
    return list(dict.fromkeys(acls))  # closure reads and writes its own topic: one Describe


def topic_admin_acls(prefix: str = "", principal: str = f"User:{TOPIC_ADMIN}") -> list[Acl]:
    """The provisioning job's rules: create and inspect the catalogue's topics (all start with gridwhistle.)."""
    return [Acl(principal, "topic", f"{prefix}gridwhistle.", "prefixed", op) for op in ("Create", "Describe", "DescribeConfigs")]


def all_acls(prefix: str = "") -> list[Acl]:
    """Every rule of a deployment: each service's, then the provisioning job's."""
    return [acl for access in service_access(prefix) for acl in service_acls(access)] + topic_admin_acls(prefix)


async def create_acls(bootstrap: str, acls: list[Acl], security: dict[str, Any]) -> None:
    """Create the rules on a cluster as a principal allowed to (a super user), one CreateAcls request each.

    aiokafka's admin client has no ACL call, so this sends its CreateAcls protocol request itself.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridwhistle-acls", **security)
    await admin.start()

    async def create(acl: Acl) -> list[str]:
        request = CreateAclsRequest(
            _RESOURCE[acl.resource], acl.name, _PATTERN[acl.pattern], acl.principal, "*", _OPERATION[acl.operation], _ALLOW
        )
        response = await admin._send_request(request)  # noqa: SLF001 - no public ACL API in aiokafka
        return [f"{acl}: error {code} {message}" for code, message in response.creation_responses if code]

    try:
        # Each creation waits for a metadata commit; in flight together they share the wait.
        failures = [failure for result in await asyncio.gather(*map(create, acls)) for failure in result]
        if failures:
            raise RuntimeError("could not create ACLs: " + "; ".join(failures))
    finally:
        await admin.close()


# --------------------------------------------------------------------------
# Renderings: the table in deploy/KAFKA_SECURITY.md and Strimzi KafkaUser resources
# --------------------------------------------------------------------------


def markdown_table(prefix: str = "") -> str:
    """The per-service access table (a test keeps deploy/KAFKA_SECURITY.md equal to it)."""
    def names(topics: tuple[str, ...]) -> str:
        return "<br>".join(f"`{t}`" for t in topics) or "none"

    lines = [
        "| service | principal | reads (Read, Describe) | writes (Write, Describe) | consumer groups (Read, prefixed) |",
        "|---|---|---|---|---|",
    ]
    for access in service_access(prefix):
        lines.append(
            f"| {access.service} | `{access.principal}` | {names(access.reads)} | {names(access.writes)} | "
            f"`{access.group_prefix}*` |"
        )
    lines.append(
        f"| topic job | `User:{TOPIC_ADMIN}` | none | none (Create, Describe, DescribeConfigs on "
        f"`{prefix}gridwhistle.*`) | none |"
    )
    return "\n".join(lines)


def strimzi_kafka_users(cluster: str = "gridwhistle-kafka", prefix: str = "") -> list[dict[str, Any]]:
    """One Strimzi KafkaUser (SCRAM-SHA-512, simple authorization) per service and for the topic job."""
    def user(name: str, acls: list[Acl]) -> dict[str, Any]:
        rules: dict[tuple[str, str, str], list[str]] = {}
        for acl in acls:
            operations = rules.setdefault((acl.resource, acl.name, acl.pattern), [])
            if acl.operation not in operations:
                operations.append(acl.operation)
        return {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaUser",
            "metadata": {"name": name, "labels": {"strimzi.io/cluster": cluster}},
            "spec": {
                "authentication": {"type": "scram-sha-512"},
                "authorization": {
                    "type": "simple",
                    "acls": [
                        {
                            "resource": {
                                "type": resource,
                                "name": resource_name,
                                "patternType": "literal" if pattern == "literal" else "prefix",
                            },
                            "operations": operations,
                            "host": "*",
                        }
                        for (resource, resource_name, pattern), operations in rules.items()
                    ],
                },
            },
        }

    users = [user(access.username, service_acls(access)) for access in service_access(prefix)]
    users.append(user(TOPIC_ADMIN, topic_admin_acls(prefix)))
    return users


def main(argv: list[str] | None = None) -> int:
    """Print the ACL table (markdown) or the Strimzi KafkaUser resources (YAML)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.kafka_acls", description=main.__doc__)
    parser.add_argument("--prefix", default="", help="the deployment's topic prefix (GW_TOPIC_PREFIX)")
    parser.add_argument("--cluster", default="gridwhistle-kafka", help="the Strimzi Kafka cluster name")
    parser.add_argument("format", choices=("table", "strimzi"), nargs="?", default="table")
    args = parser.parse_args(argv)
    if args.format == "table":
        print(markdown_table(args.prefix))
    else:
        import yaml

        print(yaml.safe_dump_all(strimzi_kafka_users(args.cluster, args.prefix), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
