"""Benchmark: the groupwise trainer's speed and memory, each comparison side by side in one run.

(a) prompt encoded once per group vs the prompt repeated k times, k = 2, 4, 8:
    tokens/s of a forward+backward pass, and activation memory (bytes autograd saves
    for backward, counted by a saved-tensors hook: exact and noise-free);
(b) one listwise (Plackett-Luce) pass over a k=8 group vs the same group expanded into all
    28 pairs, each a chosen/rejected pair with its prompt (what pairwise trainers do);
(c) at k=2, this trainer vs trl's DPOTrainer on the same pairs and tokens: loss equality on
    one batch, then pairs/s and peak RSS of one epoch each, each in its own subprocess.

(a) and (b) use a random Llama (hidden 256, 4 layers) with prompt length P=64 and completion
length C=16 (P = 4C, the case PEERS.md works through); (c) uses the demo policy and data.
Run with `make bench` (installs trl as a bench-only extra). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from trainers.logprobs import GroupBatch, group_logps, group_logps_naive
from trainers.losses import plackett_luce_loss

ROOT = Path(__file__).resolve().parent.parent


def bench_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=320, hidden_size=256, intermediate_size=1024,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=1024)
    return LlamaForCausalLM(cfg)


def random_batch(b: int, k: int, p: int, c: int, seed: int = 0) -> GroupBatch:
    g = torch.Generator().manual_seed(seed)
    return GroupBatch(torch.randint(3, 320, (b, p), generator=g),
                      torch.ones(b, p, dtype=torch.long),
                      torch.randint(3, 320, (b, k, c), generator=g),
                      torch.ones(b, k, c, dtype=torch.long))


class SavedBytes:
    """Bytes autograd keeps for backward: the activation memory of a pass."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def timed_pass(model, fn, batch, ranks, repeats: int) -> tuple[float, int]:
    """Median seconds of forward+loss+backward, and activation bytes of one pass."""
    times = []
    saved = SavedBytes()
    for r in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        if r == 0:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                logps = fn(model, batch)
                loss = plackett_luce_loss(logps, None, ranks, 1.0)[0].mean()
        else:
            logps = fn(model, batch)
            loss = plackett_luce_loss(logps, None, ranks, 1.0)[0].mean()
        loss.backward()
        if r > 0:  # the first pass warms up and measures memory
            times.append(time.perf_counter() - start)
    return statistics.median(times), saved.total


def part_a(model, repeats: int, p: int, c: int, groups: int) -> list[dict]:
    out = []
    for k in (2, 4, 8):
        batch = random_batch(groups, k, p, c)
        ranks = torch.arange(k).repeat(groups, 1)
        shared_s, shared_mem = timed_pass(model, group_logps, batch, ranks, repeats)
        naive_s, naive_mem = timed_pass(model, group_logps_naive, batch, ranks, repeats)
        sequence_tokens = groups * k * (p + c)  # same useful work on both sides
        out.append({"k": k, "shared_tokens_per_s": round(sequence_tokens / shared_s),
                    "repeated_tokens_per_s": round(sequence_tokens / naive_s),
                    "speedup": round(naive_s / shared_s, 2),
                    "shared_activation_mib": round(shared_mem / 2**20, 1),
                    "repeated_activation_mib": round(naive_mem / 2**20, 1),
                    "memory_ratio": round(naive_mem / shared_mem, 2),
                    "token_work_ratio_theory": round(k * (p + c) / (p + k * c), 2)})
    return out


def part_b(model, repeats: int, p: int, c: int, groups: int) -> dict:
    k = 8
    batch = random_batch(groups, k, p, c, seed=1)
    ranks = torch.arange(k).repeat(groups, 1)
    listwise_s, listwise_mem = timed_pass(model, group_logps, batch, ranks, repeats)
    # All 28 pairs of each group, each pair a K=2 "group" whose prompt is repeated, as a
    # pairwise trainer would feed them (chosen and rejected each carry the prompt).
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    pb = GroupBatch(batch.prompt_ids.repeat_interleave(len(pairs), 0),
                    batch.prompt_mask.repeat_interleave(len(pairs), 0),
                    torch.stack([batch.completion_ids[g][[i, j]] for g in range(groups)
                                 for i, j in pairs]),
                    torch.stack([batch.completion_mask[g][[i, j]] for g in range(groups)
                                 for i, j in pairs]))
    pair_ranks = torch.tensor([[0, 1]]).repeat(groups * len(pairs), 1)
    pairs_s, pairs_mem = timed_pass(model, group_logps_naive, pb, pair_ranks, repeats)
    return {"k": k, "pairs_per_group": len(pairs),
            "listwise_s_per_group": round(listwise_s / groups, 4),
            "all_pairs_s_per_group": round(pairs_s / groups, 4),
            "speedup": round(pairs_s / listwise_s, 2),
            "listwise_activation_mib": round(listwise_mem / 2**20, 1),
            "all_pairs_activation_mib": round(pairs_mem / 2**20, 1),
            "sequence_passes": {"listwise": f"1 prompt + {k} completions",
                                "all_pairs": 2 * len(pairs)}}


def part_c(workdir: Path) -> dict:
    """Runs this trainer and trl in subprocesses on the same pairs; compares a batch's loss."""
    from bench.trl_pairs import prepare_pairs

    info = prepare_pairs(workdir)
    results = {"pairs": info["pairs"], "loss_check": info["loss_check"]}
    for side in ("ours", "trl", "trl_precompute"):
        proc = subprocess.run([sys.executable, "-m", "bench.trl_pairs", side, str(workdir)],
                              capture_output=True, text=True, cwd=ROOT, timeout=1800)
        if proc.returncode != 0:
            results[side] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
            continue
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "pairs_per_s" in results.get("ours", {}) and "pairs_per_s" in results.get("trl", {}):
        results["speed_ratio_ours_over_trl"] = round(
            results["ours"]["pairs_per_s"] / results["trl"]["pairs_per_s"], 2)
        results["rss_ratio_trl_over_ours"] = round(
            results["trl"]["peak_rss_mib"] / results["ours"]["peak_rss_mib"], 2)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--groups", type=int, default=8, help="groups per pass in (a) and (b)")
    ap.add_argument("--skip-trl", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = bench_model()
    p, c = 64, 16
    result = {"benchmark": "trainer", "threads": torch.get_num_threads(), "P": p, "C": c,
              "groups_per_pass": args.groups,
              "a_prefix_sharing": part_a(model, args.repeats, p, c, args.groups),
              "b_listwise_vs_pairs": part_b(model, args.repeats, p, c, args.groups)}
    if not args.skip_trl:
        result["c_vs_trl_k2"] = part_c(Path(args.workdir))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
