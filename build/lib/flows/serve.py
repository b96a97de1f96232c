"""Prefect deployments of the flows, with the cron schedules of the config's [schedule].

``grpo serve`` registers them with the Prefect API and serves them from this process (runs
then appear in the Prefect UI). On several machines, create a work pool and start one
worker per machine instead (see README, Scheduling).
"""

from __future__ import annotations

from pathlib import Path

from prefect.schedules import Cron

from flows.generate import generation_flow
from flows.iterate import iterate_flow
from flows.judge import judge_flow
from flows.rank import rank_flow
from pipeline.config import Config


def build_deployments(cfg: Config, workdir: Path, config_path: str | None) -> list:
    """One deployment per scheduled flow. Each continues from the newest state: generation
    continues the first round not fully generated, with the newest trained policy; judging
    takes the newest fully generated round, ranking the newest fully judged one; iterate
    runs one new round past those finished."""
    wd = str(Path(workdir).resolve())
    cp = str(Path(config_path).resolve()) if config_path else None
    s = cfg.schedule
    plan = [
        (generation_flow, "nightly-generate", s.generate_cron,
         {"workdir": wd, "config_path": cp, "round_": None, "show_progress": False}),
        (judge_flow, "nightly-judge", s.judge_cron,
         {"workdir": wd, "config_path": cp, "round_": None, "show_progress": False}),
        (rank_flow, "nightly-rank", s.rank_cron,
         {"workdir": wd, "config_path": cp, "round_": None}),
        (iterate_flow, "scheduled-iterate", s.iterate_cron,
         {"workdir": wd, "config_path": cp, "new_rounds": 1}),
    ]
    return [flow.to_deployment(name=name, schedules=[Cron(cron, timezone=s.timezone)],
                               parameters=params, tags=["grpo"])
            for flow, name, cron, params in plan if cron]


def register(deployments: list) -> list[str]:
    """Create or update the deployments in the Prefect API; return their ids."""
    return [str(d.apply()) for d in deployments]


def serve(deployments: list) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments)
