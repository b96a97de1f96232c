"""Prefect flow: judge a round with every configured source, one task per (shard, source).

The recipe: resolve the sources (their models must exist: checked before anything starts),
set aside judgments of changed judges, check the LLM judge's endpoint (starting the embedded
server) if it has work left, judge every shard with every source, each job claimed by lease,
and report each source's coverage. The stage is complete only when every source covers
every group (scored or failed); a spent request cap leaves the rest pending for the next
run.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline import fleet_jobs
from pipeline.catalog import rebuild
from pipeline.config import ConfigError, load_config
from pipeline.fleet import fleet_log, run_claimed
from pipeline.judging import stage
from pipeline.judging.sources import SharedEndpoint
from pipeline.leases import new_owner_id
from pipeline.progress import progress_bar
from pipeline.rounds import mark_stage, newest_round, stage_done
from pipeline.store import round_dir


@task(name="judge-shard", cache_policy=NO_CACHE)
def judge_local_task(workdir: Path, round_: int, shard: Path, source: str, fingerprint: str,
                     judge):
    return stage.judge_shard_at_once(workdir, round_, shard, source, fingerprint, judge)


@task(name="judge-shard-llm", cache_policy=NO_CACHE)
def judge_llm_task(workdir: Path, round_: int, shard: Path, source: str, fingerprint: str,
                   judge, on_group=None):
    return stage.judge_shard_journaled(workdir, round_, shard, source, fingerprint, judge,
                                       on_group)


def judge_round(workdir: Path, cfg, round_: int, show_progress: bool = True,
                endpoint: SharedEndpoint | None = None) -> dict:
    """The body of the flow, and of every fleet worker's judging run: one job per (shard,
    source), each claimed by lease, so several runs can share a round. ``endpoint``: the
    judge endpoint the caller keeps open across rounds (the loop), else one that starts
    only if an LLM shard is left and stops at the end."""
    shards = stage.candidate_shards(workdir, round_)
    if not shards:
        raise ConfigError(f"round {round_}: no candidates in {round_dir(workdir, round_)}; "
                          "run `grpo generate` first")
    if not stage_done(workdir, round_, "generate"):
        raise ConfigError(f"round {round_} is still being generated ({len(shards)} shards so "
                          f"far); finish it with `grpo generate --round {round_}` first")
    owner = new_owner_id()
    with contextlib.ExitStack() as stack, progress_bar(show_progress) as bar:
        endpoint = endpoint or stack.enter_context(SharedEndpoint(cfg, workdir))
        sources = fleet_jobs.judge_jobs_for(cfg, workdir, endpoint)
        for job in sources:  # a judge URL that does not answer fails before any work
            if job.journaled and stage.coverage(workdir, round_, job.spec.source,
                                                job.spec.fingerprint).pending:
                job.judge.get()
        task_id = bar.add_task(f"round {round_}: judging", total=None)
        jobs = fleet_jobs.judging_jobs(workdir, round_, sources, judge_local=judge_local_task,
                                       judge_journaled=judge_llm_task,
                                       on_group=lambda: bar.update(task_id, advance=1))
        report = run_claimed(jobs, owner, cfg.generation.lease_ttl_s,
                             log=fleet_log(workdir, round_, "judge", owner))
        llm = next((j for j in sources if j.journaled and j.judge.started), None)
        llm_requests = llm.judge.get().client.budget.used if llm else None
    specs = [j.spec for j in sources]
    cover = {s.source: stage.coverage(workdir, round_, s.source, s.fingerprint) for s in specs}
    pending = {src: c.pending for src, c in cover.items() if c.pending}
    return {"round": round_, "complete": not pending, "pending_groups": pending,
            "sources": {s.source: {"groups": cover[s.source].groups,
                                   "judged": cover[s.source].done,
                                   "fingerprint": s.fingerprint} for s in specs},
            "llm_requests": llm_requests, "fleet": report.summary()}


@flow(name="judge", validate_parameters=False)
def judge_flow(workdir: str, config_path: str | None = None, round_: int | None = None,
               overrides: dict | None = None, show_progress: bool = True) -> dict:
    """Judge ``round_`` (None: the newest fully generated round)."""
    started = time.perf_counter()
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    if round_ is None or round_ < 0:
        round_ = newest_round(wd, "generate", "judge", "is fully generated")
    summary = judge_round(wd, cfg, round_, show_progress)
    if summary["complete"]:
        mark_stage(wd, round_, "judge", {"sources": summary["sources"]}, started)
    summary["catalog_rows"] = rebuild(wd)
    return summary
