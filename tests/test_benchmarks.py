"""Each benchmark's quick mode runs end to end, as ``python -m bench.NAME`` and as
``python bench/NAME.py``, and ends with its JSON line: a schema change cannot silently break
a benchmark again (issue 14)."""

from __future__ import annotations

import pytest

from pipeline.audit import list_queries
from tests.bench_helpers import run_benchmark


@pytest.mark.slow
@pytest.mark.parametrize("style", ["module", "script"])
def test_consensus_benchmark_quick_mode(style):
    record, _ = run_benchmark("consensus", "--quick", script=style == "script", timeout=300)
    assert record["quick"] is True
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
