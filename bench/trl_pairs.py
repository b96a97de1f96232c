"""Parts (c) and (d) of bench/trainer.py: this trainer vs trl's DPOTrainer on the same pairs.

``prepare`` takes a real ranked round (built with the ``grpo`` commands if missing: the
demo policy, vLLM generation, the verifier, ranking), picks each group's best and worst
candidates that stopped on EOS, and keeps the pairs that trl tokenises to exactly the token
ids this trainer reads (trl tokenises text and appends EOS itself; the check is trl's own
tokenisation, read from its prepared dataset). The pairs are written as JSON lines for trl
and as a k=2 store for this trainer: a copy of the round's tables keeping only those groups
and candidates (rows filtered, never rebuilt, so the store follows the schema as it changes).

``python -m bench.trl_pairs SIDE WORKDIR MODEL`` trains one epoch on one side, from model
directory and data on disk to a saved model, and prints a JSON line: seconds of that whole
span (pairs/s), seconds of the epoch's work alone (reference pass and optimizer steps for
this trainer, ``trainer.train()`` for trl, whose reference forwards are inside its steps:
s/step), optimizer steps and peak RSS.

Sides: ours_full (full fine-tuning; the reference pass, cached, is part of the run),
ours_lora (LoRA, reference = adapter disabled each step), ours_lora_cached (LoRA, reference
pass once into the cache), trl_full (DPOTrainer with a reference model), trl_lora
(DPOTrainer with the same LoRA settings: its reference is the adapter disabled).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/trl_pairs.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

BATCH, LR, BETA = 8, 2e-4, 1.0
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0}
SIDES = ("ours_full", "ours_lora", "ours_lora_cached", "trl_full", "trl_lora")


def _grpo(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "flows.cli", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def source_round(workdir: Path) -> tuple[Path, Path]:
    """(store, the policy that generated it): a real demo round, built once, ranked by the
    verifier alone (made a training source here, so not the loop's gold)."""
    from pipeline.rounds import round_policy
    from trainers.data import load_ranked_groups

    source = Path(workdir) / "source"
    try:
        ready = bool(load_ranked_groups(source, [0]))
    except ValueError:  # a stage is missing
        ready = False
    if not ready:
        verifier_only = ["--set", 'judging.sources=["verifier"]', "--set", 'loop.gold=""']
        if not (source / "models" / "demo-policy" / "config.json").exists():
            _grpo("build-demo-model", "--workdir", str(source), *verifier_only)
        for cmd in (["generate", "--round", "0"], ["judge", "--round", "0", *verifier_only],
                    ["rank", "--round", "0", *verifier_only,
                     "--set", 'rank.weights=["verifier:*=1"]']):
            _grpo(*cmd, "--workdir", str(source))
    return source, round_policy(source, 0)


def candidate_pairs(store: Path, tokenizer) -> list[dict]:
    """Best vs worst of each group among candidates that stopped on the tokenizer's EOS."""
    from trainers.data import load_ranked_groups

    eos = tokenizer.eos_token_id
    pairs = []
    for g in load_ranked_groups(store, [0]):
        ok = [i for i, r in enumerate(g.ranks) if r >= 0 and g.stop_ids[i] == eos]
        if len(ok) < 2:
            continue
        best, worst = min(ok, key=lambda i: g.ranks[i]), max(ok, key=lambda i: g.ranks[i])
        if g.ranks[best] == g.ranks[worst]:
            continue
        # trl's tokenizer call adds BOS itself: the prompt text is what follows it
        text_ids = g.prompt_ids[1:] if g.prompt_ids[:1] == [tokenizer.bos_token_id] else \
            g.prompt_ids
        pairs.append({"group_id": g.group_id, "prompt_ids": list(g.prompt_ids),
                      "prompt": tokenizer.decode(text_ids),
                      "chosen": g.texts[best], "rejected": g.texts[worst],
                      "chosen_id": g.candidate_ids[best], "rejected_id": g.candidate_ids[worst],
                      "chosen_ids": list(g.token_ids[best]) + [eos],
                      "rejected_ids": list(g.token_ids[worst]) + [eos]})
    return pairs


def same_tokens_for_trl(pairs: list[dict], model_dir: Path, scratch: Path) -> list[dict]:
    """The pairs trl's own tokenisation turns into exactly our token ids."""
    trainer = _trl_trainer(model_dir, model_dir, pairs, scratch, lora=False)
    keep = []
    for p, row in zip(pairs, trainer.train_dataset, strict=True):
        if (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == \
                (p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]):
            keep.append(p)
    return keep


def write_pair_store(source: Path, dest: Path, pairs: list[dict]) -> None:
    """A copy of round 0 holding only the pairs' groups and their two candidates."""
    groups = sorted(p["group_id"] for p in pairs)
    cands = sorted(c for p in pairs for c in (p["chosen_id"], p["rejected_id"]))
    shutil.rmtree(dest, ignore_errors=True)
    src_round, dst_round = source / "rounds" / "r000", dest / "rounds" / "r000"
    dst_round.mkdir(parents=True)
    shutil.copy2(src_round / "generation.json", dst_round / "generation.json")
    shutil.copy2(src_round / "prompts.parquet", dst_round / "prompts.parquet")
    for table, key, values in (("candidates", "candidate_id", cands),
                               ("rankings", "candidate_id", cands),
                               ("groups", "group_id", groups)):
        (dst_round / table).mkdir()
        for f in sorted((src_round / table).glob("*.parquet")):
            t = pq.read_table(f)
            pq.write_table(t.filter(pc.is_in(t[key], value_set=pa.array(values))),
                           dst_round / table / f.name)


def bench_policy(out: Path, tokenizer_dir: Path, hidden: int, layers: int,
                 intermediate: int) -> Path:
    """A random Llama of the given size with the demo tokenizer (saved once)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      num_key_value_heads=hidden // 64, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prepare(workdir: Path, model_dir: Path, n_pairs: int,
            source: tuple[Path, Path] | None = None) -> dict:
    """Pairs on disk for both sides and the one-batch loss check; returns what was built."""
    from transformers import AutoTokenizer

    workdir = Path(workdir)
    store, policy = source or source_round(workdir)
    tok = AutoTokenizer.from_pretrained(policy)
    pairs = same_tokens_for_trl(candidate_pairs(store, tok), policy, workdir / "trl-tokens")
    if not pairs:
        raise ValueError(f"no pair of {store} tokenises the same way in trl; nothing to compare")
    pairs = pairs[:n_pairs]
    (workdir / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    write_pair_store(store, workdir / "pair_store", pairs)
    perturbed = _perturbed(model_dir, workdir / "perturbed")
    return {"pairs": len(pairs), "loss_check": loss_check(perturbed, model_dir, pairs)}


def _perturbed(model_dir: Path, out: Path) -> Path:
    """A policy that differs from the reference, so the loss check is not trivially log 2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def _trl_trainer(policy_dir: Path, ref_dir: Path, pairs: list[dict], out: Path, lora: bool):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=BATCH,
                     num_train_epochs=1, learning_rate=LR, beta=BETA, report_to=[],
                     save_strategy="no", logging_steps=10**9, use_cpu=True, bf16=False,
                     max_length=None, dataloader_num_workers=0, lr_scheduler_type="constant",
                     seed=0, disable_tqdm=True)
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"],
                               "rejected": p["rejected"]} for p in pairs])
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"],
                                 lora_dropout=LORA["dropout"], target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                      ref_model=None if lora else AutoModelForCausalLM.from_pretrained(ref_dir),
                      args=args, train_dataset=data, processing_class=tok,
                      peft_config=peft_config)


def loss_check(policy_dir: Path, ref_dir: Path, pairs: list[dict]) -> dict:
    """One batch's DPO loss computed by trl and by this trainer's functions."""
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
    groups = [TokenizedGroup(p["prompt_ids"], [p["chosen_ids"], p["rejected_ids"]], [0, 1], 1.0,
                             ["c", "r"]) for p in first]
    gb, ranks, _ = collate(groups, tok.pad_token_id)
    with torch.no_grad():
        pol = group_logps(AutoModelForCausalLM.from_pretrained(policy_dir), gb)
        ref = group_logps(AutoModelForCausalLM.from_pretrained(ref_dir), gb)
    ours = float(dpo_loss(pol, ref, ranks, BETA)[0].mean())
    return {"ours": round(ours, 6), "trl": round(trl_loss, 6),
            "abs_diff": abs(ours - trl_loss), "equal_within_1e-4": abs(ours - trl_loss) < 1e-4}


def run_side(side: str, workdir: Path, model_dir: Path) -> dict:
    torch.set_num_threads(2)
    pairs = [json.loads(x) for x in (workdir / "pairs.jsonl").read_text().splitlines()]
    start = time.perf_counter()
    if side.startswith("ours"):
        from pipeline.config import load_config
        from trainers.loop import train

        overrides = {"train.loss": "dpo", "train.beta": BETA, "train.learning_rate": LR,
                     "train.epochs": 1, "train.groups_per_batch": BATCH,
                     "train.warmup_steps": 0, "train.checkpoint_every": 10**6}
        if side != "ours_full":
            overrides |= {"train.lora_rank": LORA["r"], "train.lora_alpha": LORA["alpha"],
                          "train.lora_dropout": LORA["dropout"],
                          "train.reference_cache": side == "ours_lora_cached"}
        store = workdir / "pair_store"
        for old in (store / "cache").glob("*.parquet"):
            old.unlink()  # time the whole epoch, reference pass included
        result = train(load_config(overrides=overrides), store, [0], model_dir, model_dir,
                       store / "models" / side, show_progress=False, overwrite=True)
        steps = result.steps
        # the epoch's work: the reference pass (as trl does its reference forwards inside
        # its loop) and the optimizer steps
        train_seconds = result.phase_seconds["reference"] + result.phase_seconds["steps"]
    else:
        # Same span as ours: from model directories and data on disk to a saved model
        # (trl's tokenisation, reference passes and model loading included, as ours are).
        trainer = _trl_trainer(model_dir, model_dir, pairs, workdir / f"{side}-out",
                               lora=side == "trl_lora")
        began = time.perf_counter()
        steps = trainer.train().global_step
        train_seconds = time.perf_counter() - began
        trainer.save_model(str(workdir / f"{side}-out" / "final"))
    seconds = time.perf_counter() - start
    return {"side": side, "pairs": len(pairs), "steps": steps, "seconds": round(seconds, 3),
            "pairs_per_s": round(len(pairs) / seconds, 2),
            "train_seconds": round(train_seconds, 3),
            "s_per_step": round(train_seconds / max(1, steps), 3),
            "peak_rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """VmHWM: this process's peak RSS. (ru_maxrss would report the parent's peak here: it
    survives fork and exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


if __name__ == "__main__":
    print(json.dumps(run_side(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))))
