"""The shards of generation and judging as fleet jobs (see ``pipeline.fleet``).

These wrap the single-worker shard functions (``generation.generate_shard``,
``stage.judge_shard_at_once``, ``stage.judge_shard_journaled``) unchanged: the only
addition is the lease check between computing a shard and writing it, made by wrapping the
sampler or judge the shard function is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pipeline import generation
from pipeline.atomic import write_text_atomic
from pipeline.config import Config
from pipeline.fleet import Check, Lazy, ShardJob
from pipeline.judging import stage
from pipeline.store import round_dir, shard_path


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


def prepare_generation_round(workdir: Path, cfg: Config, round_: int):
    """What every worker does before claiming shards (each step is idempotent, so workers
    may race through it): refuse a second config in the round, write the prompts once, and
    plan the shards. Returns (config hash, shards)."""
    config_hash = cfg.fingerprint(*generation.GENERATION_SECTIONS)
    generation.check_round_config(workdir, round_, config_hash)
    train = generation.write_round_prompts(workdir, cfg, round_)
    write_text_atomic(cfg.to_toml(), round_dir(workdir, round_) / "generate.config.toml")
    return config_hash, generation.plan_shards(train, cfg.generation.shard_size)


def generation_jobs(workdir: Path, cfg: Config, round_: int, sampler: Lazy,
                    run_shard: Callable = generation.generate_shard) -> list[ShardJob]:
    """One job per shard of the round; ``sampler`` starts the engine when first needed.
    ``run_shard`` has ``generate_shard``'s signature (a flow passes it as a Prefect task)."""
    config_hash, shards = prepare_generation_round(workdir, cfg, round_)

    def run(i: int, check: Check):
        return run_shard(_CheckedSampler(sampler.get(), check), workdir, round_, i,
                         shards[i], config_hash)

    return [ShardJob(shard_path(workdir, "candidates", round_, i, config_hash),
                     partial(run, i), sampler.get)
            for i in range(len(shards))]


@dataclass
class JudgeSpec:
    """A judging source as the fleet sees it. ``judge`` (a ``Lazy``) gives, once started,
    a callable groups -> rows, or for ``journaled`` sources (LLM judges) an object with
    ``judge_groups`` yielding (group, rows) as groups finish."""

    source: str
    judge: Lazy
    journaled: bool = False


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


def _judge_one(workdir: Path, round_: int, shard: Path, spec: JudgeSpec,
               judge_local: Callable, judge_journaled: Callable, check: Check):
    if spec.journaled:
        return judge_journaled(workdir, round_, shard, spec.source,
                               _CheckedJournaledJudge(spec.judge.get(), check))
    judge = spec.judge.get()

    def checked(groups):
        rows = judge(groups)
        check()
        return rows

    return judge_local(workdir, round_, shard, spec.source, checked)


def judging_jobs(workdir: Path, round_: int, specs: list[JudgeSpec],
                 judge_local: Callable = stage.judge_shard_at_once,
                 judge_journaled: Callable = stage.judge_shard_journaled) -> list[ShardJob]:
    """One job per (candidates shard, source), shard-major so that workers starting
    together spread over shards; ``judge_local``/``judge_journaled`` have the signatures of
    ``stage.judge_shard_at_once``/``judge_shard_journaled`` (a flow passes Prefect tasks)."""
    return [ShardJob(stage.judgment_path(workdir, round_, spec.source, shard),
                     partial(_judge_one, workdir, round_, shard, spec, judge_local,
                             judge_journaled),
                     spec.judge.get)
            for shard in stage.candidate_shards(workdir, round_) for spec in specs]
