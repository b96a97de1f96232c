"""The embedded default's reward model: an imperfect proxy of the gold verifier, on purpose.

It is trained with a Bradley-Terry loss on pairs of the demo policy's own samples, ordered by
the gold verifier, from a deliberately small number of prompts. Its pairwise accuracy
against the verifier on held-out prompts is measured and saved: the gap between the two is
what the loop's reward-hacking watch is about.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.atomic import atomic_dir
from pipeline.config import Config
from pipeline.demo_model import left_padded, stop_ids
from pipeline.judging.reward_model import rm_inputs, rm_scores
from pipeline.progress import progress_bar
from pipeline.tasks import get_task


@dataclass
class RewardModelReport:
    path: str
    train_pairs: int
    heldout_pairs: int
    heldout_pair_accuracy: float  # agreement with the gold verifier on unseen prompts
    seconds: float


def _sampled_pairs(policy, tokenizer, task, prompts, k: int, seed: int) -> list[tuple]:
    """(prompt, better, worse) from k samples per prompt, ordered by the gold verifier."""
    torch.manual_seed(seed)
    pairs = []
    for i in range(0, len(prompts), 64):
        chunk = prompts[i:i + 64]
        enc = left_padded(tokenizer, [p.prompt for p in chunk])
        with torch.no_grad():
            out = policy.generate(**enc, do_sample=True, temperature=1.0, top_k=0,
                                  max_new_tokens=12, num_return_sequences=k,
                                  pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=stop_ids(tokenizer))
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        for j, p in enumerate(chunk):
            cands = texts[j * k:(j + 1) * k]
            scored = [(task.gold_score(p.reference, c), c) for c in cands]
            for a in range(k):
                for b in range(a + 1, k):
                    (sa, ca), (sb, cb) = scored[a], scored[b]
                    if sa != sb:
                        pairs.append((p.prompt, ca, cb) if sa > sb else (p.prompt, cb, ca))
    return pairs


def _conversations(prompts: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in prompts]


def _accuracy(model, tokenizer, pairs) -> float:
    with torch.no_grad():
        agree = total = 0
        for i in range(0, len(pairs), 128):
            chunk = pairs[i:i + 128]
            convs = _conversations([p for p, _, _ in chunk])
            w = rm_scores(model, *rm_inputs(tokenizer, convs, [c for _, c, _ in chunk]))
            l_ = rm_scores(model, *rm_inputs(tokenizer, convs, [c for _, _, c in chunk]))
            agree += int((w > l_).sum())
            total += len(chunk)
    return agree / max(total, 1)


def build_demo_reward_model(cfg: Config, policy_dir: Path, out_dir: Path, k: int = 4,
                            show_progress: bool = True) -> RewardModelReport:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    started = time.perf_counter()
    seed = cfg.demo_model.seed
    n_prompts, steps = cfg.demo_model.rm_prompts, cfg.demo_model.rm_steps
    torch.manual_seed(seed)
    task = get_task(cfg.demo_model.task)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    # Seeds disjoint from the pipeline's prompt streams and from the policy's SFT data.
    train_pairs = _sampled_pairs(policy, tokenizer, task,
                                 task.prompts("train", n_prompts, seed=seed + 20_000), k, seed)
    held_pairs = _sampled_pairs(policy, tokenizer, task,
                                task.prompts("heldout", 96, seed=seed + 30_000), k, seed + 1)
    del policy
    # Start from the policy's body: the head learns a scalar on features that already read
    # the task; the small pair budget keeps it an imperfect proxy.
    model = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(seed)
    with progress_bar(show_progress) as bar:
        job = bar.add_task("training demo reward model", total=steps)
        for _ in range(steps):
            batch = rng.sample(train_pairs, min(32, len(train_pairs)))
            convs = _conversations([p for p, _, _ in batch])
            w = rm_scores(model, *rm_inputs(tokenizer, convs, [c for _, c, _ in batch]))
            l_ = rm_scores(model, *rm_inputs(tokenizer, convs, [c for _, _, c in batch]))
            loss = -F.logsigmoid(w - l_).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            bar.update(job, advance=1)
    model.eval()
    report = RewardModelReport(str(out_dir), len(train_pairs), len(held_pairs),
                               round(_accuracy(model, tokenizer, held_pairs), 4),
                               round(time.perf_counter() - started, 1))
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "reward_model_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report
