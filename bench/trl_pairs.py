"""Part (c) of bench/trainer.py: this trainer vs trl's DPOTrainer at k=2 on the same pairs.

``prepare_pairs`` builds the demo policy and a real round (vLLM, verifier, ranking) if
missing, keeps best-vs-worst pairs whose completions both stopped and re-tokenise to the
sampled ids (trl tokenises text and appends EOS itself, so only those pairs give both
trainers the same tokens), writes them as a k=2 store for this trainer and as JSONL for trl,
and checks one batch's DPO loss both ways with a policy that differs from the reference.
``python -m bench.trl_pairs SIDE WORKDIR`` trains one epoch on one side and prints a JSON
line with pairs/s and peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import torch

from pipeline.atomic import write_parquet_atomic
from pipeline.schema import CANDIDATES, GROUPS, PROMPTS, RANKINGS
from pipeline.store import prompts_path, round_dir, shard_path

BATCH, LR, BETA = 8, 2e-4, 1.0


def _grpo(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "flows.cli", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare_pairs(workdir: Path) -> dict:
    from transformers import AutoTokenizer

    from trainers.data import load_ranked_groups

    workdir = Path(workdir)
    source = workdir / "source"
    if not (source / "rounds" / "r000" / "rankings").exists():
        for cmd in (["build-demo-model"], ["generate"], ["judge", "--sources", "verifier"],
                    ["rank", "--set", 'rank.weights=["verifier:*=1"]']):
            _grpo(*cmd, "--workdir", str(source))
    model_dir = source / "models" / "demo-policy"
    tok = AutoTokenizer.from_pretrained(model_dir)
    pairs = []
    for g in load_ranked_groups(source, [0]):
        valid = [i for i, r in enumerate(g.ranks) if r >= 0 and g.finished[i] and
                 tok(g.texts[i], add_special_tokens=False)["input_ids"] == g.token_ids[i]]
        if len(valid) < 2:
            continue
        best = min(valid, key=lambda i: g.ranks[i])
        worst = max(valid, key=lambda i: g.ranks[i])
        if g.ranks[best] == g.ranks[worst]:
            continue
        pairs.append({"group_id": g.group_id, "prompt": g.prompt, "chosen": g.texts[best],
                      "rejected": g.texts[worst], "chosen_ids": g.token_ids[best],
                      "rejected_ids": g.token_ids[worst]})
    (workdir / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    _write_pair_store(workdir / "pair_store", pairs)
    perturbed = _perturbed_policy(model_dir, workdir / "models" / "perturbed")
    return {"pairs": len(pairs), "loss_check": _loss_check(perturbed, model_dir, pairs)}


def _write_pair_store(store: Path, pairs: list[dict]) -> None:
    prompts, cands, ranks, groups = [], [], [], []
    for n, p in enumerate(pairs):
        pid = f"pair{n:05d}"
        gid = f"r000:{pid}"
        prompts.append({"round": 0, "prompt_id": pid, "split": "train", "task": "sort_digits",
                        "prompt": p["prompt"], "reference": None})
        for idx, key in enumerate(("chosen", "rejected")):
            cid = f"{gid}:{idx}"
            cands.append({"round": 0, "group_id": gid, "prompt_id": pid, "candidate_idx": idx,
                          "candidate_id": cid, "text": p[key], "token_ids": p[f"{key}_ids"],
                          "policy": "demo", "n_tokens": len(p[f"{key}_ids"]) + 1,
                          "finish_reason": "stop", "logprob": None, "seed": 0,
                          "config_hash": "pairs", "injection": None})
            ranks.append({"round": 0, "group_id": gid, "candidate_id": cid, "rank": idx,
                          "score": None})
        groups.append({"round": 0, "group_id": gid, "status": "ok", "n_sources": 1,
                       "n_cycles": 0, "agreement": None, "weight": 1.0})
    write_parquet_atomic(pa.Table.from_pylist(prompts, PROMPTS.arrow_schema),
                         prompts_path(store, 0), PROMPTS)
    write_parquet_atomic(pa.Table.from_pylist(cands, CANDIDATES.arrow_schema),
                         shard_path(store, "candidates", 0, 0, "pairs"), CANDIDATES)
    write_parquet_atomic(pa.Table.from_pylist(ranks, RANKINGS.arrow_schema),
                         round_dir(store, 0) / "rankings" / "pairs.parquet", RANKINGS)
    write_parquet_atomic(pa.Table.from_pylist(groups, GROUPS.arrow_schema),
                         round_dir(store, 0) / "groups" / "pairs.parquet", GROUPS)


def _perturbed_policy(model_dir: Path, out: Path) -> Path:
    """A policy that differs from the reference, so the loss check is not trivially log 2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def _trl_trainer(policy_dir: Path, ref_dir: Path, pairs: list[dict], out: Path,
                 precompute: bool):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=BATCH,
                     num_train_epochs=1, learning_rate=LR, beta=BETA, report_to=[],
                     save_strategy="no", logging_steps=10**9, use_cpu=True, bf16=False,
                     max_length=None, precompute_ref_log_probs=precompute,
                     dataloader_num_workers=0, lr_scheduler_type="constant", seed=0,
                     disable_tqdm=True)
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"],
                               "rejected": p["rejected"]} for p in pairs])
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                      ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                      train_dataset=data, processing_class=tok)


def _loss_check(policy_dir: Path, ref_dir: Path, pairs: list[dict]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.data import TokenizedGroup, collate
    from trainers.logprobs import group_logps
    from trainers.losses import dpo_loss

    first = pairs[:BATCH]
    trainer = _trl_trainer(policy_dir, ref_dir, first, policy_dir.parent / "trl-check", False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(first))])
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, batch))
    tok = AutoTokenizer.from_pretrained(policy_dir)
    eos = tok.eos_token_id
    groups = [TokenizedGroup(tok(p["prompt"])["input_ids"],
                             [p["chosen_ids"] + [eos], p["rejected_ids"] + [eos]], [0, 1], 1.0,
                             ["c", "r"]) for p in first]
    gb, ranks, _ = collate(groups, tok.pad_token_id)
    with torch.no_grad():
        pol = group_logps(AutoModelForCausalLM.from_pretrained(policy_dir), gb)
        ref = group_logps(AutoModelForCausalLM.from_pretrained(ref_dir), gb)
    ours = float(dpo_loss(pol, ref, ranks, BETA)[0].mean())
    return {"ours": round(ours, 6), "trl": round(trl_loss, 6),
            "abs_diff": abs(ours - trl_loss), "equal_within_1e-4": abs(ours - trl_loss) < 1e-4}


def _run_side(side: str, workdir: Path) -> dict:
    torch.set_num_threads(2)
    pairs = [json.loads(x) for x in (workdir / "pairs.jsonl").read_text().splitlines()]
    model_dir = workdir / "source" / "models" / "demo-policy"
    start = time.perf_counter()
    if side == "ours":
        from pipeline.config import load_config
        from trainers.loop import train

        cfg = load_config(overrides={"train.loss": "dpo", "train.beta": BETA,
                                     "train.learning_rate": LR, "train.epochs": 1,
                                     "train.groups_per_batch": BATCH, "train.warmup_steps": 1,
                                     "train.checkpoint_every": 10**6})
        store = workdir / "pair_store"
        for old in (store / "cache").glob("*.parquet"):
            old.unlink()  # time the first epoch, reference pass included
        train(cfg, store, [0], model_dir, model_dir, store / "models" / "out",
              show_progress=False)
    else:
        # Same span as ours: from model directories and data on disk to a saved model
        # (trl's tokenisation, reference pass and model loading included, as ours are).
        trainer = _trl_trainer(model_dir, model_dir, pairs, workdir / f"{side}-out",
                               precompute=side == "trl_precompute")
        trainer.train()
        trainer.save_model(str(workdir / f"{side}-out" / "final"))
    seconds = time.perf_counter() - start
    return {"pairs_per_s": round(len(pairs) / seconds, 1), "seconds": round(seconds, 2),
            "peak_rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """VmHWM: this process's peak RSS. (ru_maxrss would report the parent's peak here: it
    survives fork and exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


if __name__ == "__main__":
    print(json.dumps(_run_side(sys.argv[1], Path(sys.argv[2]))))
