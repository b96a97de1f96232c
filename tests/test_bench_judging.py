"""bench/judging.py end to end in its quick mode, on a round the session already generated."""

from __future__ import annotations

import pytest

from pipeline.config import EMBEDDED_JUDGE_CONCURRENCY
from tests.bench_helpers import run_benchmark
from tests.conftest import copy_store


@pytest.mark.slow
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
    # The sweep: each level asked for and the baseline (the embedded default), same groups.
    sweep = record["concurrency_sweep"]
    base = str(EMBEDDED_JUDGE_CONCURRENCY)
    assert set(sweep["settings"]) == {"1", "2", base}
    # Ratios are paired by repetition: the baseline against itself is exactly 1.
    assert sweep["settings"][base]["over_baseline"] == {"median": 1.0, "min": 1.0, "max": 1.0,
                                                        "n": record["reps"]}
    assert sweep["settings"][base]["same_scores_as_baseline"] == 1.0
    for level in ("1", "2"):
        row = sweep["settings"][level]
        assert row["failed_items"] == 0 and row["groups_per_s"]["min"] > 0
    assert any(line.startswith("listwise by requests in flight") for line in lines)


def test_scored_alike_counts_groups_with_any_differing_or_missing_row():
    from bench.judging import scored_alike

    a = {("g1", "c1", "score", 0, None): 7.0, ("g1", "c2", "score", 0, None): 3.0,
         ("g2", "c1", "score", 0, None): 5.0, ("g3", "c1", "score", 0, None): None}
    assert scored_alike(a, dict(a)) == 1.0
    changed = {**a, ("g1", "c2", "score", 0, None): 4.0}
    assert scored_alike(a, changed) == pytest.approx(2 / 3)
    # A row one run lacks differs, even from a failed (None) row of the other.
    fewer = {k: v for k, v in a.items() if k[0] != "g3"}
    assert scored_alike(a, fewer) == pytest.approx(2 / 3)
    assert scored_alike({}, {}) == 1.0
