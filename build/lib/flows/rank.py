"""Prefect flow: merge a round's configured sources and human imports into consensus
rankings and group status."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.rank_inputs import rank_inputs
from pipeline.rounds import mark_stage, newest_round


@task(name="consensus", cache_policy=NO_CACHE)
def consensus_task(workdir: Path, round_: int, cfg, files):
    return rank_round(workdir, round_, cfg.rank, judgment_files=files,
                      zero_weight=[cfg.loop.gold] if cfg.loop.gold else [])


def rank_with_config(workdir: Path, cfg, round_: int) -> dict:
    started = time.perf_counter()
    inputs = rank_inputs(cfg, workdir, round_)
    summary = asdict(consensus_task(workdir, round_, cfg, inputs.files))
    summary["left_out"] = inputs.left_out
    if inputs.left_out:
        print(f"grpo rank: round {round_}: left out judgments of sources not in the config: "
              + ", ".join(f"{s} ({n} files)" for s, n in inputs.left_out.items()),
              file=sys.stderr)
    if summary["groups"] and summary["statuses"].get("unranked", 0) == summary["groups"]:
        summary["warning"] = (
            f"no source with weight > 0 has an opinion on any group of round {round_}: every "
            f"group is unranked (weights: {summary['weights']}); give a judged source a weight "
            "in rank.weights (the gold source, loop.gold, is always 0)")
        print(f"grpo rank: warning: {summary['warning']}", file=sys.stderr)
    mark_stage(workdir, round_, "rank", {"groups": summary["groups"],
                                         "statuses": summary["statuses"]}, started)
    return summary


@flow(name="rank", validate_parameters=False)
def rank_flow(workdir: str, config_path: str | None = None, round_: int | None = None,
              overrides: dict | None = None) -> dict:
    """Rank ``round_`` (None: the newest fully judged round)."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    if round_ is None or round_ < 0:
        round_ = newest_round(wd, "judge", "rank", "is fully judged")
    summary = rank_with_config(wd, cfg, round_)
    return summary | {"catalog_rows": rebuild(wd)}
