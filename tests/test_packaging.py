"""A normal (non-editable) install holds every module and data file, and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.judge_helpers import write_round

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_and_data_file_and_runs(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheels)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("grpo_pipeline-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for pkg in ("pipeline", "flows", "trainers")
                for p in (ROOT / pkg).rglob("*.py")}
    expected |= {p.relative_to(ROOT).as_posix()
                 for p in (ROOT / "pipeline" / "judging" / "templates").glob("*.txt")}
    expected |= {f"pipeline/_resources/sql/{p.name}" for p in (ROOT / "sql").glob("*.sql")}
    expected |= {"pipeline/_resources/data/demo.toml"}
    assert not expected - names, sorted(expected - names)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    workdir = tmp_path / "w"
    write_round(workdir, ["ok"] * 2, k=3)
    # Run from elsewhere with only the installed copy importable ahead of the checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    outputs = {}
    for args in (["schema"], ["audit"], ["audit", "generation_coverage", "--workdir",
                                          str(workdir)]):
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        outputs[args[0] if len(args) == 1 else "query"] = done.stdout
    assert "### `candidates`" in outputs["schema"]
    assert all(p.stem in outputs["audit"] for p in (ROOT / "sql").glob("*.sql"))
    where = subprocess.run([sys.executable, "-c", "import pipeline.resources as r; "
                            "print(r.SQL_DIR)"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert where.stdout.strip().startswith(str(target)), where.stdout
    assert "generation_coverage" in done.stdout
