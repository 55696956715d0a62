"""Fetch and cache the Apache Kafka broker jars from Maven Central with Maven.

The jars of ``org.apache.kafka:kafka_2.13`` and a log4j2 backend are copied into
``<cache>/kafka-<version>/libs``. A ``.complete`` marker is written last, so a fetch that
was interrupted is redone, and an exclusive file lock keeps two processes (e.g. two
pytest sessions) from fetching into the same directory at once.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_KAFKA_VERSION = "4.1.2"
# The broker logs through slf4j; Kafka's own pom pins slf4j-api 1.7, which cannot find
# the slf4j 2 binding, so the API is pinned to 2.x here alongside the log4j2 binding.
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"
# Pinned: without a version Maven 3.8 falls back to the 2014 plugin 2.8.
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER = ".complete"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAVEN_TIMEOUT_SECONDS = 600.0


class KafkaJarFetchError(RuntimeError):
    """Maven could not fetch the Kafka jars (offline, Central unreachable, no ``mvn``)."""


def cache_root() -> Path:
    """``$MLWATCHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlwatcher``, else ``~/.cache/mlwatcher``."""
    explicit = os.environ.get("MLWATCHER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mlwatcher"


def kafka_version() -> str:
    """Kafka version to run: ``$MLWATCHER_KAFKA_VERSION`` or :data:`DEFAULT_KAFKA_VERSION`."""
    return os.environ.get("MLWATCHER_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION


def kafka_libs_dir(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}" / "libs"


def is_cached(version: str | None = None) -> bool:
    return (kafka_libs_dir(version) / _MARKER).is_file()


def _pom(version: str) -> str:
    dependencies = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),
    ]
    rendered = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mlwatcher.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{rendered}
  </dependencies>
</project>
"""


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_errors(output: str) -> str:
    """Maven's specific [ERROR] lines, without its generic 'how to debug' advice."""
    generic = ("re-run maven", "to see the full stack trace", "for more information", "[help 1]")
    output = _ANSI_ESCAPE.sub("", output)
    errors = [
        line.removeprefix("[ERROR]").strip()
        for line in output.splitlines()
        if line.startswith("[ERROR]")
    ]
    specific = [line for line in errors if line and not line.lower().startswith(generic)]
    return "\n".join(specific[:5]) or output.strip()[-2000:]


def ensure_kafka_jars(version: str | None = None) -> Path:
    """Return the directory holding the broker's jars, fetching them first if needed.

    Raises :class:`KafkaJarFetchError` with Maven's output when the fetch fails.
    """
    version = version or kafka_version()
    libs = kafka_libs_dir(version)
    if (libs / _MARKER).is_file():
        return libs
    with _exclusive_lock(libs.parent / ".fetch.lock"):
        if (libs / _MARKER).is_file():  # another process fetched while we waited
            return libs
        _fetch(version, libs)
    return libs


def _fetch(version: str, libs: Path) -> None:
    maven = shutil.which("mvn")
    if maven is None:
        raise KafkaJarFetchError(
            "Maven ('mvn') is not on PATH; install it (e.g. apt-get install maven) or set "
            "MLWATCHER_BOOTSTRAP_SERVERS to use an existing Kafka cluster"
        )
    project_dir = libs.parent
    (project_dir / "pom.xml").write_text(_pom(version))
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=project_dir))
    command = [
        maven,
        "-q",
        "-B",
        "-Dstyle.color=never",
        # Retry even if an earlier failure (e.g. offline) was cached in ~/.m2.
        "-U",
        "-f",
        str(project_dir / "pom.xml"),
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaJarFetchError(
            f"Maven did not finish fetching Kafka {version} within "
            f"{_MAVEN_TIMEOUT_SECONDS:.0f} s (is Maven Central reachable?)"
        ) from error
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaJarFetchError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} (exit code "
            f"{result.returncode}): {_maven_errors(result.stdout + result.stderr)}"
        )
    (staging / _MARKER).write_text(f"org.apache.kafka:kafka_2.13:{version}\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
