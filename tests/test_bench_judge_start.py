"""bench/judge_start.py end to end in its quick mode, as a script, on the session's demo
models: the loop with the judge server started early and started late draws the same
candidates."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark
from tests.conftest import seed_demo_workdir

pytestmark = pytest.mark.slow


def test_quick_mode_compares_an_early_judge_server_with_a_late_one(
        tmp_path, demo_model_dir, demo_rm_dir, demo_judge_dir):
    base = seed_demo_workdir(tmp_path / "base", demo_model_dir, demo_rm_dir, demo_judge_dir)
    record, lines = run_benchmark("judge_start", "--quick", "--models", str(base / "models"),
                                  "--workdir", str(tmp_path / "bench"), tmp_path=tmp_path,
                                  timeout=1200)
    assert record["quick"] is True and record["rounds"] == 1
    assert record["same_candidates"] is True
    # The loop launched the server early only where asked to (it says so, and when the
    # server answered).
    assert record["started_early"] == {"true": [True], "false": [False]}
    for early in ("true", "false"):
        assert record["seconds"][early]["n"] == 1 and record["seconds"][early]["median"] > 0
        # Each run judged its round with the LLM judge, whose server started in it.
        workdir = tmp_path / "bench" / f"{early}-{0 if early == 'true' else 1}"
        assert (workdir / "logs" / "judge-server.log").stat().st_size > 0
    assert any(line.startswith("judge server started with the loop:") for line in lines)
