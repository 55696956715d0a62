"""Finding Prometheus' binaries (Debian package ``prometheus``; ``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Path of ``name``; a missing binary fails the test under CI (``.ci/run`` must have
    installed it) and skips it elsewhere, saying how to install it."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found: apt-get install -y prometheus (Debian package)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; .ci/run should have installed it", pytrace=False)
    pytest.skip(message)
