"""bench/loop_engine.py end to end in its quick mode, as a script: the loop with one engine
and with an engine per round draw the same samples, and the one-engine loop starts one."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark
from tests.conftest import seed_demo_workdir

pytestmark = pytest.mark.slow


def test_quick_mode_compares_one_engine_with_an_engine_per_round(tmp_path, demo_model_dir,
                                                                 demo_rm_dir):
    seed_demo_workdir(tmp_path / "bench" / "base", demo_model_dir, demo_rm_dir)
    record, lines = run_benchmark("loop_engine", "--quick", "--workdir",
                                  str(tmp_path / "bench"), tmp_path=tmp_path, timeout=1200)
    assert record["quick"] is True and record["rounds"] == 1
    # One round, then the final evaluation: two policies.
    assert record["settings"]["auto"]["starts"] == [1]
    assert record["settings"]["auto"]["reloads"] == [1]
    assert record["settings"]["never"]["starts"] == [2]
    assert record["settings"]["never"]["reloads"] == [0]
    # The final evaluation was sampled by the reloaded engine under auto, by a new one
    # under never: the same token ids and log-probabilities.
    assert record["same_samples"] is True
    assert record["speedup"]["n"] == 1 and record["speedup"]["median"] > 0
    assert any(line.startswith("one engine per loop:") for line in lines)
