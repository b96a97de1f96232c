"""Benchmark: the demo judge's build (``pipeline.demo_judge``), the two parts that take its
time, each against the way it was done before, side by side on the same inputs.

- Training step: one right-padded batch against the batch split into length buckets
  (``length_buckets``, gradients accumulated). The same drawn batches and weights for both
  (no optimizer step, so every repetition computes the same thing); the largest difference
  between the two gradients is printed, and the share of computed tokens that are padding.
- Held-out scoring (``constrained_greedy_scores``, the report's figures): the prompt re-read
  for every score slot against the prompt read once and the slots decoded on its cached keys
  and values; the number of groups whose scores differ between the two is printed (0 is
  right).

A demo policy is built first (``--policy`` takes an existing one). The last line printed is
one JSON object.

    python -m bench.demo_judge [--reps 3] [--steps 20] [--groups 256] [--quick]
    python bench/demo_judge.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/demo_judge.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench._common import emit_json, fmt, interleaved, machine, print_machine, spread  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.demo_judge import (  # noqa: E402
    _accumulate_step,
    _AuxHeads,
    _train_step,
    constrained_greedy_scores,
    judge_data,
    judge_prompt,
    length_buckets,
    new_judge_model,
)

QUICK = {"reps": 1, "steps": 2, "groups": 16, "policy_steps": 20, "train_prompts": 16,
         "batch_size": 8}


@torch.no_grad()
def rescored_greedy_scores(model, tokenizer, prompts: list[str], k: int, low: int,
                           high: int) -> list[list[int]]:
    """The scoring the build did before: the whole prompt, answer so far included, read
    again for each score slot."""
    digit_ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(low, high + 1)]
    sep = tokenizer(", ", add_special_tokens=False)["input_ids"]
    head = tokenizer('{"scores": [', add_special_tokens=False)["input_ids"]
    seqs = [tokenizer(p)["input_ids"] + head for p in prompts]
    scores: list[list[int]] = [[] for _ in prompts]
    for j in range(k):
        width, pad = max(map(len, seqs)), tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        attn = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        logits = model(input_ids=input_ids, attention_mask=attn).logits[:, -1, digit_ids]
        for i, best in enumerate(logits.argmax(-1).tolist()):
            scores[i].append(low + best)
            seqs[i] = seqs[i] + [digit_ids[best]] + (sep if j < k - 1 else [])
    return scores


def _padded_step(model, aux, batch, aux_layer: int) -> None:
    main, aux_loss = _train_step(model, aux, batch, aux_layer)
    (main + aux_loss).backward()


def _grads(model, aux, batch, step, aux_layer: int) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    aux.zero_grad(set_to_none=True)
    step(model, aux, batch, aux_layer)
    return [p.grad.clone() for p in [*model.parameters(), *aux.parameters()]
            if p.grad is not None]


def padding_share(batches, bucketed: bool) -> float:
    computed = real = 0
    for b in batches:
        lengths = b.attention_mask.sum(1).tolist()
        parts = length_buckets(lengths) if bucketed else [list(range(len(lengths)))]
        computed += sum(len(rows) * max(lengths[r] for r in rows) for rows in parts)
        real += sum(lengths)
    return 1 - real / computed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="training steps per repetition")
    ap.add_argument("--groups", type=int, default=256, help="held-out groups scored")
    ap.add_argument("--policy", type=Path, help="a demo policy directory (built if absent)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench/demo_judge"))
    ap.add_argument("--quick", action="store_true", help="tiny settings, end to end")
    args = ap.parse_args(argv)
    overrides = {}
    if args.quick:
        args.reps, args.steps, args.groups = QUICK["reps"], QUICK["steps"], QUICK["groups"]
        overrides = {"demo_model.max_steps": QUICK["policy_steps"],
                     "demo_judge.train_prompts": QUICK["train_prompts"],
                     "demo_judge.batch_size": QUICK["batch_size"]}
    overrides["demo_judge.heldout_groups"] = args.groups
    cfg = load_config(overrides=overrides)
    d, q = cfg.demo_judge, cfg.llm_judge
    info = machine()
    print_machine(info)

    policy = args.policy
    if policy is None:
        from pipeline.demo_model import build_demo_model

        policy = args.workdir / "demo-policy"
        if not (policy / "config.json").exists():
            print("building the demo policy ...", flush=True)
            build_demo_model(cfg, policy, show_progress=False)
    torch.manual_seed(d.seed)
    torch.set_num_threads(d.threads)
    batcher, held = judge_data(cfg, policy)
    model = new_judge_model(cfg, batcher.tok)
    aux = _AuxHeads(d.hidden_size, int(q.score_high - q.score_low) + 1, d.max_k)
    aux_layer = d.num_layers - 1
    batches = [batcher.batch(d.batch_size) for _ in range(args.steps)]
    print(f"demo judge: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.steps} batches of {d.batch_size} groups, {d.threads} torch thread(s)")

    grad_diff = max(float((a - b).abs().max()) for batch in batches for a, b in zip(
        _grads(model, aux, batch, _padded_step, aux_layer),
        _grads(model, aux, batch, _accumulate_step, aux_layer), strict=True))

    def train_with(step):
        def run() -> dict:
            started = time.perf_counter()
            for batch in batches:
                model.zero_grad(set_to_none=True)
                aux.zero_grad(set_to_none=True)
                step(model, aux, batch, aux_layer)
            return {"s_per_step": (time.perf_counter() - started) / len(batches)}
        return run

    print("training step (s):", flush=True)
    steps = interleaved({"padded": train_with(_padded_step),
                         "length_buckets": train_with(_accumulate_step)},
                        args.reps, show="s_per_step")
    step_s = {name: spread([r["s_per_step"] for r in runs], 4) for name, runs in steps.items()}
    step_ratio = spread([p["s_per_step"] / b["s_per_step"] for p, b in
                         zip(steps["padded"], steps["length_buckets"], strict=True)], 2)

    model.eval()
    prompts = [judge_prompt(g.messages, g.texts, q) for g in held]
    k, low, high = len(held[0].texts), int(q.score_low), int(q.score_high)
    got: dict[str, list] = {}

    def score_with(name, fn):
        def run() -> dict:
            started = time.perf_counter()
            got[name] = [s for i in range(0, len(prompts), 64)
                         for s in fn(model, batcher.tok, prompts[i:i + 64], k, low, high)]
            return {"seconds": time.perf_counter() - started}
        return run

    print(f"held-out scoring, {len(prompts)} groups of k={k} (s):", flush=True)
    scoring = interleaved({"rescored": score_with("rescored", rescored_greedy_scores),
                           "kv_cache": score_with("kv_cache", constrained_greedy_scores)},
                          args.reps, show="seconds")
    score_s = {name: spread([r["seconds"] for r in runs], 3) for name, runs in scoring.items()}
    score_ratio = spread([r["seconds"] / c["seconds"] for r, c in
                          zip(scoring["rescored"], scoring["kv_cache"], strict=True)], 2)
    differing = sum(a != b for a, b in zip(got["rescored"], got["kv_cache"], strict=True))

    pad_before, pad_after = padding_share(batches, False), padding_share(batches, True)
    print(f"training step: one padded batch {fmt(step_s['padded'], 3, 's')}, length buckets "
          f"{fmt(step_s['length_buckets'], 3, 's')}: {fmt(step_ratio, 2, 'x')}; padding "
          f"{pad_before:.1%} of computed tokens -> {pad_after:.1%}; largest gradient "
          f"difference {grad_diff:.2e}")
    print(f"held-out scoring: re-read per slot {fmt(score_s['rescored'], 2, 's')}, cached "
          f"{fmt(score_s['kv_cache'], 2, 's')}: {fmt(score_ratio, 2, 'x')}; groups scored "
          f"differently: {differing} of {len(prompts)}")
    record = {"benchmark": "demo_judge", "quick": args.quick, "machine": info,
              "batch_size": d.batch_size, "steps": args.steps, "step_s": step_s,
              "step_speedup": step_ratio, "padding_share": {"padded": round(pad_before, 4),
                                                            "length_buckets": round(pad_after, 4)},
              "max_grad_diff": grad_diff, "groups": len(prompts), "k": k, "scoring_s": score_s,
              "scoring_speedup": score_ratio, "groups_scored_differently": differing}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
