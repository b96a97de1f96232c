"""Prefect flow: judge a round with every configured source, one task per (shard, source).

The recipe: resolve the sources (their models must exist: checked before anything starts),
set aside judgments of changed judges, start the embedded judge server if asked, judge every
shard with every source, and report each source's coverage. The stage is complete only when
every source covers every group (scored or failed); a spent request cap leaves the rest
pending for the next run.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.catalog import rebuild
from pipeline.config import ConfigError, load_config
from pipeline.judging import stage
from pipeline.judging.naming import ensemble_members
from pipeline.judging.reward_model import RewardModelScorer, combine_scores
from pipeline.judging.sources import configured_sources, connect_llm_judge, judge_endpoint
from pipeline.judging.verifier import VerifierJudge
from pipeline.progress import progress_bar
from pipeline.rounds import mark_stage, newest_round, stage_done
from pipeline.store import round_dir


@task(name="judge-shard", cache_policy=NO_CACHE)
def judge_local_task(workdir: Path, round_: int, shard: Path, spec, judge):
    return stage.judge_shard_at_once(workdir, round_, shard, spec.source, spec.fingerprint,
                                     judge)


@task(name="judge-shard-llm", cache_policy=NO_CACHE)
def judge_llm_task(workdir: Path, round_: int, shard: Path, spec, judge, on_group=None):
    return stage.judge_shard_journaled(workdir, round_, shard, spec.source, spec.fingerprint,
                                       judge, on_group)


def judge_round(workdir: Path, cfg, round_: int, show_progress: bool = True,
                endpoint=None) -> dict:
    """The body of the flow (the loop calls it inside its own flow run). ``endpoint``: a
    ``SharedEndpoint`` the caller keeps open across rounds, so the embedded judge server
    starts once per loop rather than once per round."""
    shards = stage.candidate_shards(workdir, round_)
    if not shards:
        raise ConfigError(f"round {round_}: no candidates in {round_dir(workdir, round_)}; "
                          "run `grpo generate` first")
    if not stage_done(workdir, round_, "generate"):
        raise ConfigError(f"round {round_} is still being generated ({len(shards)} shards so "
                          f"far); finish it with `grpo generate --round {round_}` first")
    specs = configured_sources(cfg, workdir)
    for spec in specs:
        stage.retire_other_fingerprints(workdir, round_, spec.source, spec.fingerprint)
    by_kind = {k: [s for s in specs if s.kind == k] for k in
               ("verifier", "reward_model", "ensemble", "llm")}
    llm_requests = None
    with contextlib.ExitStack() as stack:
        llm = None
        if by_kind["llm"] and _llm_pending(workdir, round_, by_kind["llm"][0]):
            url, model = endpoint.get() if endpoint is not None else \
                stack.enter_context(judge_endpoint(cfg, workdir))
            llm = connect_llm_judge(cfg, url, model)
        for spec in by_kind["verifier"]:
            judge = VerifierJudge(cfg.judging.verifier)
            for shard in shards:
                judge_local_task(workdir, round_, shard, spec, judge.judge)
        if by_kind["reward_model"]:
            _judge_with_reward_models(cfg, workdir, round_, shards, by_kind["reward_model"],
                                      by_kind["ensemble"])
        if llm is not None:
            _judge_with_llm(workdir, round_, shards, by_kind["llm"][0], llm, show_progress)
            llm_requests = llm.client.budget.used
    cover = {s.source: stage.coverage(workdir, round_, s.source, s.fingerprint) for s in specs}
    pending = {src: c.pending for src, c in cover.items() if c.pending}
    return {"round": round_, "complete": not pending, "pending_groups": pending,
            "sources": {src: {"groups": c.groups, "judged": c.done, "fingerprint":
                              next(s.fingerprint for s in specs if s.source == src)}
                        for src, c in cover.items()},
            "llm_requests": llm_requests}


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


def _llm_pending(workdir: Path, round_: int, spec) -> bool:
    return stage.coverage(workdir, round_, spec.source, spec.fingerprint).pending > 0


def _judge_with_reward_models(cfg, wd, round_, shards, rm_specs, ensemble_specs):
    j = cfg.judging
    scorers: dict[str, RewardModelScorer] = {}

    def scorer(spec) -> RewardModelScorer:  # loaded on first use: skipped shards cost nothing
        if spec.source not in scorers:
            scorers[spec.source] = RewardModelScorer(spec.model_dir, spec.source[3:],
                                                     j.max_batch_tokens, j.max_length)
        return scorers[spec.source]

    members = [s for s in rm_specs if s.source in ensemble_members(cfg)]
    for shard in shards:
        scored: dict[str, list[dict]] = {}  # each model scores a shard once, ensemble included

        def rows_of(spec, groups, scored=scored):
            if spec.source not in scored:
                scored[spec.source] = scorer(spec).judge(groups)
            return scored[spec.source]

        for spec in rm_specs:
            judge_local_task(wd, round_, shard, spec, lambda groups, s=spec: rows_of(s, groups))
        for ens in ensemble_specs:
            judge_local_task(wd, round_, shard, ens, lambda groups: combine_scores(
                [rows_of(s, groups) for s in members], j.combine))


def _judge_with_llm(wd, round_, shards, spec, llm, show_progress: bool):
    with progress_bar(show_progress) as bar:
        job = bar.add_task(f"round {round_}: {spec.source}", total=None)
        for shard in shards:
            res = judge_llm_task(wd, round_, shard, spec, llm,
                                 on_group=lambda: bar.update(job, advance=1))
            if not res.complete:  # the request cap is spent: the rest waits for a rerun
                break
