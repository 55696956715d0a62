"""Worker settings: the window policy (pure) and the process settings (topics, web, Kafka)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlwatcher.config import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_METRICS_TOPIC,
    DEFAULT_PREDICTIONS_TOPIC,
    parse_duration_ms,
    parse_kafka_options,
)

DEFAULT_GRACE_RATIO = 0.2
DEFAULT_GRACE_MIN_MS = 1_000
DEFAULT_GRACE_MAX_MS = 300_000
DEFAULT_IDLE_CLOSE_DELAY_MS = 1_000
DEFAULT_EMPTY_WINDOW_LIMIT = 10
DEFAULT_LABEL_TTL_MS = 86_400_000  # one day
DEFAULT_MAX_PENDING_LABELS = 200_000  # rows per agent: ~13 MB at 10 classes
DEFAULT_LABEL_REVISION_INTERVAL_MS = 60_000


@dataclass(frozen=True)
class WindowPolicy:
    """When windows close and which batches count as late.

    ``grace_ms=None`` means 20% of each agent's window, clamped to [1 s, 5 min]: a one-minute
    window waits 12 s for stragglers, a one-hour window 5 min. A window closes when the agent's
    stream time (max event time seen) reaches end + grace, or, for an agent that went quiet,
    when the worker's clock reaches end + grace + ``idle_close_delay_ms``.

    Delayed labels (:mod:`mlwatcher.stream_app.labels`): prediction rows with ids wait for
    their label ``label_ttl_ms`` of the agent's stream time, at most ``max_pending_labels``
    rows per agent (the oldest batches expire first); a closed window that got new labels is
    revised at most once per ``label_revision_interval_ms``.
    """

    grace_ms: int | None = None
    grace_ratio: float = DEFAULT_GRACE_RATIO
    grace_min_ms: int = DEFAULT_GRACE_MIN_MS
    grace_max_ms: int = DEFAULT_GRACE_MAX_MS
    idle_close_delay_ms: int = DEFAULT_IDLE_CLOSE_DELAY_MS
    empty_window_limit: int = DEFAULT_EMPTY_WINDOW_LIMIT
    label_ttl_ms: int = DEFAULT_LABEL_TTL_MS
    max_pending_labels: int = DEFAULT_MAX_PENDING_LABELS
    label_revision_interval_ms: int = DEFAULT_LABEL_REVISION_INTERVAL_MS

    def __post_init__(self) -> None:
        if self.grace_ms is not None and self.grace_ms < 0:
            raise ValueError(f"grace_ms: must be >= 0, got {self.grace_ms}")
        if not 0 <= self.grace_ratio <= 10:
            raise ValueError(f"grace_ratio: must be in [0, 10], got {self.grace_ratio}")
        if self.idle_close_delay_ms < 0:
            raise ValueError(f"idle_close_delay_ms: must be >= 0, got {self.idle_close_delay_ms}")
        if self.empty_window_limit < 0:
            raise ValueError(f"empty_window_limit: must be >= 0, got {self.empty_window_limit}")
        if self.label_ttl_ms <= 0:
            raise ValueError(f"label_ttl_ms: must be > 0, got {self.label_ttl_ms}")
        if self.max_pending_labels < 0:
            raise ValueError(f"max_pending_labels: must be >= 0, got {self.max_pending_labels}")
        if self.label_revision_interval_ms < 0:
            raise ValueError(
                f"label_revision_interval_ms: must be >= 0, got {self.label_revision_interval_ms}"
            )

    def grace_for(self, window_ms: int) -> int:
        if self.grace_ms is not None:
            return self.grace_ms
        share = round(window_ms * self.grace_ratio)
        return max(self.grace_min_ms, min(self.grace_max_ms, share))


@dataclass(frozen=True)
class WorkerSettings:
    """Everything one worker process needs; built by the CLI or from ``MLWATCHER_*`` env vars."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    predictions_topic: str = DEFAULT_PREDICTIONS_TOPIC
    metrics_topic: str = DEFAULT_METRICS_TOPIC
    dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC
    app_id: str = "mlwatcher-worker"
    partitions: int = 6
    policy: WindowPolicy = field(default_factory=WindowPolicy)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    references: Mapping[str, str] = field(default_factory=dict)  # agent_id -> profile path
    tick_interval_s: float = 0.25
    session_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    commit_interval_s: float = 1.0
    stall_timeout_s: float = 20.0
    kafka_options: Mapping[str, str] = field(default_factory=dict)
    create_topics: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Settings from ``MLWATCHER_*`` variables (what ``faust -A mlwatcher.stream_app.app``
        uses). Variable names are the ``mlwatcher worker`` flags in upper case."""
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(f"MLWATCHER_{name}", default)

        grace = get("GRACE_MS", "")
        references = parse_references(get("REFERENCES", "").split())
        return cls(
            bootstrap_servers=get("BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP_SERVERS),
            predictions_topic=get("PREDICTIONS_TOPIC", DEFAULT_PREDICTIONS_TOPIC),
            metrics_topic=get("METRICS_TOPIC", DEFAULT_METRICS_TOPIC),
            dead_letter_topic=get("DEAD_LETTER_TOPIC", DEFAULT_DEAD_LETTER_TOPIC),
            app_id=get("APP_ID", "mlwatcher-worker"),
            partitions=_int(get("PARTITIONS", "6"), "MLWATCHER_PARTITIONS"),
            policy=WindowPolicy(
                grace_ms=_int(grace, "MLWATCHER_GRACE_MS") if grace else None,
                idle_close_delay_ms=_int(
                    get("IDLE_CLOSE_DELAY_MS", str(DEFAULT_IDLE_CLOSE_DELAY_MS)),
                    "MLWATCHER_IDLE_CLOSE_DELAY_MS",
                ),
                empty_window_limit=_int(
                    get("EMPTY_WINDOW_LIMIT", str(DEFAULT_EMPTY_WINDOW_LIMIT)),
                    "MLWATCHER_EMPTY_WINDOW_LIMIT",
                ),
                label_ttl_ms=_duration(get("LABEL_TTL", "24h"), "MLWATCHER_LABEL_TTL"),
                max_pending_labels=_int(
                    get("MAX_PENDING_LABELS", str(DEFAULT_MAX_PENDING_LABELS)),
                    "MLWATCHER_MAX_PENDING_LABELS",
                ),
                label_revision_interval_ms=_duration(
                    get("LABEL_REVISION_INTERVAL", "60s"), "MLWATCHER_LABEL_REVISION_INTERVAL"
                ),
            ),
            web_host=get("WEB_HOST", "127.0.0.1"),
            web_port=_int(get("WEB_PORT", "6066"), "MLWATCHER_WEB_PORT"),
            references=references,
            stall_timeout_s=float(get("STALL_TIMEOUT", "20")),
            # Same format as the CLI's env var: space-separated KEY=VALUE librdkafka options.
            kafka_options=parse_kafka_options(get("KAFKA_OPTIONS", "").split()),
        )


def parse_references(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``AGENT=PATH`` pairs into a mapping; ValueError names the bad pair."""
    result: dict[str, str] = {}
    for pair in pairs:
        agent, sep, path = pair.partition("=")
        if not sep or not agent or not path:
            raise ValueError(f"reference: expected AGENT=PATH, got {pair!r}")
        result[agent] = path
    return result


def _duration(text: str, name: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None
