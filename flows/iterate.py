"""Prefect flow: the loop. Each round: evaluate the current policy on held-out prompts,
generate groups with it, judge, merge human rankings, rank, and train the next policy.

Round r's data is sampled by policy r (policy 0 = the base) and trains policy r+1
(``WORKDIR/models/policy-rNNN``); after the last round the final policy is evaluated too.
A round is finished once its policy is trained; finished rounds are history and are not
revisited. In the first unfinished round every stage runs again and skips, from its own
files, whatever is already done, so a crashed loop restarted with the same command goes on
where it stopped, and a changed judge re-judges that round instead of reusing stale verdicts.

One vLLM engine serves the loop (``pipeline.policy_engine``): each round's policy is loaded
into it in place, and on a CPU it stays up while the round is judged and trained.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.generate import run_generation
from flows.judge import judge_round
from flows.rank import rank_with_config
from pipeline import generation
from pipeline.annotation import import_human_file
from pipeline.atomic import write_text_atomic
from pipeline.catalog import rebuild
from pipeline.config import Config, load_config
from pipeline.judging.sources import SharedEndpoint
from pipeline.policy_engine import PolicyEngine
from pipeline.report import header, summary_rows, write_report
from pipeline.resolve import preflight, resolve_policy
from pipeline.rounds import (
    mark_stage,
    policy_for_round,
    stage_done,
    trained_policy_dir,
)
from pipeline.simulated_annotator import write_annotations
from trainers.evaluate import evaluate_round, read_evals, sample_heldout
from trainers.loop import train


def finished_rounds(workdir: Path) -> int:
    """Rounds 0..n-1 are finished (their policy is trained)."""
    n = 0
    while stage_done(workdir, n, "train"):
        n += 1
    return n


@task(name="evaluate-and-generate", cache_policy=NO_CACHE)
def evaluate_and_generate(workdir: Path, cfg: Config, round_: int, generate: bool,
                          engines: PolicyEngine, endpoint=None) -> dict:
    """The round's policy in the loop's engine: held-out evaluation, then the round's groups."""
    base = resolve_policy(cfg, workdir)
    policy = policy_for_round(workdir, base, round_)
    plan = generation.plan_round(workdir, cfg, round_, policy)
    need_eval = not stage_done(workdir, round_, "evaluate")
    need_gen = generate and generation.pending(workdir, plan)
    info: dict = {}
    if need_eval or need_gen:
        sampler = engines.sampler(policy)
        if need_eval:
            started = time.perf_counter()
            samples = sample_heldout(sampler, plan, workdir, cfg.loop.eval_k)
            previous = read_evals(workdir).get(round_ - 1)
            info["evaluate"] = evaluate_round(cfg, workdir, round_, samples, plan.heldout,
                                              policy, base, previous, endpoint)
            mark_stage(workdir, round_, "evaluate", info["evaluate"], started)
        if need_gen:
            info["generate"] = run_generation(workdir, cfg, round_, policy, sampler=sampler,
                                              plan=plan)
            info["generate"].pop("shard_results")
    elif generate:  # every shard exists: make sure the round is marked generated
        run_generation(workdir, cfg, round_, policy, plan=plan)
    return info


@task(name="annotate", cache_policy=NO_CACHE)
def annotate(workdir: Path, cfg: Config, round_: int) -> dict:
    paths = write_annotations(workdir, round_, cfg, seed=cfg.prompts.seed)
    return {str(p): import_human_file(workdir, p).__dict__ for p in paths}


@task(name="train", cache_policy=NO_CACHE)
def train_round(workdir: Path, cfg: Config, round_: int) -> dict:
    base = resolve_policy(cfg, workdir)
    policy = policy_for_round(workdir, base, round_)
    reference = base if cfg.loop.reference == "base" else policy
    out = trained_policy_dir(workdir, round_ + 1)
    ckpts = out.with_name(out.name + ".checkpoints")
    if (out / "config.json").is_file() and (ckpts / "result.json").is_file():
        return {"output_dir": str(out), "kept": "trained before the last stop"}
    result = train(cfg, workdir, [round_], policy, reference, out, resume=ckpts.exists(),
                   overwrite=True)
    return result.__dict__


@flow(name="iterate", validate_parameters=False)
def iterate_flow(workdir: str, config_path: str | None = None, overrides: dict | None = None,
                 rounds: int | None = None, new_rounds: int | None = None) -> dict:
    """Run the loop up to ``rounds`` rounds in all (default ``loop.rounds``), or, with
    ``new_rounds``, that many rounds past those already finished (what a schedule runs)."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    preflight(cfg, wd, policy=True, prompts=True, judges=True)
    first = finished_rounds(wd)
    target = first + new_rounds if new_rounds else (rounds or cfg.loop.rounds)
    write_text_atomic(cfg.to_toml(), wd / "iterate.config.toml")
    notes: list[str] = []
    stopped_at = None
    with SharedEndpoint(cfg, wd) as endpoint, PolicyEngine(cfg, wd) as engines:
        if first < target and not stage_done(wd, first, "judge"):  # judging ahead
            endpoint.start_early()
        stopped_at = _rounds(wd, cfg, first, target, endpoint, engines, notes)
    rebuild(wd)
    evals = read_evals(wd)
    if not cfg.loop.gold:
        notes.append("no gold source (loop.gold): gold score, hack rate and the "
                     "over-optimisation watch are not measured")
    report = write_report(wd, evals, notes)
    return {"rounds": target, "first_round": first, "stopped_at": stopped_at,
            "report": str(report), "header": header(), "rows": summary_rows(evals),
            "notes": notes, "engine": engines.summary(), "judge_server": endpoint.summary()}


def _rounds(wd: Path, cfg: Config, first: int, target: int, endpoint, engines: PolicyEngine,
            notes: list[str]) -> int | None:
    """Rounds first..target-1, then the final evaluation; the round it stopped at, if any.
    One judge endpoint (the embedded server) and one policy engine serve every round."""
    for r in range(first, target + 1):  # the last pass only evaluates the final policy
        evaluate_and_generate(wd, cfg, r, generate=r < target, engines=engines,
                              endpoint=endpoint)
        engines.idle()
        evals = read_evals(wd)
        if evals.get(r, {}).get("overoptimised"):
            notes.append(f"round {r}: training reward rose while the gold score fell "
                         "(over-optimisation, Gao et al. 2022)")
            if cfg.loop.stop_on_overoptimisation:
                notes.append(f"stopped at round {r} (loop.stop_on_overoptimisation)")
                return r
        if r == target:
            return None
        started = time.perf_counter()
        judged = judge_round(wd, cfg, r, endpoint=endpoint)
        if not judged["complete"]:
            pending = ", ".join(f"{s}: {n} groups" for s, n in judged["pending_groups"].items())
            notes.append(f"round {r}: judging is not finished ({pending} pending; the request "
                         "cap llm_judge.max_requests was reached); run `grpo iterate` again to "
                         "continue, or raise the cap")
            return r
        mark_stage(wd, r, "judge", {"sources": judged["sources"]}, started)
        if cfg.loop.simulated_annotator and not stage_done(wd, r, "annotate"):
            started = time.perf_counter()
            mark_stage(wd, r, "annotate", annotate(wd, cfg, r), started)
        rank_with_config(wd, cfg, r)
        started = time.perf_counter()
        mark_stage(wd, r, "train", train_round(wd, cfg, r), started)
    return None
