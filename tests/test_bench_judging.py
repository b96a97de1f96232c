"""bench/judging.py end to end in its quick mode, on a round the session already generated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_mode_runs_end_to_end_and_ends_with_one_json_line(tmp_path, ranked_store,
                                                               demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "store")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "judging.py"), "--quick",
                           "--workdir", str(workdir), "--judge-model", str(demo_model_dir)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("date: ") and lines[1].startswith("machine: ")
    record = json.loads(lines[-1])
    k = record["k"]
    assert record["benchmark"] == "judging" and record["groups"] == 4
    # Listwise: one request per view; pairwise: every pair in both orders.
    assert record["listwise"]["requests_per_group"] == 2
    assert record["pairwise"]["requests_per_group"] == k * (k - 1)
    for name in ("listwise", "pairwise", "listwise_serial"):
        stat = record[name]["groups_per_s"]
        assert stat["n"] == record["reps"] and 0 < stat["min"] <= stat["median"] <= stat["max"]
    assert record["concurrency_speedup"]["median"] > 0
