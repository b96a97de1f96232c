"""The shards of generation and judging as lease-claimed jobs (see ``pipeline.fleet``).

Every generation and judging run goes through here, one worker or many: ``grpo generate``
and ``grpo judge`` are a fleet of one. The jobs wrap the single-shard functions
(``generation.generate_shard``, ``stage.judge_shard_at_once``,
``stage.judge_shard_journaled``) unchanged; the only addition is the lease check between
computing a shard and writing it, made by wrapping the sampler or judge they are given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pipeline import generation
from pipeline.config import Config
from pipeline.fleet import Check, Lazy, ShardJob
from pipeline.judging import stage
from pipeline.judging.naming import ensemble_members
from pipeline.judging.sources import (
    SharedEndpoint,
    SourceSpec,
    configured_sources,
    connect_llm_judge,
)
from pipeline.store import shard_path


class _CheckedSampler:
    """The sampler, with the lease checked after sampling and before the shard is written."""

    def __init__(self, sampler: Any, check: Check) -> None:
        self._sampler, self._check = sampler, check

    def sample(self, *args, **kwargs):
        table = self._sampler.sample(*args, **kwargs)
        self._check()
        return table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sampler, name)


def generation_jobs(workdir: Path, plan, sampler: Lazy,
                    run_shard: Callable = generation.generate_shard,
                    on_done: Callable | None = None) -> list[ShardJob]:
    """One job per shard of a planned round (``generation.plan_round``, idempotent, so
    workers may race through it); ``sampler`` starts the engine when first needed.
    ``run_shard`` has ``generate_shard``'s signature (a flow passes it as a Prefect task)."""

    def run(i: int, check: Check):
        result = run_shard(_CheckedSampler(sampler.get(), check), workdir, plan, i)
        if on_done is not None:
            on_done(result)
        return result

    return [ShardJob(shard_path(workdir, "candidates", plan.round, i, plan.config_hash),
                     partial(run, i), sampler.get)
            for i in range(len(plan.shards))]


@dataclass
class JudgeJob:
    """A configured source as the jobs see it. ``judge`` (a ``Lazy``) gives, once started, a
    callable groups -> rows, or for ``journaled`` sources (LLM judges) an object with
    ``judge_groups`` yielding (group, rows) as groups finish."""

    spec: SourceSpec
    judge: Lazy
    journaled: bool = False


def judge_jobs_for(cfg: Config, workdir: Path, endpoint: SharedEndpoint) -> list[JudgeJob]:
    """The configured sources, each started on first use: models load, and the LLM judge's
    endpoint (a server, when embedded) starts, only if a shard is left for them. Reward
    models score a shard once each, the ensemble reusing their rows."""
    from pipeline.judging.reward_model import RewardModelScorer, combine_scores
    from pipeline.judging.verifier import VerifierJudge

    j = cfg.judging
    specs = configured_sources(cfg, workdir)
    scorers: dict[str, Lazy] = {
        s.source: Lazy(lambda s=s: RewardModelScorer(s.model_dir, s.source[3:],
                                                     j.max_batch_tokens, j.max_length))
        for s in specs if s.kind == "reward_model"}
    last: dict[str, tuple[tuple[str, ...], list[dict]]] = {}

    def rm_rows(source: str, groups) -> list[dict]:
        key = tuple(g.group_id for g in groups)
        if last.get(source, (None,))[0] != key:
            last[source] = (key, scorers[source].get().judge(groups))
        return last[source][1]

    members = ensemble_members(cfg)
    jobs = []
    for spec in specs:
        if spec.kind == "verifier":
            jobs.append(JudgeJob(spec, Lazy(lambda: VerifierJudge(j.verifier).judge)))
        elif spec.kind == "reward_model":
            jobs.append(JudgeJob(spec, Lazy(lambda s=spec.source: partial(rm_rows, s))))
        elif spec.kind == "ensemble":
            jobs.append(JudgeJob(spec, Lazy(lambda: lambda groups: combine_scores(
                [rm_rows(m, groups) for m in members], j.combine))))
        else:
            jobs.append(JudgeJob(spec, Lazy(lambda: connect_llm_judge(cfg, *endpoint.get())),
                                 journaled=True))
    return jobs


class _CheckedJournaledJudge:
    """The LLM judge, with the lease checked before each finished group is journaled and
    before the shard is written."""

    def __init__(self, judge: Any, check: Check) -> None:
        self._judge, self._check = judge, check

    def judge_groups(self, groups: Iterable):
        for item in self._judge.judge_groups(groups):
            self._check()
            yield item
        self._check()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._judge, name)


def _judge_one(workdir: Path, round_: int, shard: Path, job: JudgeJob,
               judge_local: Callable, judge_journaled: Callable,
               on_group: Callable | None, check: Check):
    source, fp = job.spec.source, job.spec.fingerprint
    if job.journaled:
        return judge_journaled(workdir, round_, shard, source, fp,
                               _CheckedJournaledJudge(job.judge.get(), check), on_group)
    judge = job.judge.get()

    def checked(groups):
        rows = judge(groups)
        check()
        return rows

    return judge_local(workdir, round_, shard, source, fp, checked)


def judging_jobs(workdir: Path, round_: int, jobs: list[JudgeJob],
                 judge_local: Callable = stage.judge_shard_at_once,
                 judge_journaled: Callable = stage.judge_shard_journaled,
                 on_group: Callable | None = None) -> list[ShardJob]:
    """One job per (candidates shard, source), shard-major so that workers starting
    together spread over shards; ``judge_local``/``judge_journaled`` have the signatures of
    ``stage.judge_shard_at_once``/``judge_shard_journaled`` (a flow passes Prefect tasks).
    Before any work, judgments of a source made by another fingerprint are set aside."""
    for job in jobs:
        stage.retire_other_fingerprints(workdir, round_, job.spec.source, job.spec.fingerprint)
    return [ShardJob(stage.judgment_path(workdir, round_, job.spec.source, job.spec.fingerprint,
                                         shard),
                     partial(_judge_one, workdir, round_, shard, job, judge_local,
                             judge_journaled, on_group),
                     job.judge.get)
            for shard in stage.candidate_shards(workdir, round_) for job in jobs]


@contextlib.contextmanager
def engine(plan, cfg: Config, workdir: Path, sampler=None):
    """A ``Lazy`` vLLM sampler for a round's policy (or the one the caller already holds),
    closed on exit if it was started here."""
    own = sampler is None
    lazy = Lazy(lambda: generation.VLLMGroupSampler(plan.policy, cfg, workdir)) if own \
        else Lazy(lambda: sampler)
    try:
        yield lazy
    finally:
        if own and lazy.started:
            lazy.get().close()
