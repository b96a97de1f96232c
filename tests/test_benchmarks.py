"""Each benchmark's quick mode runs end to end, as ``python -m bench.NAME`` and as
``python bench/NAME.py``, and ends with its JSON line: a schema change cannot silently break
a benchmark again (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.audit import list_queries

ROOT = Path(__file__).resolve().parent.parent


def _run_quick(name: str, style: str) -> list[str]:
    cmd = [sys.executable, "-m", f"bench.{name}"] if style == "module" else [
        sys.executable, f"bench/{name}.py"]
    done = subprocess.run([*cmd, "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("style", ["module", "script"])
def test_consensus_benchmark_quick_mode(style):
    lines = _run_quick("consensus", style)
    assert any(line.startswith("date: ") for line in lines[:4])
    assert any(line.startswith("machine: ") and "cores" in line for line in lines[:4])
    record = json.loads(lines[-1])
    assert record["benchmark"] == "consensus" and record["quick"] is True
    assert record["machine"]["cores"] >= 1 and "cpu_flags" in record["machine"]
    sizes = record["sizes"]
    assert [s["groups"] for s in sizes] == [300, 1200]
    for size in sizes:
        assert size["rank_s"]["n"] >= 3 and size["rank_s"]["min"] <= size["rank_s"]["median"]
        assert size["peak_rss_mib"]["median"] > 0
        assert size["cycle_recall"] == 1.0 and size["judge_cycles_found_unplanted"] == 0
        assert sum(size["statuses"].values()) == size["groups"]
    assert record["peak_rss_ratio"]["n"] >= 3
    assert set(record["audit"]["query_s"]) == {q.name for q in list_queries()}
    assert record["audit"]["slowest"] in record["audit"]["query_s"]
