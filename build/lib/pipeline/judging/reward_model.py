"""Reward models: any Hugging Face sequence-classification directory, one scalar per
candidate, batched by tokens on the accelerator in the model's own dtype. Several can be
combined per group (mean, min, or disagreement-aware: mean minus spread), the defence the
seed names against a policy that exploits one model's blind spots. Scores are standardised
within each group before combining, since models disagree on scale.

Input: the whole conversation plus the answer, through the model's own chat template when it
has one (real reward models are trained on chats), else the turns' contents and the answer
concatenated, plus EOS so a decoder reads the end of the answer. Inputs longer than the
model's limit are cut from the start of the conversation, never at the answer.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from pipeline.judging.groups import JudgeGroup, judgment_row


def rm_ids(tokenizer, messages: list[dict], completion: str, max_length: int = 0) -> list[int]:
    """Token ids of one (conversation, answer) as the reward model reads it."""
    if getattr(tokenizer, "chat_template", None):
        # transformers 5 returns a BatchEncoding unless return_dict=False.
        ids = list(tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": completion}], tokenize=True,
            return_dict=False))
    else:
        text = "".join(m["content"] for m in messages) + completion
        ids = list(tokenizer(text)["input_ids"])
        eos = tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
    if max_length and len(ids) > max_length:
        bos = tokenizer.bos_token_id
        keep_bos = bos is not None and ids[0] == bos
        ids = ([bos] if keep_bos else []) + ids[len(ids) - max_length + int(keep_bos):]
    return ids


def model_max_length(tokenizer, model) -> int:
    """The shorter of the tokenizer's and the model's limits (tokenizers often say 1e30)."""
    limits = [getattr(model.config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [x for x in limits if isinstance(x, int) and 0 < x < 10**7]
    return min(limits) if limits else 0


def pad_batch(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch: the same encoding for training and scoring."""
    width = max(map(len, ids))
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, mask


def rm_inputs(tokenizer, conversations: list[list[dict]], completions: list[str],
              max_length: int = 0):
    ids = [rm_ids(tokenizer, m, c, max_length)
           for m, c in zip(conversations, completions, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad_batch(ids, pad)


def rm_scores(model, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One scalar per row from any sequence-classification model (num_labels=1). The model
    picks its own summary position (last non-pad token for decoders, [CLS] for encoders),
    which needs ``config.pad_token_id`` set for decoders."""
    return model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float()


def token_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so that each padded batch holds at most ``max_tokens`` positions;
    sorted by length so that little is padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if current and w * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, w = [], lengths[i]
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


def accelerator() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RewardModelScorer:
    def __init__(self, model_dir: Path, name: str, max_batch_tokens: int = 16384,
                 max_length: int = 0) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = accelerator()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype="auto").to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = (self.tokenizer.pad_token_id
                                              if self.tokenizer.pad_token_id is not None
                                              else self.tokenizer.eos_token_id)
        limit = model_max_length(self.tokenizer, self.model)
        self.max_length = min(max_length, limit) if max_length and limit else \
            (max_length or limit)
        self.source = f"rm:{name}"
        self.max_batch_tokens = max_batch_tokens

    @torch.no_grad()
    def score(self, conversations: list[list[dict]], completions: list[str]) -> list[float]:
        ids = [rm_ids(self.tokenizer, m, c, self.max_length)
               for m, c in zip(conversations, completions, strict=True)]
        pad = self.model.config.pad_token_id
        out = [0.0] * len(ids)
        for batch in token_batches([len(x) for x in ids], self.max_batch_tokens):
            input_ids, mask = pad_batch([ids[i] for i in batch], pad)
            scores = rm_scores(self.model, input_ids.to(self.device), mask.to(self.device))
            for i, s in zip(batch, scores.cpu().tolist(), strict=True):
                out[i] = s
        return out

    def judge(self, groups: list[JudgeGroup]) -> list[dict]:
        conversations = [g.messages for g in groups for _ in g.texts]
        texts = [t for g in groups for t in g.texts]
        scores = iter(self.score(conversations, texts))
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
