"""A private single-node KRaft Kafka broker (broker and controller in one JVM) for tests, demo."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from deploy.local.processes import (
    ServiceError,
    kill_and_wait,
    log_tail,
    port_accepts,
    read_pid,
    spawn,
    stop_process,
    wait_until,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / "kafka" / "libs"
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


class KafkaBroker:
    """One `kafka.Kafka` JVM with its own config, data and log in base_dir."""

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        port: int,
        controller_port: int,
        libs_dir: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port`` (default ``port``) is the port clients are told to connect to,
        for example a test proxy's in front of ``port``."""
        self.base_dir = Path(base_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.advertised_port = advertised_port or port
        self.libs_dir = libs_dir or Path(os.environ.get("KAFKA_LIBS_DIR", DEFAULT_LIBS_DIR))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "kafka.log"

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "kafka.pid"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "server.properties"

    def pid(self) -> int | None:
        """Pid of the running broker of this base_dir, or None."""
        return read_pid(self.pid_path, "kafka.Kafka")

    def start(self, timeout_s: float = 90.0) -> None:
        """Write the config, format storage once, start the JVM (or reuse a running one), wait."""
        if self.pid() is not None:
            self._wait_ready(timeout_s)
            return
        self._check_libs()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage()
        started = time.monotonic()
        self._proc = spawn(self._java_argv("kafka.Kafka", str(self.config_path)), self.log_path)
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self._wait_ready(timeout_s)
        log.info("kafka started port=%d seconds=%.1f", self.port, time.monotonic() - started)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (controlled shutdown) and wait; SIGKILL after timeout_s."""
        if self._proc is not None and self._proc.poll() is not None:
            pid = None  # our child already exited (and is reaped): its pid may be reused
        else:
            pid = self.pid() if self._proc is None else self._proc.pid
        if pid is not None:
            stop_process(pid, self._proc, timeout_s)
        self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the broker, as a crash would, and wait until it has exited."""
        pid = self.pid() if self._proc is None else self._proc.pid
        if pid is not None:
            kill_and_wait(pid, self._proc, timeout_s)
        self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def transactions(self, *args: str) -> str:
        """Run ``kafka-transactions.sh`` (TransactionsCommand) against this broker; its output."""
        argv = self._java_argv("org.apache.kafka.tools.TransactionsCommand",
                               "--bootstrap-server", self.bootstrap, *args)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServiceError(f"kafka-transactions {' '.join(args)} failed:\n"
                               f"{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> None:
        """Create a topic (replication factor 1) unless it exists, and wait until it has leaders."""
        admin = self.admin()
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        try:
            admin.create_topics([topic], operation_timeout=30)[name].result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        if not wait_until(lambda: _has_leaders(admin, name, partitions), 30.0):
            raise ServiceError(f"topic {name} has no leaders 30s after creation")

    def _check_libs(self) -> None:
        if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise ServiceError(
                f"no Kafka jars in {self.libs_dir}; run deploy/local/install.sh (make setup)"
            )

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else "java"
        log4j = f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.properties'}"
        classpath = str(self.libs_dir / "*")
        return [java, *JVM_OPTS, log4j, "-cp", classpath, main_class, *args]

    def _write_config(self) -> None:
        self.config_path.write_text(_server_properties(self))
        (self.base_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _format_storage(self) -> None:
        """Format log.dirs once as a one-voter KRaft cluster with a random cluster id."""
        if (self.data_dir / "meta.properties").exists():
            return
        argv = self._java_argv(
            "kafka.tools.StorageTool", "format", "--cluster-id", random_cluster_id(),
            "--config", str(self.config_path), "--standalone",
        )  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServiceError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def _wait_ready(self, timeout_s: float) -> None:
        if not wait_until(self._lists_metadata, timeout_s):
            self.stop(timeout_s=10)
            raise ServiceError(
                f"kafka on port {self.port} not ready after {timeout_s:.0f}s; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _lists_metadata(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServiceError(
                f"kafka exited with code {self._proc.returncode}; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        # Probe TCP first: an AdminClient on a closed port logs connection errors to stderr.
        if not port_accepts(self.host, self.port):
            return False
        try:
            return bool(self.admin().list_topics(timeout=2).brokers)
        except KafkaException:
            return False


def _has_leaders(admin: AdminClient, name: str, partitions: int) -> bool:
    topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
    if topic is None or topic.error is not None or len(topic.partitions) < partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())


def _server_properties(broker: KafkaBroker) -> str:
    host = broker.host
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{broker.controller_port}",
        "listeners": f"PLAINTEXT://{host}:{broker.port},CONTROLLER://{host}:{broker.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{broker.advertised_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(broker.data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",  # default 50: slow first consumer group on 2 cores
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def random_cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID), like Kafka's own never starting with "-":
    the storage tool would take such an id for an option (1 start in 64 failed that way)."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] \
            == "-":
        pass
    return cluster_id
