"""Benchmark: the groupwise trainer's speed and memory, each comparison side by side in one run.

(a) prompt encoded once per group (KV-cache repeat; and the packed block-mask form used
    under gradient checkpointing) vs the prompt repeated k times, k = 2, 4, 8: tokens/s of
    forward + Plackett-Luce loss + backward, against the theoretical token-work ratio
    k(P+C) / (P+kC); activation memory = bytes autograd saves (exact, noise-free);
(b) one listwise pass over a k=8 group vs the same group expanded into its 28 pairs;
(c) issue 14, goal 4: at k=2 and ~100M parameters, this trainer vs trl's DPOTrainer on the
    same pairs and tokens: one batch's DPO loss both ways, then pairs/s and peak RSS of one
    epoch each (model directories and data on disk to a saved model), each run in its own
    subprocess;
(d) issue 11: same model and pairs, LoRA with the reference = adapter disabled (and with the
    reference cached) vs full fine-tuning with the cached reference vs trl's DPOTrainer
    with the same LoRA settings: time per optimizer step and peak RSS.

Every figure is the median of ``--repeats`` (>= 3) repetitions, interleaved (each
repetition runs every variant once, in turn), with the spread (min..max). ``--quick``: a
tiny model, few pairs, one repetition: checks that every part runs (tests/test_bench.py).
``python -m bench.trainer`` or ``python bench/trainer.py``; last line: one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # `python bench/trainer.py`: make the project importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainers.logprobs import (  # noqa: E402
    GroupBatch,
    group_logps,
    group_logps_naive,
    group_logps_packed,
)
from trainers.losses import plackett_luce_loss  # noqa: E402

# --- date, machine, spread, JSON line: to move to bench/_common.py once it lands -----------


def machine() -> dict:
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if cpuinfo.exists() \
        else platform.processor()
    return {"date": datetime.date.today().isoformat(), "cpu": model,
            "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def spread(values: list[float], digits: int = 3) -> dict:
    """Median and min..max of repetitions."""
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits),
            "n": len(values)}


def say(text: str) -> None:
    print(text, flush=True)


# --- (a) and (b): log-prob passes on a random Llama -----------------------------------------


def bench_model(seed: int = 0, hidden: int = 256, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=320, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      num_key_value_heads=hidden // 64, max_position_embeddings=1024)
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


def one_pass(model, fn, batch, ranks) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = plackett_luce_loss(fn(model, batch), None, ranks, 1.0)[0].mean()
    loss.backward()
    return time.perf_counter() - start


def activation_bytes(model, fn, batch, ranks) -> int:
    saved = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loss = plackett_luce_loss(fn(model, batch), None, ranks, 1.0)[0].mean()
    loss.backward()
    return saved.total


def interleaved(model, variants: dict, batch, ranks, repeats: int) -> dict[str, list[float]]:
    """Seconds per pass of each variant, one warm-up each, then ``repeats`` rounds in turn."""
    for fn in variants.values():
        one_pass(model, fn, batch, ranks)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(one_pass(model, fn, batch, ranks))
    return times


def part_a(model, repeats: int, p: int, c: int, groups: int) -> list[dict]:
    out = []
    for k in (2, 4, 8):
        batch = random_batch(groups, k, p, c)
        ranks = torch.arange(k).repeat(groups, 1)
        variants = {"once": group_logps, "packed": group_logps_packed,
                    "repeated": group_logps_naive}
        times = interleaved(model, variants, batch, ranks, repeats)
        sequence_tokens = groups * k * (p + c)  # the same useful work for every variant
        speedups = [r / s for r, s in zip(times["repeated"], times["once"], strict=True)]
        packed = [r / s for r, s in zip(times["repeated"], times["packed"], strict=True)]
        theory = k * (p + c) / (p + k * c)
        mem = {name: activation_bytes(model, fn, batch, ranks) for name, fn in variants.items()}
        out.append({"k": k, "theory": round(theory, 2),
                    "once_tokens_per_s": round(sequence_tokens /
                                               statistics.median(times["once"])),
                    "repeated_tokens_per_s": round(sequence_tokens /
                                                   statistics.median(times["repeated"])),
                    "speedup_once": spread(speedups, 2),
                    "speedup_packed": spread(packed, 2),
                    "once_share_of_theory": round(statistics.median(speedups) / theory, 2),
                    "activation_mib": {n: round(b / 2**20, 1) for n, b in mem.items()}})
    return out


def part_b(model, repeats: int, p: int, c: int, groups: int) -> dict:
    k = 8
    batch = random_batch(groups, k, p, c, seed=1)
    ranks = torch.arange(k).repeat(groups, 1)
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
    one_pass(model, group_logps, batch, ranks)
    listwise, all_pairs = [], []
    for _ in range(repeats):
        listwise.append(one_pass(model, group_logps, batch, ranks) / groups)
        all_pairs.append(one_pass(model, group_logps_naive, pb, pair_ranks) / groups)
    return {"k": k, "pairs_per_group": len(pairs),
            "listwise_s_per_group": spread(listwise, 4),
            "all_pairs_s_per_group": spread(all_pairs, 4),
            "speedup": spread([a / b for a, b in zip(all_pairs, listwise, strict=True)], 1),
            "listwise_activation_mib": round(
                activation_bytes(model, group_logps, batch, ranks) / 2**20, 1),
            "all_pairs_activation_mib": round(
                activation_bytes(model, group_logps_naive, pb, pair_ranks) / 2**20, 1)}


# --- (c) and (d): whole training runs, each in its own subprocess ----------------------------


def run_sides(workdir: Path, model_dir: Path, sides: tuple[str, ...], repeats: int) -> dict:
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for rep in range(repeats):
        for side in sides:
            proc = subprocess.run([sys.executable, "-m", "bench.trl_pairs", side, str(workdir),
                                   str(model_dir)], capture_output=True, text=True, cwd=ROOT,
                                  timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"{side}: {proc.stderr.strip()[-2000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[side].append(row)
            say(f"  rep {rep + 1} {side:17s} {row['seconds']:8.2f} s in all, "
                f"{row['train_seconds']:7.2f} s training, {row['steps']} steps, "
                f"peak RSS {row['peak_rss_mib']:7.0f} MiB")
    return runs


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for side, rows in runs.items():
        out[side] = {"pairs_per_s": spread([r["pairs_per_s"] for r in rows], 2),
                     "s_per_step": spread([r["s_per_step"] for r in rows], 3),
                     "peak_rss_mib": spread([r["peak_rss_mib"] for r in rows], 0),
                     "steps": rows[0]["steps"], "pairs": rows[0]["pairs"]}
    return out


def ratio(runs, a: str, b: str, key: str) -> dict:
    """Per-repetition ratio a/b of ``key`` (the repetitions ran side by side)."""
    return spread([x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)], 2)


def parts_c_d(workdir: Path, n_pairs: int, size: dict, repeats: int,
              source: tuple[Path, Path] | None) -> dict:
    from bench.trl_pairs import SIDES, bench_policy, prepare, source_round

    store, policy = source or source_round(workdir)
    model_dir = bench_policy(workdir / f"policy-{size['hidden']}x{size['layers']}", policy,
                             **size)
    from transformers import AutoModelForCausalLM

    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir)
                   .parameters())
    info = prepare(workdir, model_dir, n_pairs, (store, policy))
    say(f"  {info['pairs']} pairs, model {n_params / 1e6:.1f}M parameters; one batch's DPO "
        f"loss: ours {info['loss_check']['ours']}, trl {info['loss_check']['trl']}")
    runs = run_sides(workdir, model_dir, SIDES, repeats)
    return {"parameters": n_params, "pairs": info["pairs"], "loss_check": info["loss_check"],
            "sides": summarise(runs),
            "c_speed_ours_over_trl": ratio(runs, "ours_full", "trl_full", "pairs_per_s"),
            "c_rss_ours_over_trl": ratio(runs, "ours_full", "trl_full", "peak_rss_mib"),
            "d_step_time_lora_over_full": ratio(runs, "ours_lora", "ours_full", "s_per_step"),
            "d_step_time_lora_cached_over_lora": ratio(runs, "ours_lora_cached", "ours_lora",
                                                       "s_per_step"),
            "d_step_time_trl_lora_over_ours_lora": ratio(runs, "trl_lora", "ours_lora",
                                                         "s_per_step"),
            "d_rss_lora_over_full": ratio(runs, "ours_lora", "ours_full", "peak_rss_mib"),
            "d_rss_trl_lora_over_ours_lora": ratio(runs, "trl_lora", "ours_lora",
                                                   "peak_rss_mib")}


def print_tables(result: dict) -> None:
    say("\n(a) prompt once vs repeated, forward+loss+backward (speed-up: median [min..max])")
    say("  k  theory  once            packed          once/theory  activation MiB "
        "once/packed/repeated")
    for r in result["a_prefix_sharing"]:
        m = r["activation_mib"]
        say(f"  {r['k']}  {r['theory']:5.2f}x  {_fmt(r['speedup_once'])}  "
            f"{_fmt(r['speedup_packed'])}  {r['once_share_of_theory']:10.2f}   "
            f"{m['once']}/{m['packed']}/{m['repeated']}")
    b = result["b_listwise_vs_pairs"]
    say(f"\n(b) listwise k=8 vs its 28 pairs: {_fmt(b['speedup'])} faster; activation "
        f"{b['listwise_activation_mib']} vs {b['all_pairs_activation_mib']} MiB")
    cd = result.get("c_d_vs_trl")
    if not cd:
        return
    say(f"\n(c, d) {cd['parameters'] / 1e6:.1f}M parameters, {cd['pairs']} pairs, batch 8, one "
        "epoch, model on disk to saved model")
    say("  side               pairs/s (span)   s/step (training)   peak RSS MiB")
    for side, s in cd["sides"].items():
        say(f"  {side:17s}  {_fmt(s['pairs_per_s'])}  {_fmt(s['s_per_step'])}  "
            f"{_fmt(s['peak_rss_mib'])}")
    for key in ("c_speed_ours_over_trl", "c_rss_ours_over_trl", "d_step_time_lora_over_full",
                "d_step_time_lora_cached_over_lora", "d_step_time_trl_lora_over_ours_lora",
                "d_rss_lora_over_full", "d_rss_trl_lora_over_ours_lora"):
        say(f"  {key:38s} {_fmt(cd[key])}")


def _fmt(s: dict) -> str:
    return f"{s['median']:g} [{s['min']:g}..{s['max']:g}]".ljust(16)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--groups", type=int, default=8, help="groups per pass in (a) and (b)")
    ap.add_argument("--pairs", type=int, default=64, help="pairs trained on in (c) and (d)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny models, 16 pairs, one repetition: checks that it all runs")
    ap.add_argument("--source", default=None,
                    help="a ranked workdir to take pairs from (default: build the demo round)")
    ap.add_argument("--skip-trl", action="store_true", help="parts (a) and (b) only")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.quick:
        args.repeats, args.pairs, args.groups = 1, 16, 2
    size = {"hidden": 128, "layers": 2, "intermediate": 384} if args.quick else \
        {"hidden": 768, "layers": 12, "intermediate": 2560}  # ~100M parameters
    head = machine()
    say(f"bench.trainer {head['date']}: {head['cpu']}, {head['cores']} cores, flags "
        f"{' '.join(head['flags'])}, torch {head['torch']}, {head['threads']} threads"
        + (" (--quick)" if args.quick else ""))
    model = bench_model(hidden=128, layers=2) if args.quick else bench_model()
    p, c = 64, 16
    result = {"benchmark": "trainer", "machine": head, "quick": args.quick, "P": p, "C": c,
              "groups_per_pass": args.groups, "repeats": args.repeats,
              "a_prefix_sharing": part_a(model, args.repeats, p, c, args.groups),
              "b_listwise_vs_pairs": part_b(model, args.repeats, p, c, args.groups)}
    if not args.skip_trl:
        from pipeline.rounds import round_policy

        source = (Path(args.source), round_policy(Path(args.source), 0)) if args.source \
            else None
        result["c_d_vs_trl"] = parts_c_d(Path(args.workdir), args.pairs, size, args.repeats,
                                         source)
    print_tables(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
