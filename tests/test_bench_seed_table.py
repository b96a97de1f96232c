"""bench/seed_table.py end to end in its quick mode, as a script: every configuration of the
table runs the loop once, so a change to the loop's config or evaluation cannot silently
break the benchmark (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_mode_runs_every_configuration_and_ends_with_one_json_line(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "seed_table.py"), "--quick",
                           "--workdir", str(tmp_path / "bench")],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("date: ") and lines[1].startswith("machine: ")
    record = json.loads(lines[-1])
    assert record["benchmark"] == "seed_table" and record["quick"] is True
    assert set(record["table"]) == {"dpo k=4 (best vs worst)", "plackett_luce k=4",
                                    "plackett_luce k=8"}
    for row in record["table"].values():
        # Rates are shares of held-out prompts; the gain is a difference of two such means.
        assert len(row["win_rate_vs_base"]["values"]) == record["seeds"] == 1
        assert 0.0 <= row["win_rate_vs_base"]["mean"] <= 1.0
        assert 0.0 <= row["hack_rate"]["mean"] <= 1.0
        assert -1.0 <= row["gold_gain"]["mean"] <= 1.0
