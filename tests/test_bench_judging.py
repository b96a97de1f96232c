"""bench/judging.py end to end in its quick mode, on a round the session already generated."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark
from tests.conftest import copy_store

pytestmark = pytest.mark.slow


def test_quick_mode_runs_end_to_end_and_ends_with_one_json_line(tmp_path, ranked_store,
                                                               demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "store")
    record, _ = run_benchmark("judging", "--quick", "--workdir", str(workdir), "--judge-model",
                              str(demo_model_dir), tmp_path=tmp_path, timeout=600)
    k = record["k"]
    assert record["groups"] == 4
    # Listwise: one request per view; pairwise: every pair in both orders.
    assert record["listwise"]["requests_per_group"] == 2
    assert record["pairwise"]["requests_per_group"] == k * (k - 1)
    for name in ("listwise", "pairwise", "listwise_serial"):
        stat = record[name]["groups_per_s"]
        assert stat["n"] == record["reps"] and 0 < stat["min"] <= stat["median"] <= stat["max"]
    assert record["concurrency_speedup"]["median"] > 0
