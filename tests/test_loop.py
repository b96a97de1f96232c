"""The loop end to end (real vLLM, real judging, real training), killed mid-round and
resumed; the over-optimisation flag; scheduled deployments as Prefect sees them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from pipeline.report import write_report
from tests.conftest import cli_set_args, small_overrides
from trainers.evaluate import METRICS, overoptimised, read_evals


def _overrides(model_dir, rm_dir) -> dict:
    return small_overrides(model_dir, **{
        "prompts.n_heldout": 8, "loop.eval_k": 2, "loop.rounds": 1,
        "loop.stop_on_overoptimisation": False, "loop.annotator_fraction": 0.5,
        "loop.annotator_cycles": 0.5, "train.epochs": 1,
        "judging.sources": ["verifier", "reward_model"],
        "judging.reward_models": [str(rm_dir)],
        "schedule.generate_cron": "0 2 * * *", "schedule.iterate_cron": "0 3 * * *"})


def _argv(workdir, model_dir, rm_dir):
    return [sys.executable, "-m", "flows.cli", "iterate", "--workdir", str(workdir),
            *cli_set_args(_overrides(model_dir, rm_dir))]


@pytest.mark.slow
def test_loop_killed_resumed_then_continued_by_scheduled_runs(tmp_path, demo_model_dir,
                                                              demo_rm_dir, prefect_harness):
    argv = _argv(tmp_path, demo_model_dir, demo_rm_dir)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    marker = tmp_path / "rounds" / "r000" / "_stages" / "judge.json"
    log = tmp_path / "killed.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 600
    while time.time() < deadline and not marker.exists():
        assert proc.poll() is None, f"the loop ended early: {log.read_text()[-2000:]}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "rounds" / "r000" / "_stages" / "train.json").exists()
    candidates = sorted((tmp_path / "rounds" / "r000" / "candidates").glob("*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in candidates}
    eval_before = (tmp_path / "rounds" / "r000" / "evals.parquet").stat().st_mtime_ns

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    # Finished work was not redone.
    assert {p: p.stat().st_mtime_ns for p in candidates} == before
    assert (tmp_path / "rounds" / "r000" / "evals.parquet").stat().st_mtime_ns == eval_before
    for stage in ("evaluate", "generate", "judge", "annotate", "rank", "train"):
        assert (tmp_path / "rounds" / "r000" / "_stages" / f"{stage}.json").exists()
    assert (tmp_path / "rounds" / "r001" / "_stages" / "evaluate.json").exists()
    assert (tmp_path / "models" / "policy-r001" / "config.json").exists()
    assert "held-out evaluation by round" in done.stdout

    # Two scheduled runs back to back, run with the parameters their deployments carry:
    # one new round of the loop, then the nightly generation. Each continues from the
    # newest state: round 1 sampled by policy-r001, then round 2 by policy-r002.
    from flows.generate import generation_flow
    from flows.iterate import iterate_flow
    from flows.serve import build_deployments
    from pipeline.config import load_config
    from pipeline.rounds import round_policy

    cfg = load_config(overrides=_overrides(demo_model_dir, demo_rm_dir))
    config_file = tmp_path / "scheduled.toml"
    config_file.write_text(cfg.to_toml())
    params = {d.name: d.parameters for d in build_deployments(cfg, tmp_path, str(config_file))}
    result = iterate_flow(**params["scheduled-iterate"])
    assert result["first_round"] == 1 and result["rounds"] == 2
    # One engine for the run: round 1 sampled by policy-r001, whose engine then took
    # policy-r002's weights in place for the final evaluation.
    assert (result["engine"]["starts"], result["engine"]["reloads"]) == (1, 1)
    assert round_policy(tmp_path, 1) == tmp_path / "models" / "policy-r001"
    assert (tmp_path / "models" / "policy-r002" / "config.json").exists()
    generated = generation_flow(**params["nightly-generate"])
    assert generated["round"] == 2
    assert round_policy(tmp_path, 2) == tmp_path / "models" / "policy-r002"
    assert generated["policy"] == str(tmp_path / "models" / "policy-r002")

    evals = read_evals(tmp_path)
    assert sorted(evals) == [0, 1, 2]
    assert all(set(METRICS) == set(m) for m in evals.values())
    assert evals[0]["kl_to_base"] == 0.0 and evals[2]["kl_to_base"] != 0.0
    assert 0 <= evals[2]["gold_score"] <= 1 and 0 <= evals[2]["hack_rate"] <= 1
    # Humans (simulated) went through the import path, with their planted cycles found.
    cycles = pl.read_parquet(tmp_path / "rounds" / "r000" / "cycles" / "consensus.parquet")
    assert "human:sim-cyclic" in set(cycles["source"])
    for name in ("summary.md", "gold_vs_training_reward.png", "kl_and_hacking.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_overoptimisation_flag_on_constructed_cases(tmp_path):
    prev = {"train_reward": 1.0, "gold_score": 0.80}
    assert overoptimised(prev, {"train_reward": 1.5, "gold_score": 0.70})
    assert not overoptimised(prev, {"train_reward": 1.5, "gold_score": 0.85})  # both up
    assert not overoptimised(prev, {"train_reward": 0.5, "gold_score": 0.70})  # both down
    assert not overoptimised(prev, {"train_reward": 1.5, "gold_score": 0.79}, tolerance=0.02)
    assert not overoptimised(None, {"train_reward": 9.0, "gold_score": 0.0})
    evals = {0: {"gold_score": 0.8, "train_reward": 1.0, "overoptimised": 0.0},
             1: {"gold_score": 0.7, "train_reward": 1.5, "overoptimised": 1.0}}
    summary = write_report(tmp_path, evals, ["round 1 flagged"]).read_text()
    assert "OVER-OPTIMISED" in summary and "round 1 flagged" in summary
    assert (tmp_path / "report" / "gold_vs_training_reward.png").stat().st_size > 0


def test_serve_registers_scheduled_deployments(tmp_path, prefect_harness):
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.serve import build_deployments, register
    from pipeline.config import load_config

    cfg = load_config(overrides={"schedule.generate_cron": "15 1 * * *",
                                 "schedule.judge_cron": "45 2 * * 1-5",
                                 "schedule.rank_cron": "", "schedule.iterate_cron": ""})
    ids = register(build_deployments(cfg, tmp_path, None))
    assert len(ids) == 2

    async def read():
        async with get_client() as client:
            gen = await client.read_deployment_by_name("generate/nightly-generate")
            judge = await client.read_deployment_by_name("judge/nightly-judge")
            return gen, judge

    gen, judge = asyncio.run(read())
    assert [s.schedule.cron for s in gen.schedules] == ["15 1 * * *"]
    assert [s.schedule.cron for s in judge.schedules] == ["45 2 * * 1-5"]
    assert gen.parameters["round_"] is None
    assert gen.parameters["workdir"] == str(tmp_path.resolve())
