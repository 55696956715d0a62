"""``python tests/sinks/slow_commit.py DELAY ARGS...``: ``mlwatcher ARGS...`` whose sinks wait
DELAY seconds between "records durable" and "offsets committed", the gap where a crash leaves
uncommitted files behind (fault injection for the crash tests, kept out of the package)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

from mlwatcher.cli import main
from mlwatcher.sinks.runner import SinkRunner

DELAY = float(sys.argv.pop(1))
_commit_offsets = SinkRunner._commit_offsets


def _slow_commit_offsets(
    self: SinkRunner, offsets: Mapping[tuple[str, int], int], *, asynchronous: bool
) -> None:
    time.sleep(DELAY)
    _commit_offsets(self, offsets, asynchronous=asynchronous)


SinkRunner._commit_offsets = _slow_commit_offsets  # type: ignore[method-assign]
main()
