"""Local infrastructure for development and tests, without Docker.

Runs the real Apache Kafka broker (official jars fetched from Maven Central)
and a throwaway PostgreSQL cluster (the machine's Debian binaries) as child
processes, creates the topic catalogue, and runs gridwhistle services as OS
processes. Only the standard library is needed at import time, so
``python3 -m infra.local fetch-jars`` works before the venv exists; pyyaml and
aiokafka are imported where they are used.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_DIR = REPO_ROOT / "infra"
TOPIC_CATALOGUE = INFRA_DIR / "topics.yaml"
KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J_CONFIG = INFRA_DIR / "kafka" / "log4j2.xml"
KAFKA_CACHE = REPO_ROOT / ".cache" / "kafka"
DEFAULT_KAFKA_VERSION = os.environ.get("GRIDWHISTLE_KAFKA_VERSION", "4.4.0")
# Pinned so every machine resolves the same plugin (and Maven prints no warning).
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

T = TypeVar("T")


def _say(message: str) -> None:
    print(f"[infra] {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # Logs can be large; a tail never needs more than the last 64 KiB.
            fh.seek(max(0, size - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    # Called from async code (e.g. an async test): nesting loops is not allowed,
    # so the coroutine gets its own loop in a helper thread.
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="infra-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """Signal handler that turns SIGTERM into the same clean shutdown path as Ctrl-C."""
    raise KeyboardInterrupt(f"signal {signum}")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # Children are started in their own session, so pid == pgid and the whole
    # tree (a JVM has no children, a service may) gets the signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM the process group, wait, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        # A paused (SIGSTOPped) process would never act on SIGTERM.
        _signal_group(proc, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    # Reap anything left in the group (a service's own subprocesses).
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode


# --------------------------------------------------------------------------
# Kafka jars
# --------------------------------------------------------------------------


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:16]


def ensure_kafka_jars(version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Return .cache/kafka/<version>/libs, fetching the broker jars with Maven first if needed."""
    home = KAFKA_CACHE / version
    libs = home / "libs"
    marker = home / ".complete"
    # The marker records the pom it was made from, so editing the pom (e.g. a
    # logging dependency) refreshes the cache instead of silently keeping it.
    expected = f"kafka={version} pom={_pom_digest()}\n"

    def complete() -> bool:
        return (
            marker.is_file()
            and marker.read_text() == expected
            and (libs / f"kafka_2.13-{version}.jar").is_file()
        )

    if complete():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        # Two test processes may ask at once; only one runs Maven.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars "
                "(Debian: apt-get install -y maven)"
            )
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log_path = home / "maven.log"
        cmd = [
            mvn, "-B", "-ntp", "-Dstyle.color=never",
            "-f", str(KAFKA_POM),
            f"-Dkafka.version={version}",
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        _say(f"fetching Apache Kafka {version} jars from Maven Central into {libs} "
             f"(first time only; log: {log_path})")
        started = time.monotonic()
        for attempt in (1, 2):
            with open(log_path, "wb") as log:
                result = subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            if result.returncode == 0:
                break
            if attempt == 1:
                # Most failures on a fresh machine are a flaky download; Maven
                # resumes from what it already has in ~/.m2.
                _say(f"Maven failed (exit {result.returncode}); retrying once")
                time.sleep(5)
        if result.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").is_file():
            raise RuntimeError(
                f"Maven could not fetch Kafka {version} (exit {result.returncode}); "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        # Swap in atomically-ish: an interrupted download never looks complete
        # because the marker is written last.
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(expected)
        count = len(list(libs.glob("*.jar")))
        _say(f"Kafka {version}: {count} jars ready in {time.monotonic() - started:.0f}s")
    return libs


# --------------------------------------------------------------------------
# Kafka broker
# --------------------------------------------------------------------------


def _kafka_cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in unpadded URL-safe base64; a
    # leading '-' would be parsed as a command-line flag by the storage tool.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


async def _kafka_answers(bootstrap: str, timeout: float, security: dict[str, Any] | None = None) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="gridwhistle-infra-probe",
        **(security or {}),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        info = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(info.get("brokers")) and info.get("controller_id", -1) != -1
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@dataclasses.dataclass(frozen=True)
class BrokerSecurity:
    """Secured listeners for a LocalKafka: SASL/SCRAM-SHA-512 logins, ACLs by StandardAuthorizer.

    The client listener (LocalKafka.port) becomes SASL_PLAINTEXT; with a keystore, a second
    listener on tls_port speaks SASL_SSL. `users` and the admin get SCRAM-SHA-512 credentials
    when the storage is formatted (so they are fixed for the life of the data dir); the admin is
    the only super user and the broker's own login, everyone else needs ACLs
    (infra/kafka_acls.py). The controller listener authenticates the broker with SASL/PLAIN:
    SCRAM credentials live in the metadata log the controller itself serves.
    """

    users: dict[str, str] = dataclasses.field(default_factory=dict)
    admin_user: str = "admin"
    admin_password: str = "admin-secret"
    keystore: Path | None = None  # PKCS12 with the broker's key and certificate chain
    keystore_password: str = ""
    tls_port: int | None = None

    def __post_init__(self) -> None:
        for name, password in [(self.admin_user, self.admin_password), *self.users.items()]:
            # The credentials go into JAAS lines and the storage tool's [name=…,password=…] syntax.
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or re.search(r'[\s"\\,=\[\]]', password):
                raise ValueError(f"unsupported characters in the credentials of {name!r}")
        if (self.keystore is None) != (self.tls_port is None):
            raise ValueError("a TLS listener needs both keystore and tls_port")

    def client_kwargs(self, user: str | None = None, password: str | None = None) -> dict[str, Any]:
        """aiokafka security kwargs for the SASL_PLAINTEXT listener (the admin by default)."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user or self.admin_user,
            "sasl_plain_password": password if user else self.admin_password,
        }

    def config(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The broker properties that replace LocalKafka's PLAINTEXT listeners."""
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.admin_user}" password="{self.admin_password}";'
        )
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{self.admin_user}" password="{self.admin_password}" '
            f'user_{self.admin_user}="{self.admin_password}";'
        )
        listeners = [f"CLIENT://{host}:{port}"]
        protocols = ["CLIENT:SASL_PLAINTEXT", "CONTROLLER:SASL_PLAINTEXT"]
        config = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config": scram,
            "inter.broker.listener.name": "CLIENT",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.admin_user}",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.keystore is not None:
            listeners.append(f"TLS://{host}:{self.tls_port}")
            protocols.append("TLS:SASL_SSL")
            config.update({
                "listener.name.tls.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.tls.scram-sha-512.sasl.jaas.config": scram,
                "listener.name.tls.ssl.keystore.type": "PKCS12",
                "listener.name.tls.ssl.keystore.location": str(self.keystore),
                "listener.name.tls.ssl.keystore.password": self.keystore_password,
                "listener.name.tls.ssl.client.auth": "none",
            })
        config.update({
            "listeners": ",".join([*listeners, f"CONTROLLER://{host}:{controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protocols),
        })
        return config

    def scram_arguments(self) -> list[str]:
        """StorageTool format arguments that create every SCRAM-SHA-512 credential."""
        arguments: list[str] = []
        for name, password in {self.admin_user: self.admin_password, **self.users}.items():
            arguments += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return arguments


class LocalKafka:
    """A single-node KRaft Kafka (combined broker + controller) running as a child JVM."""

    NODE_ID = 1

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        host: str = "127.0.0.1",
        heap: str = "512m",
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        extra_config: dict[str, str] | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.heap = heap
        self.version = version
        self.extra_config = dict(extra_config or {})
        self.security = security
        self.controller_port: int | None = None
        self._proc: subprocess.Popen | None = None

    # Paths inside data_dir: the log segments live in kraft/, the broker's own
    # logging in server.log, and JVM stdout/stderr (crashes, OOM) in jvm.log.
    @property
    def log_dirs(self) -> Path:
        """Kafka's log.dirs (where partitions and the metadata log live)."""
        return self.data_dir / "kraft"

    @property
    def properties_path(self) -> Path:
        """The generated server.properties."""
        return self.data_dir / "server.properties"

    @property
    def server_log(self) -> Path:
        """The broker's log4j log file."""
        return self.data_dir / "server.log"

    @property
    def jvm_log(self) -> Path:
        """The JVM's stdout/stderr."""
        return self.data_dir / "jvm.log"

    @property
    def pid_file(self) -> Path:
        """Pid of the running JVM, used to reap a broker left behind by a killed run."""
        return self.data_dir / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string, e.g. '127.0.0.1:9092'."""
        return f"{self.host}:{self.port}"

    @property
    def tls_bootstrap(self) -> str | None:
        """The SASL_SSL listener's bootstrap string, when the broker has one."""
        if self.security is None or self.security.tls_port is None:
            return None
        return f"{self.host}:{self.security.tls_port}"

    @property
    def pid(self) -> int | None:
        """Pid of the broker JVM, or None when not started."""
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        """True while the JVM process exists (it may still be starting, or paused)."""
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> dict[str, str]:
        assert self.controller_port is not None
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.NODE_ID),
            # A static voter set keeps the quorum valid when the controller port
            # changes between runs on the same data dir.
            "controller.quorum.voters": f"{self.NODE_ID}@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            # One node: every replication factor and ISR minimum must be 1.
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The defaults (50 partitions each) cost seconds of startup and
            # hundreds of files for no benefit on one node.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            # Consumers in tests must not wait 3 s for the first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            # Two cores: fewer threads than the defaults.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.check.interval.ms": "60000",
        }
        if self.security is not None:
            config.update(self.security.config(self.host, self.port, self.controller_port))
        config.update(self.extra_config)
        return config

    def _write_properties(self) -> None:
        lines = ["# Generated by infra/local.py (LocalKafka); rewritten on every start."]
        lines += [f"{key}={value}" for key, value in self._config().items()]
        self.properties_path.write_text("\n".join(lines) + "\n")

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on PATH; Kafka needs a JDK/JRE 17+ (Debian: openjdk-17-jre-headless)")
        return java

    def _jvm_args(self, libs: Path, heap: str | None = None) -> list[str]:
        heap = heap or self.heap
        return [
            self._java(),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
            "-cp",
            f"{libs}/*",
        ]

    def _format_storage(self, libs: Path) -> None:
        if (self.log_dirs / "meta.properties").is_file():
            return  # already formatted: reuse the existing cluster
        cluster_id = _kafka_cluster_id()
        # The storage tool needs far less heap than the broker.
        cmd = self._jvm_args(libs, heap="128m") + [
            "kafka.tools.StorageTool", "format",
            "--cluster-id", cluster_id,
            "--config", str(self.properties_path),
            "--ignore-formatted",
            *(self.security.scram_arguments() if self.security else []),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka.tools.StorageTool format failed (exit {result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        (self.data_dir / "cluster.id").write_text(cluster_id + "\n")

    def _reap_stale(self) -> None:
        # A broker from a run that was SIGKILLed (so never stopped) still holds
        # the port and the log dir lock; it is ours if its command line names
        # this data dir's server.properties.
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return
        if str(self.properties_path) not in cmdline or "kafka.Kafka" not in cmdline:
            return
        _say(f"killing Kafka JVM {pid} left behind by an earlier run on {self.data_dir}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start(self) -> LocalKafka:
        """Format the data dir if new and launch the broker JVM (does not wait for it)."""
        if self.is_running:
            return self
        libs = ensure_kafka_jars(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._reap_stale()
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"cannot start Kafka on {self.bootstrap}: the port is already in use "
                "(another broker? set KAFKA_BOOTSTRAP_SERVERS to use it, or pick another port)"
            )
        self.controller_port = free_port(self.host)
        while self.controller_port == self.port:
            self.controller_port = free_port(self.host)
        self._write_properties()
        self._format_storage(libs)
        with open(self.jvm_log, "ab") as out:
            self._proc = subprocess.Popen(
                self._jvm_args(libs) + ["kafka.Kafka", str(self.properties_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        # Last line of defence against an orphan JVM if the caller never stops us.
        atexit.register(self._atexit)
        return self

    def _log_tails(self) -> str:
        return (
            f"--- {self.server_log} ---\n{_tail(self.server_log)}\n"
            f"--- {self.jvm_log} ---\n{_tail(self.jvm_log, 15)}"
        )

    def wait_ready(self, timeout: float = 60) -> LocalKafka:
        """Block until the broker answers a metadata request; raise with the log tail if it died."""
        if self._proc is None:
            raise RuntimeError("LocalKafka.wait_ready() called before start()")
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"Kafka exited with code {code} while starting.\n{self._log_tails()}")
            # The cheap TCP check keeps aiokafka from logging connection errors
            # while the JVM is still booting.
            probe = self.security.client_kwargs() if self.security else None
            if port_open(self.host, self.port) and run_sync(lambda: _kafka_answers(self.bootstrap, 5.0, probe)):
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka on {self.bootstrap} not ready after {timeout:.0f}s.\n{self._log_tails()}"
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 20) -> None:
        """Shut the broker down cleanly (SIGTERM), SIGKILL it after timeout seconds."""
        if self._proc is not None:
            _stop_process(self._proc, timeout)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the broker at once (a crash; the data dir stays reusable)."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)
            self._proc.wait()
        self._cleanup()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it keeps its sockets but answers nothing."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused broker (SIGCONT)."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGCONT)

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        if self.is_running:
            self.stop(timeout=10)

    def __enter__(self) -> LocalKafka:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka({self.bootstrap}, data_dir={self.data_dir}, pid={self.pid})"


# --------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalogue (infra/topics.yaml)."""

    name: str
    partitions: int
    retention_ms: int | None = None
    cleanup_policy: str = "delete"

    def configs(self) -> dict[str, str]:
        """Topic-level configs to set at creation."""
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def load_topic_catalogue(catalogue: Path = TOPIC_CATALOGUE) -> list[TopicSpec]:
    """Parse the topic catalogue YAML into TopicSpecs."""
    import yaml

    data = yaml.safe_load(Path(catalogue).read_text()) or {}
    specs = []
    for entry in data.get("topics") or []:
        unknown = set(entry) - {"name", "partitions", "retention_ms", "cleanup_policy"}
        if unknown:
            raise ValueError(f"{catalogue}: unknown keys {sorted(unknown)} for topic {entry.get('name')!r}")
        specs.append(
            TopicSpec(
                name=str(entry["name"]),
                partitions=int(entry["partitions"]),
                retention_ms=None if entry.get("retention_ms") is None else int(entry["retention_ms"]),
                cleanup_policy=str(entry.get("cleanup_policy", "delete")),
            )
        )
    return specs


async def create_topics(
    bootstrap: str,
    catalogue: Path = TOPIC_CATALOGUE,
    prefix: str = "",
    *,
    timeout: float = 60.0,
    security: dict[str, Any] | None = None,
) -> list[str]:
    """Create the catalogue's missing topics (named prefix + name); return all their names, in catalogue order.

    `security` holds aiokafka's security kwargs; without it they come from the shared
    KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_* environment (deploy/KAFKA_SECURITY.md).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    specs = load_topic_catalogue(catalogue)
    names = [prefix + spec.name for spec in specs]
    deadline = time.monotonic() + timeout
    if security is None:
        security = security_from_env()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=30000, client_id="gridwhistle-infra", **security
    )
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        replication = max(1, min(3, len(brokers)))
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=prefix + spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication,
                topic_configs=spec.configs(),
            )
            for spec in specs
            if prefix + spec.name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing, timeout_ms=30000)
            failures = []
            for topic, code, *rest in response.topic_errors:
                # 36 = TOPIC_ALREADY_EXISTS: someone else created it meanwhile.
                if code not in (0, 36):
                    message = rest[0] if rest and rest[0] else for_code(code).__name__
                    failures.append(f"{topic}: {message}")
            if failures:
                raise RuntimeError("could not create topics: " + "; ".join(failures))
        await _wait_for_leaders(admin, specs, prefix, deadline)
    finally:
        await admin.close()
    return names


async def _wait_for_leaders(admin: Any, specs: list[TopicSpec], prefix: str, deadline: float) -> None:
    # CreateTopics returns before every partition has a leader in the broker's
    # metadata; a test that produces right away would otherwise race it.
    wanted = {prefix + spec.name: spec.partitions for spec in specs}
    warned: set[str] = set()
    while True:
        pending = []
        for topic in await admin.describe_topics(list(wanted)):
            name = topic["topic"]
            partitions = topic.get("partitions") or []
            if topic.get("error_code") or not partitions or any(p["leader"] < 0 for p in partitions):
                pending.append(name)
            elif len(partitions) != wanted[name] and name not in warned:
                warned.add(name)
                _say(f"warning: topic {name} has {len(partitions)} partitions, "
                     f"the catalogue says {wanted[name]} (created by something else earlier? "
                     "delete and recreate it, e.g. make clean for the dev stack)")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without a leader: {sorted(pending)}")
        await asyncio.sleep(0.2)


def security_from_env() -> dict[str, Any]:
    """aiokafka security kwargs from the services' shared KAFKA_SECURITY_* environment ({} for PLAINTEXT)."""
    from services.runtime.kafka_security import aiokafka_client_kwargs
    from services.runtime.settings import KafkaClientSettings

    kwargs = aiokafka_client_kwargs(KafkaClientSettings())
    kwargs.pop("bootstrap_servers")
    return kwargs


def create_topics_sync(bootstrap: str, catalogue: Path = TOPIC_CATALOGUE, prefix: str = "") -> list[str]:
    """Blocking wrapper around create_topics()."""
    return run_sync(lambda: create_topics(bootstrap, catalogue, prefix))


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def find_pg_bindir() -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl)."""
    candidates: list[Path] = []
    if os.environ.get("GRIDWHISTLE_PG_BINDIR"):
        candidates.append(Path(os.environ["GRIDWHISTLE_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        # libpq-dev's pg_config alone reports /usr/bin, which has no initdb;
        # hence the check for initdb below rather than trusting it.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; on Debian: apt-get install -y postgresql"
    )


_PG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class LocalPostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) listening on 127.0.0.1 with trust auth."""

    OS_USER = "postgres"
    SUPERUSER = "postgres"

    def __init__(self, data_dir: Path | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
        self._owns_dir = data_dir is None
        self.base_dir = Path(data_dir or tempfile.mkdtemp(prefix="gw-pg-")).resolve()
        self.pgdata = self.base_dir / "pgdata"
        self.log_path = self.base_dir / "postgres.log"
        self.host = host
        self.port = port or free_port(host)
        self.bindir = find_pg_bindir()
        self._running = False

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the 'postgres' maintenance database."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """SQLAlchemy (asyncpg) URL of a database on this server."""
        return f"postgresql+asyncpg://{self.SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def is_running(self) -> bool:
        """True between start() and stop()/kill()."""
        return self._running

    def _as_postgres(self) -> list[str]:
        # PostgreSQL refuses to run as root, so as root every server command
        # runs as the unprivileged 'postgres' user.
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", self.OS_USER, "--"]

    def _ensure_os_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(self.OS_USER)
        except KeyError:
            _say(f"creating system user {self.OS_USER!r} to run PostgreSQL")
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", self.OS_USER],
                check=True,
            )

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self._as_postgres() + args,
            cwd=self.base_dir,  # the postgres user cannot enter root's cwd
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"--- {self.log_path} ---\n{_tail(self.log_path, 20)}"
            )
        return result

    def _initdb(self) -> None:
        self._ensure_os_user()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.OS_USER)
            for path in [self.base_dir, *self.base_dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
            probe = subprocess.run(self._as_postgres() + ["test", "-w", str(self.base_dir)])
            if probe.returncode != 0:
                raise RuntimeError(
                    f"user {self.OS_USER!r} cannot write {self.base_dir}: a parent directory is "
                    "not traversable by it; use a directory under /tmp (or no data_dir)"
                )
        self._run([
            str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", self.SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        ])
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# gridwhistle throwaway test cluster (infra/local.py)\n"
                f"listen_addresses = '{self.host}'\n"
                # No Unix socket: the default directory may not exist or be shared.
                "unix_socket_directories = ''\n"
                # Durability is worthless for a throwaway cluster; speed is not.
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 300\n"
                "timezone = 'UTC'\n"
                "log_timezone = 'UTC'\n"
            )
        (self.pgdata / "pg_hba.conf").write_text(
            "# gridwhistle throwaway test cluster: trust, loopback only\n"
            f"host all all {self.host}/32 trust\n"
        )

    def start(self) -> LocalPostgres:
        """Initialise the cluster if new and start it; returns when it accepts connections."""
        if self._running:
            return self
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb()
        if port_open(self.host, self.port):
            raise RuntimeError(f"cannot start PostgreSQL on {self.host}:{self.port}: port in use")
        self._run([
            str(self.bindir / "pg_ctl"), "start", "-D", str(self.pgdata), "-l", str(self.log_path),
            "-w", "-t", "60", "-o", f"-p {self.port}",
        ])
        self._running = True
        atexit.register(self._atexit)
        return self

    def _pg_ctl_stop(self, mode: str) -> None:
        if not (self.pgdata / "postmaster.pid").is_file():
            return
        self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60"],
                  check=False)

    def stop(self) -> None:
        """Stop the server (fast shutdown); the data stays for a later start()."""
        self._pg_ctl_stop("fast")
        self._running = False
        atexit.unregister(self._atexit)

    def kill(self) -> None:
        """Hard stop (immediate mode, as in a crash): the next start() runs crash recovery."""
        self._pg_ctl_stop("immediate")
        self._running = False
        atexit.unregister(self._atexit)

    def cleanup(self) -> None:
        """Stop the server and delete its directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl_stop("immediate")

    def _psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.SUPERUSER, "-d", database, "-c", sql],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {sql}\n{result.stderr}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database name (if missing) and return its SQLAlchemy URL."""
        if not _PG_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self._psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database name, disconnecting its clients."""
        if not _PG_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"LocalPostgres({self.host}:{self.port}, dir={self.base_dir})"


# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------


class ServiceProcess:
    """One gridwhistle service (python -m services.<name>) running as an OS process."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        port: int,
        log_path: Path,
        *,
        module: str | None = None,
        cwd: Path = REPO_ROOT,
        host: str = "127.0.0.1",
        health_path: str = "/health",
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.port = port
        self.log_path = Path(log_path)
        self.module = module or f"services.{name}"
        self.cwd = Path(cwd)
        self.host = host
        self.health_path = health_path
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base HTTP URL of the service."""
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        """The URL polled by wait_healthy()."""
        return self.url + self.health_path

    @property
    def pid(self) -> int | None:
        """Pid of the service process, or None when not started."""
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        """True while the process exists."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has ended, else None."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the service's log file."""
        return _tail(self.log_path, lines)

    def start(self) -> ServiceProcess:
        """Launch the process (environment = os.environ + env), output appended to log_path."""
        if self.is_running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.module} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        atexit.register(self._atexit)
        return self

    def wait_healthy(self, timeout: float = 60) -> ServiceProcess:
        """Poll the health URL until it answers 200; raise with the log tail if the process exits."""
        if self._proc is None:
            raise RuntimeError(f"{self.name}: wait_healthy() called before start()")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"service {self.name} exited with code {code} before becoming healthy; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                    if resp.status == 200:
                        return self
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"service {self.name} not healthy at {self.health_url} after {timeout:.0f}s ({last}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def terminate(self, timeout: float = 15) -> int | None:
        """SIGTERM the service, SIGKILL it after timeout seconds; return its exit code."""
        atexit.unregister(self._atexit)
        if self._proc is None:
            return None
        return _stop_process(self._proc, timeout)

    def kill(self) -> int | None:
        """SIGKILL the service at once (a crash)."""
        atexit.unregister(self._atexit)
        if self._proc is None:
            return None
        _signal_group(self._proc, signal.SIGKILL)
        return self._proc.wait()

    def _atexit(self) -> None:
        if self.is_running:
            self.terminate(timeout=5)

    def __enter__(self) -> ServiceProcess:
        self.start()
        try:
            return self.wait_healthy()
        except BaseException:
            self.terminate()
            raise

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        return f"ServiceProcess({self.name}, {self.url}, pid={self.pid})"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    """Small CLI: fetch-jars, create-topics, kafka (run a broker in the foreground)."""
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    jars = sub.add_parser("fetch-jars", help="download the Kafka broker jars (idempotent)")
    jars.add_argument("--version", default=DEFAULT_KAFKA_VERSION)
    topics = sub.add_parser("create-topics", help="create the topic catalogue on a cluster")
    topics.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    topics.add_argument("--catalogue", type=Path, default=TOPIC_CATALOGUE)
    topics.add_argument("--prefix", default="")
    kafka = sub.add_parser("kafka", help="run a local broker in the foreground until Ctrl-C")
    kafka.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".run" / "kafka")
    kafka.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.command == "fetch-jars":
        print(ensure_kafka_jars(args.version))
    elif args.command == "create-topics":
        for name in create_topics_sync(args.bootstrap, args.catalogue, args.prefix):
            print(name)
    elif args.command == "kafka":
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        broker = LocalKafka(args.data_dir, port=args.port)
        try:
            broker.start()
            broker.wait_ready()
            _say(f"Kafka ready on {broker.bootstrap}; log {broker.server_log}; Ctrl-C stops it")
            while broker.is_running:
                time.sleep(0.5)
            _say(f"Kafka exited unexpectedly:\n{_tail(broker.server_log)}")
            return 1
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
