"""Prefect flow: the loop. Each round: evaluate the current policy on held-out prompts,
generate groups with it, judge, merge human rankings, rank, and train the next policy.

Round r's data is sampled by policy r (policy 0 = the base) and trains policy r+1
(``WORKDIR/models/policy-rNNN``); after the last round the final policy is evaluated too.
Every stage leaves a marker in ``rounds/rNNN/_stages/`` when it completes, and every stage
is itself resumable from its files, so a crashed loop restarted with the same command goes
on at the first unfinished stage of the first unfinished round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.generate import run_generation
from flows.judge import judge_flow, reward_model_dirs
from flows.rank import rank_flow
from pipeline import generation
from pipeline.atomic import write_text_atomic
from pipeline.catalog import rebuild
from pipeline.config import Config, load_config
from pipeline.humans import import_human_file
from pipeline.report import header, summary_rows, write_report
from pipeline.simulated_annotator import write_annotations
from pipeline.store import round_dir
from trainers.evaluate import evaluate_round, read_evals, sample_heldout
from trainers.loop import train

STAGES = ("evaluate", "generate", "judge", "annotate", "rank", "train")


def policy_dir(workdir: Path, cfg: Config, round_: int) -> Path:
    return cfg.require_policy(workdir) if round_ == 0 else \
        Path(workdir) / "models" / f"policy-r{round_:03d}"


def stage_marker(workdir: Path, round_: int, stage: str) -> Path:
    return round_dir(workdir, round_) / "_stages" / f"{stage}.json"


def _done(workdir: Path, round_: int, stage: str) -> bool:
    return stage_marker(workdir, round_, stage).exists()


def _mark(workdir: Path, round_: int, stage: str, info: dict, started: float) -> None:
    write_text_atomic(json.dumps({"seconds": round(time.perf_counter() - started, 1), **info},
                                 indent=2, default=str), stage_marker(workdir, round_, stage))


@task(name="evaluate-and-generate", cache_policy=NO_CACHE)
def evaluate_and_generate(workdir: Path, cfg: Config, round_: int, rounds: int) -> dict:
    """One vLLM engine for the round's policy: held-out evaluation, then the round's groups."""
    policy = policy_dir(workdir, cfg, round_)
    base = policy_dir(workdir, cfg, 0)
    cfg.policy.model = str(policy)
    need_eval = not _done(workdir, round_, "evaluate")
    need_gen = round_ < rounds and not _done(workdir, round_, "generate")
    info: dict = {}
    if not (need_eval or need_gen):
        return info
    sampler = generation.VLLMGroupSampler(policy, cfg)
    try:
        if need_eval:
            started = time.perf_counter()
            samples = sample_heldout(sampler, cfg, workdir, round_)
            previous = read_evals(workdir).get(round_ - 1)
            rms = reward_model_dirs(cfg, workdir) if "reward_model" in cfg.judging.sources \
                else []
            rms = [(n, p) for n, p in rms if _matches(f"rm:{n}", cfg.loop.training_reward)]
            info["evaluate"] = evaluate_round(cfg, workdir, round_, samples, policy, base, rms,
                                              previous)
            _mark(workdir, round_, "evaluate", info["evaluate"], started)
        if need_gen:
            started = time.perf_counter()
            summary = run_generation(workdir, cfg, round_, sampler=sampler)
            summary.pop("shard_results")
            info["generate"] = summary
            _mark(workdir, round_, "generate", summary, started)
    finally:
        sampler.close()
    return info


def _matches(source: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(source, pattern)


@task(name="annotate", cache_policy=NO_CACHE)
def annotate(workdir: Path, cfg: Config, round_: int) -> dict:
    paths = write_annotations(workdir, round_, cfg.task.name, cfg.loop.annotator_fraction,
                              cfg.loop.annotator_noise, cfg.loop.annotator_cycles,
                              seed=cfg.task.seed)
    return {str(p): import_human_file(workdir, p).__dict__ for p in paths}


@task(name="train", cache_policy=NO_CACHE)
def train_round(workdir: Path, cfg: Config, round_: int) -> dict:
    policy = policy_dir(workdir, cfg, round_)
    reference = policy_dir(workdir, cfg, 0) if cfg.loop.reference == "base" else policy
    out = policy_dir(workdir, cfg, round_ + 1)
    ckpts = out.with_name(out.name + ".checkpoints")
    result = train(cfg, workdir, [round_], policy, reference, out, resume=ckpts.exists())
    return result.__dict__


@flow(name="iterate", validate_parameters=False)
def iterate_flow(workdir: str, config_path: str | None = None, overrides: dict | None = None,
                 rounds: int | None = None) -> dict:
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    rounds = rounds or cfg.loop.rounds
    cfg.require_policy(wd)
    if "reward_model" in cfg.judging.sources:
        reward_model_dirs(cfg, wd)  # fail before any work if a reward model is missing
    write_text_atomic(cfg.to_toml(), wd / "iterate.config.toml")
    notes: list[str] = []
    stopped_at = None
    for r in range(rounds + 1):  # the last pass only evaluates the final policy
        evaluate_and_generate(wd, load_config(config_path, overrides), r, rounds)
        evals = read_evals(wd)
        if evals.get(r, {}).get("overoptimised"):
            notes.append(f"round {r}: training reward rose while the gold score fell "
                         "(over-optimisation, Gao et al. 2022)")
            if cfg.loop.stop_on_overoptimisation:
                stopped_at = r
                notes.append(f"stopped at round {r} (loop.stop_on_overoptimisation)")
                break
        if r == rounds:
            break
        for stage in ("judge", "annotate", "rank", "train"):
            if _done(wd, r, stage):
                continue
            if stage == "annotate" and not cfg.loop.simulated_annotator:
                continue
            started = time.perf_counter()
            if stage == "judge":
                info = judge_flow(workdir, config_path, r, overrides)
            elif stage == "annotate":
                info = annotate(wd, cfg, r)
            elif stage == "rank":
                info = rank_flow(workdir, config_path, r, overrides)
            else:
                info = train_round(wd, cfg, r)
            _mark(wd, r, stage, info, started)
    rebuild(wd)
    evals = read_evals(wd)
    report = write_report(wd, evals, notes)
    return {"rounds": rounds, "stopped_at": stopped_at, "report": str(report),
            "header": header(), "rows": summary_rows(evals), "notes": notes}
