"""Prefect flow: sample groups for one round, one task per shard.

The flow owns the engine (started once, only if a shard is left to do) and hands it to
each shard task. Shards are claimed by lease, so several runs (a fleet of workers, or a
second `grpo generate`) can share a round. Prefect's cache is off on purpose: the shard
files are the record of what finished, so a restarted run skips exactly the shards whose
files exist.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from pipeline import fleet_jobs, generation
from pipeline.atomic import write_text_atomic
from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.fleet import fleet_log, run_claimed
from pipeline.leases import new_owner_id
from pipeline.progress import progress_bar
from pipeline.resolve import resolve_policy
from pipeline.rounds import mark_stage, next_round_to_generate, policy_for_round
from pipeline.store import round_dir


@task(name="generate-shard", cache_policy=NO_CACHE, retries=0)
def generate_shard_task(sampler, workdir: Path, plan, shard: int) -> generation.ShardResult:
    return generation.generate_shard(sampler, workdir, plan, shard)


def _run_shard(sampler, workdir: Path, plan, shard: int) -> generation.ShardResult:
    """The shard task with the plan quoted. Prefect walks every task argument three times
    (task inputs, futures, resolution, the last copying it); the plan holds the whole
    checked prompt set, so on the demo's 4,352 prompts that walk cost 1.9 s of a 3.4 s
    shard, and it grows with the user's prompts file. ``quote`` skips the walk; the task
    still receives the plan itself."""
    return generate_shard_task(sampler, workdir, quote(plan), shard)


@flow(name="generate", validate_parameters=False)
def generation_flow(workdir: str, config_path: str | None = None, round_: int | None = None,
                    overrides: dict | None = None, show_progress: bool = True) -> dict:
    """Generate round ``round_`` (None: continue the first round not fully generated) with
    the newest policy the loop trained before it (the base policy for round 0)."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    if round_ is None or round_ < 0:
        round_ = next_round_to_generate(wd)
    policy = policy_for_round(wd, resolve_policy(cfg, wd), round_)
    summary = run_generation(wd, cfg, round_, policy, show_progress=show_progress)
    summary["catalog_rows"] = rebuild(wd)
    return summary


def run_generation(workdir: Path, cfg, round_: int, policy: Path, sampler=None,
                   show_progress: bool = True, plan=None) -> dict:
    """The body of the flow, and of every fleet worker's generation run: the round's shards
    are claimed one at a time by lease (``pipeline.fleet``), so any number of these may run
    on one round at once. ``sampler``: an engine the caller already started (the loop shares
    one between evaluation and generation); else one starts only if a shard is left."""
    started = time.perf_counter()
    plan = plan or generation.plan_round(workdir, cfg, round_, policy)
    write_text_atomic(cfg.to_toml(), round_dir(workdir, round_) / "generate.config.toml")
    owner = new_owner_id()
    tokens = seconds = 0.0
    with fleet_jobs.engine(plan, cfg, workdir, sampler) as lazy, \
            progress_bar(show_progress) as bar:
        todo = generation.pending(workdir, plan)
        job = bar.add_task(f"round {round_}: generating", total=len(plan.train),
                           completed=sum(len(s) for i, s in enumerate(plan.shards)
                                         if i not in todo))

        def done(res: generation.ShardResult) -> None:
            nonlocal tokens, seconds
            tokens += res.tokens
            seconds += res.seconds
            bar.update(job, advance=res.prompts, description=f"round {round_}: generating "
                       f"{tokens / max(seconds, 1e-9):,.0f} tok/s")

        jobs = fleet_jobs.generation_jobs(workdir, plan, lazy, run_shard=_run_shard,
                                          on_done=done)
        report = run_claimed(jobs, owner, cfg.generation.lease_ttl_s,
                             log=fleet_log(workdir, round_, "generate", owner))
        engine_started = lazy.started
        startup = lazy.get().startup_seconds if lazy.started and sampler is None else 0.0
    results: list[generation.ShardResult] = report.results
    summary = {
        "round": round_, "policy": str(policy), "config_hash": plan.config_hash,
        "prompts": plan.prompt_summary, "shards": len(plan.shards),
        "shards_generated": len(results),
        "shards_skipped": len(plan.shards) - len(results),
        "candidates_in_round": generation.count_round(workdir, plan),
        "engine_started": engine_started, "engine_startup_s": round(startup, 1),
        "generated_tokens": sum(r.tokens for r in results), "fleet": report.summary(),
        "shard_results": [asdict(r) | {"path": str(r.path)} for r in results],
    }
    if not generation.pending(workdir, plan):
        mark_stage(workdir, round_, "generate", {k: v for k, v in summary.items()
                                                 if k != "shard_results"} |
                   {"key": plan.config_hash}, started)
    return summary
