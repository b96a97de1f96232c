"""Running a benchmark's quick mode from a test: the benchmark conventions every one of them
keeps (README, Performance) are checked here once: exit 0, the date and the machine first,
one JSON line last, naming the benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, *args: str, script: bool = True, tmp_path: Path | None = None,
                  timeout: int = 900) -> tuple[dict, list[str]]:
    """``python bench/NAME.py ARGS`` (or ``python -m bench.NAME`` from the checkout): the JSON
    record and every line printed. With ``tmp_path`` it runs there, with its own Prefect home."""
    cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py")] if script else \
        [sys.executable, "-m", f"bench.{name}"]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if tmp_path is not None:
        env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    cwd = tmp_path if (tmp_path is not None and script) else ROOT
    done = subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    head = lines[:4]
    assert any(line.startswith("date: ") for line in head), head
    assert any(line.startswith("machine: ") and "cores" in line for line in head), head
    record = json.loads(lines[-1])
    assert record["benchmark"] == name, record.get("benchmark")
    return record, lines
