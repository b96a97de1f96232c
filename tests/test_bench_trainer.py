"""bench/trainer.py's quick mode runs to the end, as a script, on a real ranked round: a
schema or API change cannot silently break the benchmark again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_trainer_benchmark_quick_mode_runs_as_a_script(ranked_store, tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"),
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "trainer.py"), "--quick",
                           "--workdir", str(tmp_path / "bench"), "--source", str(ranked_store)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("bench.trainer 20") and "cores" in lines[0]
    result = json.loads(lines[-1])
    assert [r["k"] for r in result["a_prefix_sharing"]] == [2, 4, 8]
    cd = result["c_d_vs_trl"]
    assert cd["pairs"] > 0 and cd["loss_check"]["equal_within_1e-4"], cd["loss_check"]
    assert set(cd["sides"]) == {"ours_full", "ours_lora", "ours_lora_cached", "trl_full",
                                "trl_lora"}
    assert all(s["steps"] == -(-cd["pairs"] // 8) for s in cd["sides"].values())
