"""``python -m mlwatcher`` is the ``mlwatcher`` command."""

from __future__ import annotations

NO_CLI = (
    "mlwatcher: the command line comes with the extras: pip install 'mlwatcher[worker]' "
    "(worker, topics, reference), 'mlwatcher[sinks]', 'mlwatcher[report]' or "
    "'mlwatcher[all]'; plain `pip install mlwatcher` is the producer library only."
)


def main() -> None:
    try:
        from mlwatcher.cli import main as command_line
    except ModuleNotFoundError as missing:
        if missing.name != "click":
            raise
        raise SystemExit(NO_CLI) from None
    command_line()


if __name__ == "__main__":
    main()
