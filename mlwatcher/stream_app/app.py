"""Module-level Faust app for ``faust -A mlwatcher.stream_app.app worker``.

Configured from ``MLWATCHER_*`` environment variables (see
:meth:`~mlwatcher.stream_app.settings.WorkerSettings.from_env`). Importing this module
contacts the broker (it creates the topics), so ``mlwatcher worker`` does not import it.
"""

from __future__ import annotations

from mlwatcher.stream_app.settings import WorkerSettings
from mlwatcher.stream_app.wiring import create_app

app = create_app(WorkerSettings.from_env())
