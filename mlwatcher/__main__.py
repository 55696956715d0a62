"""``python -m mlwatcher`` is the ``mlwatcher`` command."""

from mlwatcher.cli import main

if __name__ == "__main__":
    main()
