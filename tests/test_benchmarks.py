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


@pytest.mark.slow
@pytest.mark.parametrize("style", ["module", "script"])
def test_demo_judge_benchmark_quick_mode(style, demo_model_dir, tmp_path):
    # As a module on the session's demo policy; as a script building its own.
    policy = ["--policy", str(demo_model_dir)] if style == "module" else []
    record, lines = run_benchmark("demo_judge", "--quick", "--workdir", str(tmp_path), *policy,
                                  script=style == "script", timeout=300)
    assert record["quick"] is True and record["steps"] == 2
    assert (tmp_path / "demo-policy" / "config.json").exists() == (style == "script")
    # The same gradient and the same scores either way; each way timed.
    assert record["max_grad_diff"] < 1e-4
    assert record["groups_scored_differently"] == 0 and record["groups"] == 16
    for key in ("step_s", "scoring_s"):
        assert all(stat["n"] == 1 and stat["median"] > 0 for stat in record[key].values())
    pads = record["padding_share"]
    assert 0 <= pads["length_buckets"] <= pads["padded"] < 1
    assert any(line.startswith("training step: one padded batch") for line in lines)
