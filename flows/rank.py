"""Prefect flow: merge every source of a round into consensus rankings and group status."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.store import latest_round


@task(name="consensus", cache_policy=NO_CACHE)
def consensus_task(workdir: Path, round_: int, rank_cfg):
    return rank_round(workdir, round_, rank_cfg)


@flow(name="rank", validate_parameters=False)
def rank_flow(workdir: str, config_path: str | None = None, round_: int = 0,
              overrides: dict | None = None) -> dict:
    cfg = load_config(config_path, overrides)
    round_ = latest_round(Path(workdir)) if round_ < 0 else round_
    summary = consensus_task(Path(workdir), round_, cfg.rank)
    return asdict(summary) | {"catalog_rows": rebuild(Path(workdir))}
