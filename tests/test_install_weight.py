"""`pip install mlwatcher` is the producer: it needs confluent-kafka, fastavro and numpy only,
and importing it loads nothing of the platform (worker, engine, sinks, report)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("faust", "aiokafka", "scipy", "pandas", "pyarrow", "sklearn", "matplotlib")
BASE = {"confluent_kafka", "fastavro", "numpy"}  # the base install's libraries


def _modules_after(code: str) -> set[str]:
    """Every module loaded by a fresh interpreter that ran ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_producer_loads_no_platform_library() -> None:
    loaded = _modules_after("from mlwatcher.producer import MonitoringAgent")
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & set(HEAVY), sorted(tops & set(HEAVY))
    # No third-party module beyond what the three base libraries load themselves (fastavro
    # picks up cramjam when it is there; site may load certifi) ...
    floor = {n.split(".")[0] for n in _modules_after("import " + ", ".join(sorted(BASE)))}
    third_party = {t for t in tops if t not in sys.stdlib_module_names} - {"mlwatcher"}
    assert third_party <= floor, sorted(third_party - floor)
    # ... and none of the engine, the sinks, the worker or the command line.
    ours = {name for name in loaded if name.startswith("mlwatcher.")}
    assert not {n for n in ours if n.split(".")[1] in ("metrics", "sinks", "stream_app", "cli")}


def test_the_producer_accepts_a_dataframe_without_importing_pandas_itself() -> None:
    loaded = _modules_after(
        "import numpy as np\n"
        "from mlwatcher.validation import check_features\n"
        "class Frame:  # a DataFrame by duck typing: columns, dtypes, to_numpy, []\n"
        "    columns = ['a']\n"
        "    dtypes = [np.dtype(float)]\n"
        "    def __getitem__(self, name):\n"
        "        return Column()\n"
        "    def to_numpy(self):\n"
        "        return np.zeros((2, 1))\n"
        "class Column:\n"
        "    dtype = np.dtype(float)\n"
        "    index = [0, 1]\n"
        "    def to_numpy(self):\n"
        "        return np.array([1.0, 2.0])\n"
        "assert check_features(Frame(), 2, argument='x').names == ['a']"
    )
    assert "pandas" not in {name.split(".")[0] for name in loaded}


def test_the_base_install_requires_exactly_the_producer_libraries() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {req.split(">")[0].split("=")[0].strip() for req in project["dependencies"]}
    assert names == {"confluent-kafka", "fastavro", "numpy"}
    extras = project["optional-dependencies"]
    assert {"worker", "sinks", "report", "embedded", "all"} <= set(extras)
