"""bench/seed_table.py end to end in its quick mode, as a script: every configuration of the
table runs the loop once, so a change to the loop's config or evaluation cannot silently
break the benchmark (issue 14)."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark
from tests.conftest import seed_demo_workdir

pytestmark = pytest.mark.slow


def test_quick_mode_runs_every_configuration_and_ends_with_one_json_line(tmp_path,
                                                                        demo_model_dir,
                                                                        demo_rm_dir):
    # The session's demo policy and reward model are its base models (it builds only what
    # is missing), so the test times the table's loop runs, not model training.
    seed_demo_workdir(tmp_path / "bench" / "base", demo_model_dir, demo_rm_dir)
    record, _ = run_benchmark("seed_table", "--quick", "--workdir", str(tmp_path / "bench"),
                              tmp_path=tmp_path, timeout=1800)
    assert record["quick"] is True
    assert set(record["table"]) == {"dpo k=4 (best vs worst)", "plackett_luce k=4",
                                    "plackett_luce k=8"}
    for row in record["table"].values():
        # Rates are shares of held-out prompts; the gain is a difference of two such means.
        assert len(row["win_rate_vs_base"]["values"]) == record["seeds"] == 1
        assert 0.0 <= row["win_rate_vs_base"]["mean"] <= 1.0
        assert 0.0 <= row["hack_rate"]["mean"] <= 1.0
        assert -1.0 <= row["gold_gain"]["mean"] <= 1.0
