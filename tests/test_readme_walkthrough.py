"""The README's walk-through, run as written: its commands in order on a fresh workdir.

Each `grpo` command gets `--set` overrides that shrink the run (fewer prompts, smaller
groups) and nothing else; the demo models the session already built are copied in first, so
`grpo build-demo-model` only writes what is missing, as it would on a second run. The one
step a person does by hand (filling in the exported CSV) is done here in code.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_set_args, seed_demo_workdir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SMALL = {"prompts.n_train_per_round": 16, "prompts.n_heldout": 8, "generation.k": 4,
         "train.epochs": 1}


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash walkthrough\n(.*?)```", text, re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _fill_in(csv_path: Path) -> None:
    rows = list(csv.DictReader(open(csv_path, newline="", encoding="utf-8-sig")))
    by_group: dict[str, int] = {}
    for row in rows:
        by_group[row["group_id"]] = by_group.get(row["group_id"], 0) + 1
        row["rank"], row["annotator"] = str(by_group[row["group_id"]]), "alice"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_readme_walkthrough_runs_as_written(tmp_path, demo_model_dir, demo_rm_dir,
                                                demo_judge_dir):
    # The models only: `grpo build-demo-model` writes the prompts file, as on a first run.
    workdir = seed_demo_workdir(tmp_path / "first", demo_model_dir, demo_rm_dir,
                                demo_judge_dir, prompts=False)
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(tmp_path / ".prefect")}
    outputs = []
    for line in walkthrough():
        if line.startswith(". "):  # activating the venv: PATH above does the same
            continue
        cmd = line.replace("runs/first", str(workdir))
        if cmd.startswith("grpo import-human"):
            _fill_in(Path(cmd.split()[2]))
        if cmd.startswith("grpo ") and not cmd.startswith("grpo audit"):
            cmd += " " + " ".join(f"'{a}'" for a in cli_set_args(SMALL))
        done = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1200)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        outputs.append((line, done.stdout))

    out = dict(outputs)
    imported = json.loads(next(o for line, o in outputs if "import-human" in line))
    assert imported["accepted"] == 8 * 4 and imported["quarantined"] == 0
    assert "status" in next(o for line, o in outputs if line.startswith("duckdb"))
    assert "human:alice" in out["grpo audit human_machine_agreement --workdir runs/first"]
    second = json.loads(outputs[-1][1])
    assert second["round"] == 1 and second["policy"].endswith("models/policy-r001")
    manifest = json.loads((workdir / "rounds" / "r001" / "generation.json").read_text())
    assert manifest["policy"] == "models/policy-r001"
