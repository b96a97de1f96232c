"""Reward models: any Hugging Face sequence-classification directory, one scalar per
candidate, batched. Several can be combined per group (mean, min, or disagreement-aware:
mean minus spread), the defence the seed names against a policy that exploits one model's
blind spots. Scores are standardised within each group before combining, since models
disagree on scale.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from pipeline.judging.groups import JudgeGroup, judgment_row


def rm_text(tokenizer, prompt: str, completion: str) -> list[int]:
    """Token ids of one (prompt, completion) as the reward model expects it: through its chat
    template when it has one (real RMs are trained on chats), else the plain concatenation
    plus EOS so a decoder RM reads the end of the answer."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            tokenize=True)
    ids = tokenizer(prompt + completion)["input_ids"]
    eos = tokenizer.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def rm_inputs(tokenizer, prompts: list[str], completions: list[str]):
    """Right-padded batch: the same encoding for training and scoring."""
    ids = [rm_text(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, mask


def rm_scores(model, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One scalar per row from any sequence-classification model (num_labels=1). The model
    picks its own summary position (last non-pad token for decoders, [CLS] for encoders),
    which needs ``config.pad_token_id`` set for decoders."""
    return model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()


class RewardModelScorer:
    def __init__(self, model_dir: Path, name: str, batch_size: int = 64) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = (self.tokenizer.pad_token_id
                                              if self.tokenizer.pad_token_id is not None
                                              else self.tokenizer.eos_token_id)
        self.source = f"rm:{name}"
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            ids, mask = rm_inputs(self.tokenizer, prompts[i:i + self.batch_size],
                                  completions[i:i + self.batch_size])
            out += rm_scores(self.model, ids, mask).tolist()
        return out

    def judge(self, groups: list[JudgeGroup]) -> list[dict]:
        prompts = [g.prompt for g in groups for _ in g.texts]
        texts = [t for g in groups for t in g.texts]
        scores = iter(self.score(prompts, texts))
        return [judgment_row(g, i, self.source, "score", 0, next(scores))
                for g in groups for i in range(g.k)]


def combine_scores(per_model: list[list[dict]], how: str) -> list[dict]:
    """Ensemble rows ``rm-ensemble:HOW`` from several reward models' rows of the same groups."""
    by_candidate: dict[str, list[float]] = {}
    template: dict[str, dict] = {}
    for rows in per_model:
        for group_rows in _by_group(rows).values():
            values = [r["value"] for r in group_rows]
            mu = statistics.fmean(values)
            sd = statistics.pstdev(values) or 1.0
            for r in group_rows:
                by_candidate.setdefault(r["candidate_id"], []).append((r["value"] - mu) / sd)
                template[r["candidate_id"]] = r
    out = []
    for cid, zs in by_candidate.items():
        if how == "mean":
            value = statistics.fmean(zs)
        elif how == "min":
            value = min(zs)
        else:  # disagreement: models that disagree about a candidate lower its score
            value = statistics.fmean(zs) - statistics.pstdev(zs)
        out.append({**template[cid], "source": f"rm-ensemble:{how}", "value": value})
    return out


def _by_group(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group_id"], []).append(r)
    return groups
