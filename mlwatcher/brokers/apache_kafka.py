"""A single-node Apache Kafka 4.x (KRaft, broker + controller) on loopback.

The broker runs from the Maven Central jars fetched by :mod:`.kafka_jars`; Java 17+ is
required. Settings favour a fast, disposable test node: replication factor 1 for all
internal topics, no initial rebalance delay, no topic auto-creation, a small heap and
JVM flags that cut startup time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlwatcher.brokers._process import BrokerError, ManagedBroker, free_port, log_tail
from mlwatcher.brokers.kafka_jars import ensure_kafka_jars, kafka_version

# Measured on a 2-core machine (see docs/brokers.md): SerialGC and the C1-only JIT start
# the broker faster than the default G1 + tiered C2, and a test node never runs long
# enough for C2 to pay off.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
)

_NODE_ID = 1

_LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""

FAST_TEST_SETTINGS: Mapping[str, str] = {
    "offsets.topic.replication.factor": "1",
    # Fewer offset partitions: creating 50 on a cold node costs a visible second.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    # After a SIGKILL the controller keeps the dead incarnation registered until its
    # session expires (9 s by default); the restarted broker waits for that. 3 s keeps a
    # crash-restart quick while leaving room for a busy 2-core machine.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: URL-safe base64 of 16 bytes without padding; Kafka itself
    # avoids a leading '-' because command lines would read it as an option.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "Java (17 or newer) is needed to run Apache Kafka and 'java' is not on PATH "
            "(nor in $JAVA_HOME); install a JDK, or use TansuBroker"
        )
    return found


class ApacheKafkaBroker(ManagedBroker):
    """Single-node Apache Kafka in KRaft combined mode.

    Args:
        version: Kafka version (default ``$MLWATCHER_KAFKA_VERSION`` or 4.1.2).
        log_dir: Kafka data directory. ``None`` uses a temporary one removed by
            ``close()``; a given directory is kept, formatted only on first use, so a new
            broker object (or ``restart()``) finds the same topics and messages.
        port: client port (a free one by default); the controller gets its own port.
        extra_settings: server.properties entries overriding the fast test defaults.
        jvm_options: replaces :data:`DEFAULT_JVM_OPTIONS`.
        log_level: log4j level of ``server.log`` in the work directory.
        class_data_sharing: reuse a JVM class archive (AppCDS) kept next to the cached
            jars; it halves the startup time. The first broker that stops gracefully
            without one writes it.
    """

    kind = "kafka"

    def __init__(
        self,
        *,
        version: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        extra_settings: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] | None = None,
        log_level: str = "INFO",
        class_data_sharing: bool = True,
        startup_timeout: float = 90.0,
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(
            port=port, startup_timeout=startup_timeout, die_with_parent=die_with_parent
        )
        self.version = version or kafka_version()
        self.controller_port = controller_port or free_port(self.host)
        self._owns_log_dir = log_dir is None
        self._log_dir = None if log_dir is None else Path(log_dir).expanduser().resolve()
        self.extra_settings = dict(extra_settings or {})
        self.jvm_options = tuple(jvm_options) if jvm_options is not None else DEFAULT_JVM_OPTIONS
        self.log_level = log_level
        self.class_data_sharing = class_data_sharing
        self._libs: Path | None = None
        self._archive_in_progress: Path | None = None

    @property
    def log_dir(self) -> Path:
        """Kafka's data directory (a temporary one is made on first use)."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="mlwatcher-kafka-data-"))
        return self._log_dir

    @property
    def log_file(self) -> Path:
        return self.work_dir / "server.log"

    @property
    def properties_file(self) -> Path:
        return self.work_dir / "server.properties"

    def settings(self) -> dict[str, str]:
        """The server.properties this broker runs with."""
        listener = f"PLAINTEXT://{self.host}:{self.port}"
        controller = f"CONTROLLER://{self.host}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{self.host}:{self.controller_port}",
            "listeners": f"{listener},{controller}",
            "advertised.listeners": listener,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            **FAST_TEST_SETTINGS,
        }
        settings.update(self.extra_settings)
        return settings

    def fetch(self) -> Path:
        """Make sure the jars are cached (downloading with Maven if not); return their dir."""
        if self._libs is None:
            self._libs = ensure_kafka_jars(self.version)
        return self._libs

    # --------------------------------------------------------------------- hooks
    def _prepare(self) -> None:
        self.fetch()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(
            "".join(f"{key}={value}\n" for key, value in self.settings().items())
        )
        log4j = self.work_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2_CONFIG.format(log_file=self.log_file, level=self.log_level))
        if not (self.log_dir / "meta.properties").is_file():
            self._format_storage()

    def _class_archive(self) -> Path:
        # A dynamic CDS archive only fits the exact JVM build and class path it was
        # made with; key it on both so a JDK upgrade simply makes a new one.
        assert self._libs is not None
        java = Path(_java()).resolve()
        stat = java.stat()
        identity = f"{java}:{stat.st_size}:{stat.st_mtime_ns}:{self._libs}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return self._libs.parent / f"classes-{digest}.jsa"

    def _archive_options(self, *, may_create: bool) -> list[str]:
        if not self.class_data_sharing:
            return []
        archive = self._class_archive()
        if archive.is_file():
            # A stale or foreign archive is only a warning: the JVM then loads normally.
            return [f"-XX:SharedArchiveFile={archive}"]
        if not may_create:
            return []
        self._archive_in_progress = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
        return [f"-XX:ArchiveClassesAtExit={self._archive_in_progress}"]

    def _after_exit(self, returncode: int) -> None:
        pending, self._archive_in_progress = self._archive_in_progress, None
        if pending is None:
            return
        if pending.is_file() and pending.stat().st_size > 0:
            # Atomic: a concurrent broker either sees the whole archive or none.
            pending.replace(self._class_archive())
        else:
            pending.unlink(missing_ok=True)

    def _java_command(self, main_class: str, *args: str, may_create_archive: bool) -> list[str]:
        assert self._libs is not None
        return [
            _java(),
            *self.jvm_options,
            *self._archive_options(may_create=may_create_archive),
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            f"{self._libs}/*",
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        command = self._java_command(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _new_cluster_id(),
            "--config",
            str(self.properties_file),
            may_create_archive=False,
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=self.work_dir
        )
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the Kafka log dir {self.log_dir} failed (exit code "
                f"{result.returncode}):\n{(result.stdout + result.stderr).strip()[-3000:]}\n"
                f"server.log tail:\n{log_tail(self.log_file)}"
            )

    def _command(self) -> Sequence[str]:
        return self._java_command("kafka.Kafka", str(self.properties_file), may_create_archive=True)

    def _remove_temporary_files(self) -> None:
        super()._remove_temporary_files()
        if self._owns_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
