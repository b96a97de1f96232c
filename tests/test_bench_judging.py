"""bench/judging.py end to end in its quick mode, on a round the session already generated."""

from __future__ import annotations

import pytest

from pipeline.config import EMBEDDED_JUDGE_CONCURRENCY
from tests.bench_helpers import run_benchmark
from tests.conftest import copy_store

pytestmark = pytest.mark.slow


def test_quick_mode_runs_end_to_end_and_ends_with_one_json_line(tmp_path, ranked_store,
                                                               demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "store")
    record, lines = run_benchmark("judging", "--quick", "--workdir", str(workdir),
                                  "--judge-model", str(demo_model_dir),
                                  "--sweep-concurrency", "1,2", tmp_path=tmp_path, timeout=600)
    k = record["k"]
    assert record["groups"] == 4
    # Listwise: one request per view; pairwise: every pair in both orders.
    assert record["listwise"]["requests_per_group"] == 2
    assert record["pairwise"]["requests_per_group"] == k * (k - 1)
    for name in ("listwise", "pairwise", "listwise_serial"):
        stat = record[name]["groups_per_s"]
        assert stat["n"] == record["reps"] and 0 < stat["min"] <= stat["median"] <= stat["max"]
    assert record["concurrency_speedup"]["median"] > 0
    # The sweep: each level asked for and the embedded default, the same groups judged.
    sweep = record["concurrency_sweep"]
    assert sweep["default"] == EMBEDDED_JUDGE_CONCURRENCY
    assert set(sweep["settings"]) == {"1", "2", str(EMBEDDED_JUDGE_CONCURRENCY)}
    for level in ("1", "2"):
        row = sweep["settings"][level]
        assert row["failed_items"] == 0 and row["groups_per_s"]["min"] > 0
        assert row["over_default"]["n"] == record["reps"]
        assert 0.0 <= row["same_scores_as_default"] <= 1.0
    assert any(line.startswith("listwise by requests in flight") for line in lines)
