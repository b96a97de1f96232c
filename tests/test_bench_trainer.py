"""bench/trainer.py's quick mode runs to the end, as a script, on a real ranked round: a
schema or API change cannot silently break the benchmark again."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark

pytestmark = pytest.mark.slow


def test_trainer_benchmark_quick_mode_runs_as_a_script(ranked_store, tmp_path):
    result, _ = run_benchmark("trainer", "--quick", "--workdir", str(tmp_path / "bench"),
                              "--source", str(ranked_store), tmp_path=tmp_path, timeout=1200)
    assert [r["k"] for r in result["a_prefix_sharing"]] == [2, 4, 8]
    cd = result["c_d_vs_trl"]
    assert cd["pairs"] > 0 and cd["loss_check"]["equal_within_1e-4"], cd["loss_check"]
    assert set(cd["sides"]) == {"ours_full", "ours_lora", "ours_lora_cached", "trl_full",
                                "trl_lora"}
    assert all(s["steps"] == -(-cd["pairs"] // 8) for s in cd["sides"].values())
