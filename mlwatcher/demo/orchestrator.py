"""``mlwatcher demo`` end to end: broker, topics, worker, sinks, traffic, report.

Timing. Each agent's batches carry simulated event times that run ``speed`` times faster than
the wall clock and start ``startup_margin_s`` ahead of it. Windows then close on stream time
(the agent's own batches move it past end + grace), never on the worker's wall-clock rule for
quiet agents, which only fires once the wall clock passes a window's end: with event time
ahead of the wall clock, a backlog read after a slow worker start is never split by an early
close. After the last scenario batch, each agent sends one closing batch just past the last
window's grace period so that window closes too (the closing batch's own window stays open).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np
import pyarrow.dataset as ds

from mlwatcher.demo import offline
from mlwatcher.demo.processes import ChildProcess, DemoProcessError, wait_for
from mlwatcher.demo.scenarios import (
    AGENTS,
    NEVER,
    DemoBatch,
    DigitsModels,
    Timeline,
    generate_traffic,
    train_models,
)
from mlwatcher.report.data import hive_partitioning

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class DemoSettings:
    """What ``mlwatcher demo`` runs; the CLI's flags map onto these fields."""

    output_dir: Path
    duration_s: float = 300.0  # simulated seconds of traffic
    window_s: float = 5.0
    speed: float = 5.0  # simulated seconds per wall-clock second
    seed: int = 0
    bootstrap_servers: str | None = None  # None: start the embedded Tansu broker
    kafka_options: dict[str, str] = field(default_factory=dict)
    anodot_url: str | None = None
    anodot_token: str | None = None
    partitions: int = 3
    max_buffer_size: int = 500
    startup_margin_s: float = 120.0
    startup_timeout_s: float = 120.0
    settle_timeout_s: float = 90.0
    progress_interval_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.window_s >= 1:
            raise ValueError(f"window: must be >= 1 s, got {self.window_s!r}")
        if not self.duration_s >= 4 * self.window_s:
            raise ValueError(
                f"duration: must cover at least 4 windows ({4 * self.window_s:g} s), "
                f"got {self.duration_s!r}"
            )
        if not self.speed >= 1:
            raise ValueError(
                f"speed: must be >= 1 (event time ahead of the clock), got {self.speed}"
            )

    @property
    def n_windows(self) -> int:
        return int(self.duration_s // self.window_s)

    @property
    def grace_ms(self) -> int:
        return max(1000, round(self.window_s * 200))  # 20 % of the window, at least 1 s


@dataclass
class DemoResult:
    output_dir: Path
    parquet_dir: Path
    report_html: Path | None
    timeline: Timeline
    rows_sent: int
    batches_sent: int
    windows_written: int
    worker_stats: dict[str, float]


class _Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same clean shutdown as Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SimulatedClock:
    """The ``clock`` of one MonitoringAgent: returns the event time of the batch being sent."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def run_offline(
    settings: DemoSettings, echo: Echo = print, *, make_report: bool = True
) -> DemoResult:
    """The demo's metrics without Kafka: ``compute_metrics`` per window, then the report."""
    from mlwatcher.report.render import build_report

    models, timeline = _prepare(settings, start=time.time(), echo=echo)
    traffic = list(generate_traffic(models, timeline, settings.seed))
    parquet_dir = settings.output_dir / "parquet"
    reference = offline.reference_profile(models)
    windows = offline.window_metrics(traffic, timeline, models, reference)
    offline.write_metrics_dataset(windows, parquet_dir)
    echo(f"computed {len(windows)} windows offline into {parquet_dir}")
    html_path = None
    if make_report:
        html_path = build_report(
            parquet_dir, settings.output_dir / "report", dict.fromkeys(AGENTS, reference)
        ).html_path
        echo(f"report: {html_path}")
    return DemoResult(
        settings.output_dir,
        parquet_dir,
        html_path,
        timeline,
        sum(b.n_rows for b in traffic),
        len(traffic),
        len(windows),
        {},
    )


def run_demo(settings: DemoSettings, echo: Echo = print, *, make_report: bool = True) -> DemoResult:
    """Run the whole pipeline on a broker; every process started here is stopped on return."""
    with _sigterm_as_interrupt(), _DemoRun(settings, echo) as run:
        return run.execute(make_report)


class _DemoRun:
    def __init__(self, settings: DemoSettings, echo: Echo) -> None:
        self.settings = settings
        self.echo = echo
        self.run_id = uuid.uuid4().hex[:8]
        self.output = settings.output_dir
        self.parquet_dir = self.output / "parquet"
        self.log_dir = self.output / "logs"
        self.broker: object | None = None
        self.children: list[ChildProcess] = []
        self.agents: dict[str, object] = {}
        self.web_port = 0
        self.labels_sent = 0
        self.topics = {
            "predictions": f"mlwatcher-demo-{self.run_id}.predictions",
            "metrics": f"mlwatcher-demo-{self.run_id}.metrics",
            "dead_letter": f"mlwatcher-demo-{self.run_id}.dead-letter",
        }

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> _DemoRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if interrupted:
            self.echo("interrupted: stopping every process the demo started ...")
        self._shutdown(quick=exc_type is not None)

    def _shutdown(self, *, quick: bool) -> None:
        for agent in self.agents.values():
            with contextlib.suppress(Exception):
                agent.close(timeout=2.0 if quick else 15.0)  # type: ignore[attr-defined]
        self.agents.clear()
        # Worker first (it commits offsets and flushes its last records), then the sinks.
        for child in self.children:
            code = child.stop(timeout=15.0 if quick else 30.0)
            self.echo(f"stopped {child.name} (exit code {code})")
        self.children.clear()
        if self.broker is not None:
            self.broker.close()  # type: ignore[attr-defined]
            self.echo("stopped the embedded Tansu broker")
            self.broker = None

    # -- steps ---------------------------------------------------------------------------
    def execute(self, make_report: bool) -> DemoResult:
        settings = self.settings
        start = time.time() + settings.startup_margin_s
        models, timeline = _prepare(settings, start=start, echo=self.echo)
        reference_path = self.output / "reference.npz"
        reference = offline.reference_profile(models)
        reference.save(reference_path)
        bootstrap = self._start_broker()
        self._create_topics(bootstrap)
        self._start_worker(bootstrap, reference_path)
        self._start_sinks(bootstrap)
        self._wait_for_worker()
        rows, batches = self._send_traffic(models, timeline, bootstrap)
        written = self._wait_for_windows(timeline)
        self._wait_for_labels()
        stats = self._worker_stats()
        self._shutdown(quick=False)
        report_html = None
        if make_report:
            from mlwatcher.report.render import build_report

            report = build_report(
                self.parquet_dir, self.output / "report", dict.fromkeys(AGENTS, reference)
            )
            report_html = report.html_path
            self.echo(f"report: {report_html} ({len(report.images)} charts)")
        return DemoResult(
            self.output, self.parquet_dir, report_html, timeline, rows, batches, written, stats
        )

    def _start_broker(self) -> str:
        if self.settings.bootstrap_servers:
            from mlwatcher.kafka_admin import wait_for_broker

            wait_for_broker(
                self.settings.bootstrap_servers,
                timeout=30.0,
                client_config=self.settings.kafka_options,
            )
            self.echo(f"using the Kafka cluster at {self.settings.bootstrap_servers}")
            return self.settings.bootstrap_servers
        from mlwatcher.brokers import TansuBroker

        broker = TansuBroker()
        self.broker = broker
        broker.start()
        self.echo(f"started the embedded Tansu broker on {broker.bootstrap_servers}")
        return broker.bootstrap_servers

    def _create_topics(self, bootstrap: str) -> None:
        from mlwatcher.kafka_admin import create_topics

        partitions = self.settings.partitions
        create_topics(
            bootstrap,
            {
                self.topics["predictions"]: partitions,
                self.topics["metrics"]: partitions,
                self.topics["dead_letter"]: 1,
            },
            client_config=self.settings.kafka_options,
        )
        self.echo(f"created topics {', '.join(self.topics.values())}")

    def _kafka_args(self, bootstrap: str, *, predictions: bool = False) -> list[str]:
        """The shared Kafka flags; the predictions topic only for the worker (sinks have none)."""
        args = ["--bootstrap-servers", bootstrap]
        if predictions:
            args += ["--predictions-topic", self.topics["predictions"]]
        args += [
            "--metrics-topic",
            self.topics["metrics"],
            "--dead-letter-topic",
            self.topics["dead_letter"],
        ]
        for key, value in self.settings.kafka_options.items():
            args += ["--kafka-option", f"{key}={value}"]
        return args

    def _start_worker(self, bootstrap: str, reference_path: Path) -> None:
        from mlwatcher.brokers import free_port

        self.web_port = free_port()
        args = [
            "worker",
            *self._kafka_args(bootstrap, predictions=True),
            "--app-id",
            f"mlwatcher-demo-{self.run_id}",
            "--partitions",
            str(self.settings.partitions),
            "--grace-ms",
            str(self.settings.grace_ms),
            "--web-port",
            str(self.web_port),
            # labels come once per window: half a window lets every label batch revise
            "--label-revision-interval",
            f"{self.settings.window_s / 2:g}s",
        ]
        for agent in AGENTS:
            args += ["--reference", f"{agent}={reference_path}"]
        self._spawn("worker", args)

    def _start_sinks(self, bootstrap: str) -> None:
        self._spawn(
            "sink-parquet",
            [
                "sink",
                "parquet",
                *self._kafka_args(bootstrap),
                "--output",
                str(self.parquet_dir),
                "--group-id",
                f"mlwatcher-demo-{self.run_id}-parquet",
                "--roll-seconds",
                "1",
            ],
        )
        if self.settings.anodot_token:
            args = ["sink", "anodot", *self._kafka_args(bootstrap)]
            args += ["--group-id", f"mlwatcher-demo-{self.run_id}-anodot"]
            if self.settings.anodot_url:
                args += ["--base-url", self.settings.anodot_url]
            # the token travels in the environment, never on a command line (ps shows those)
            self._spawn("sink-anodot", args, {"MLWATCHER_ANODOT_TOKEN": self.settings.anodot_token})

    def _spawn(self, name: str, args: list[str], environment: dict[str, str] | None = None) -> None:
        child = ChildProcess(name, args, self.log_dir).start(environment)
        self.children.append(child)
        self.echo(f"started {name} (pid {child.pid}, log {child.log_path})")

    def _check_children(self) -> None:
        for child in self.children:
            child.check_running()

    def _wait_for_worker(self) -> None:
        began = time.monotonic()

        def ready() -> bool:
            self._check_children()
            return _http_status(f"http://127.0.0.1:{self.web_port}/health") == 200

        self.echo("waiting for the worker to join its consumer group ...")
        wait_for(ready, self.settings.startup_timeout_s, "the worker's /health to answer ok", 0.5)
        self.echo(f"worker ready after {time.monotonic() - began:.1f} s")

    def _send_traffic(
        self, models: DigitsModels, timeline: Timeline, bootstrap: str
    ) -> tuple[int, int]:
        from mlwatcher.producer import MonitoringAgent

        settings = self.settings
        clocks = {agent: SimulatedClock(timeline.start_time) for agent in AGENTS}
        for agent in AGENTS:
            self.agents[agent] = MonitoringAgent(
                frequency=settings.window_s / 60,
                max_buffer_size=settings.max_buffer_size,
                n_classes=len(models.class_names),
                agent_id=agent,
                bootstrap_servers=bootstrap,
                topic=self.topics["predictions"],
                kafka_config=settings.kafka_options,
                class_names=list(models.class_names),
                feature_names=list(models.feature_names),
                clock=clocks[agent],
            )
        self.echo(
            f"sending {settings.duration_s:g} s of simulated traffic ({timeline.n_windows} "
            f"windows of {settings.window_s:g} s) at {settings.speed:g}x: about "
            f"{settings.duration_s / settings.speed:.0f} s; anomaly in windows "
            f"{timeline.anomaly_start_window}-{timeline.anomaly_end_window - 1}"
        )
        wall_start = time.monotonic()
        rows = batches = 0
        next_progress = wall_start + settings.progress_interval_s
        labels = _LabelSchedule()
        for batch in generate_traffic(models, timeline, settings.seed):
            due = wall_start + (batch.event_time - timeline.start_time) / settings.speed
            while (pause := due - time.monotonic()) > 0:
                time.sleep(min(pause, 0.5))
            self._send_labels(labels.due(timeline, batch.event_time), clocks)
            self._send(clocks[batch.agent_id], batch)
            labels.add(batch)
            rows += batch.n_rows
            batches += 1
            if time.monotonic() >= next_progress:
                self._check_children()
                self._progress(timeline, batch.event_time, rows)
                next_progress += settings.progress_interval_s
        closing_time = self._send_closing_batches(models, timeline, clocks)
        # The labels still owed, one window apart after the last window closed.
        for k, (_, sends) in enumerate(labels.rest()):
            for send in sends:
                send.at = closing_time + (k + 1) * timeline.window_seconds
            self._send_labels(sends, clocks)
        for agent in self.agents.values():
            agent.flush(30.0)  # type: ignore[attr-defined]
        self.labels_sent = labels.sent
        self.echo(
            f"traffic done: {rows} rows in {batches} batches; {labels.sent} labels sent "
            f"1-3 windows after their predictions, {labels.never} never"
        )
        return rows, batches

    def _send_labels(self, sends: list[_LabelSend], clocks: dict[str, SimulatedClock]) -> None:
        for send in sends:
            clocks[send.agent_id].now = send.at
            self.agents[send.agent_id].collect_labels(  # type: ignore[attr-defined]
                send.prediction_ids, send.labels
            )

    def _send(self, clock: SimulatedClock, batch: DemoBatch) -> None:
        clock.now = batch.event_time
        self.agents[batch.agent_id].collect_data(  # type: ignore[attr-defined]
            batch.probabilities,
            batch.features,
            prediction_ids=list(batch.prediction_ids) or None,
        )

    def _send_closing_batches(
        self, models: DigitsModels, timeline: Timeline, clocks: dict[str, SimulatedClock]
    ) -> float:
        # Moves each agent's stream time past the last window's end + grace.
        event_time = timeline.end_time + 2 * self.settings.grace_ms / 1000
        pixels = models.traffic_inputs[:1]
        for agent in AGENTS:
            closing = DemoBatch(
                agent_id=agent,
                event_time=event_time,
                phase="closing",
                probabilities=models.predict_proba(models.good, pixels),
                features=pixels,
                labels=models.traffic_labels[:1],
            )
            self._send(clocks[agent], closing)
        return event_time

    def _progress(self, timeline: Timeline, event_time: float, rows: int) -> None:
        index = min(timeline.window_index(event_time), timeline.n_windows - 1)
        stats = self._worker_stats()
        written = len(self._windows_written())
        self.echo(
            f"  window {index + 1:>3}/{timeline.n_windows} | rows sent {rows:>7} | worker: "
            f"rows {int(stats.get('rows', 0)):>7}, windows closed "
            f"{int(stats.get('records_emitted', 0)):>3}, late "
            f"{int(stats.get('late_batches', 0))} | parquet: {written:>3} windows"
        )

    def _wait_for_windows(self, timeline: Timeline) -> int:
        expected = {
            (agent, round(timeline.window_start(i) * 1000))
            for agent in AGENTS
            for i in range(timeline.n_windows)
        }
        self.echo(f"waiting for the {len(expected)} windows to reach the Parquet data set ...")

        def complete() -> bool:
            self._check_children()
            return expected <= self._windows_written()

        try:
            wait_for(complete, self.settings.settle_timeout_s, "every window in Parquet", 0.5)
        except TimeoutError:
            missing = len(expected - self._windows_written())
            self.echo(f"warning: {missing} windows still missing from the Parquet data set")
        written = len(self._windows_written() & expected)
        self.echo(f"{written}/{len(expected)} windows written to {self.parquet_dir}")
        return written

    def _wait_for_labels(self) -> None:
        """Until the worker joined every label and the Parquet data set holds its revisions."""
        self.echo(f"waiting for the {self.labels_sent} labels and their revisions ...")

        def joined() -> float:
            return self._worker_stats().get('labels{outcome="joined"}', 0.0)

        def settled() -> bool:
            self._check_children()
            if joined() < self.labels_sent:
                return False
            revisions = self._worker_stats().get("label_revisions", 0.0)
            return revisions_in_parquet(self.parquet_dir) >= revisions

        try:
            wait_for(settled, self.settings.settle_timeout_s, "the label revisions", 0.5)
        except TimeoutError:
            self.echo(f"warning: {self.labels_sent - joined():.0f} labels not joined yet")
        self.echo(
            f"{joined():.0f} labels joined; {revisions_in_parquet(self.parquet_dir)} label "
            "revisions in the Parquet data set"
        )

    def _windows_written(self) -> set[tuple[str, int]]:
        return windows_in_parquet(self.parquet_dir)

    def _worker_stats(self) -> dict[str, float]:
        return scrape_worker_metrics(f"http://127.0.0.1:{self.web_port}/metrics")


@dataclass
class _LabelSend:
    agent_id: str
    at: float  # simulated epoch seconds
    prediction_ids: list[str]
    labels: np.ndarray


class _LabelSchedule:
    """The demo's delayed labels: each window's are sent (per agent) at its start."""

    def __init__(self) -> None:
        self.by_window: dict[int, dict[str, tuple[list[str], list[np.ndarray]]]] = {}
        self.sent = self.never = 0

    def add(self, batch: DemoBatch) -> None:
        assert batch.label_window is not None
        for window in np.unique(batch.label_window).tolist():
            rows = np.flatnonzero(batch.label_window == window)
            if window == NEVER:
                self.never += rows.size
                continue
            ids, labels = self.by_window.setdefault(window, {}).setdefault(batch.agent_id, ([], []))
            ids.extend(batch.prediction_ids[r] for r in rows.tolist())
            labels.append(batch.labels[rows])

    def due(self, timeline: Timeline, now: float) -> list[_LabelSend]:
        ready = [w for w in self.by_window if timeline.window_start(w) <= now]
        return [s for w in sorted(ready) for s in self._take(w, timeline.window_start(w))]

    def rest(self) -> list[tuple[int, list[_LabelSend]]]:
        return [(w, self._take(w, 0.0)) for w in sorted(self.by_window)]

    def _take(self, window: int, at: float) -> list[_LabelSend]:
        sends = [
            _LabelSend(agent, at, ids, np.concatenate(labels))
            for agent, (ids, labels) in sorted(self.by_window.pop(window).items())
        ]
        self.sent += sum(len(s.prediction_ids) for s in sends)
        return sends


def _prepare(settings: DemoSettings, *, start: float, echo: Echo) -> tuple[DigitsModels, Timeline]:
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    models = train_models(settings.seed)
    echo(
        f"trained the digits models in {time.monotonic() - began:.1f} s "
        f"(bad model: {models.bad_model_odd_share:.0%} odd digits)"
    )
    timeline = Timeline.centred(start, settings.window_s, settings.n_windows)
    return models, timeline


def windows_in_parquet(root: Path) -> set[tuple[str, int]]:
    """(agent_id, window start in epoch ms) of every window in a Parquet metrics data set."""
    if not root.is_dir():
        return set()
    try:
        table = ds.dataset(root, format="parquet", partitioning=hive_partitioning()).to_table(
            columns=["agent_id", "window_start"]
        )
    except (OSError, ValueError):  # a file appeared or vanished while listing: next time
        return set()
    agents = [str(a) for a in table.column("agent_id").to_pylist()]
    starts = table.column("window_start").cast("int64").to_numpy()
    return set(zip(agents, np.asarray(starts, dtype=np.int64).tolist(), strict=True))


def revisions_in_parquet(root: Path) -> int:
    """How many label revisions (records with revision >= 1) a Parquet data set holds."""
    if not root.is_dir():
        return 0
    try:
        table = ds.dataset(root, format="parquet", partitioning=hive_partitioning()).to_table(
            columns=["agent_id", "window_start", "revision"]
        )
    except (OSError, ValueError):
        return 0
    keys = set(
        zip(
            table.column("agent_id").to_pylist(),
            table.column("window_start").cast("int64").to_pylist(),
            table.column("revision").to_pylist(),
            strict=True,
        )
    )
    return sum(1 for _, _, revision in keys if revision)


_PROMETHEUS_LINE = re.compile(r"^mlwatcher_worker_([a-z_]+?)(?:_total)?(\{[^}]*\})? ([0-9.eE+-]+)$")


def scrape_worker_metrics(url: str) -> dict[str, float]:
    """The worker's Prometheus counters without labels (``rows``, ``records_emitted`` ...),
    and the delayed labels by outcome (``labels{outcome="joined"}``)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text = response.read().decode()
    except OSError:
        return {}
    stats: dict[str, float] = {}
    for line in text.splitlines():
        match = _PROMETHEUS_LINE.match(line)
        if match and not match.group(2):
            stats[match.group(1)] = float(match.group(3))
        elif match and match.group(1) == "labels":
            stats[f"labels{match.group(2)}"] = float(match.group(3))
    return stats


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


__all__ = [
    "DemoProcessError",
    "DemoResult",
    "DemoSettings",
    "SimulatedClock",
    "run_demo",
    "run_offline",
    "scrape_worker_metrics",
    "windows_in_parquet",
]
