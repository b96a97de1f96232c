"""Summed completion log-probabilities for whole groups, with the prompt encoded once.

A group is one prompt and K completions. Two ways to encode the prompt once, both with the
token work P + K*C instead of K*(P + C) (at K=8 and P=4C that is 3.3x less):

- ``group_logps`` runs the prompt through the model once, repeats its KV cache K times
  (``batch_repeat_interleave``: a copy, no compute) and runs only the completions on top.
  The prompt pass keeps the logits of its last position only (``logits_to_keep=1``): the
  [B, P, V] logits of the prompt are never materialised.
- ``group_logps_packed`` lays out one row per group, ``[prompt, c_1, ..., c_K]``, with a
  block attention mask (each completion sees the prompt and itself, never another
  completion) and positions that restart after the prompt for every completion. One plain
  forward pass and no cache object, so it works under gradient checkpointing (transformers
  drops the cache of checkpointed layers, as it must: a recompute would append to it again)
  and under DDP (one forward per backward). Logits are computed only where a completion
  token is predicted. The price is attention over P + K*C keys for every query, masked.

Their naive twin, ``group_logps_naive``, concatenates prompt and completion for every
candidate; tests check all three agree in value and gradient.

Measured here in float64 (tests/test_prefix_sharing.py): log-probs agree to 4e-15; parameter
gradients agree to about 2e-5 relative (9e-7 absolute), only when K > 1, with eager and SDPA
attention alike, and not from the cache repeat (an index_select in its place changed
nothing). That residual is unexplained; the test holds the gradients to 1e-4 relative.

Layout of a batch: prompts are left-padded (so every prompt's last real token sits in the
last column, whose logits predict each completion's first token), completions right-padded.
Positions are computed from the masks so padding never shifts RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class GroupBatch:
    prompt_ids: Tensor  # [B, P] left-padded
    prompt_mask: Tensor  # [B, P]
    completion_ids: Tensor  # [B, K, C] right-padded
    completion_mask: Tensor  # [B, K, C]

    @property
    def k(self) -> int:
        return self.completion_ids.shape[1]

    def to(self, device) -> GroupBatch:
        return GroupBatch(*(x.to(device) for x in (self.prompt_ids, self.prompt_mask,
                                                   self.completion_ids, self.completion_mask)))

    def n_tokens(self, shared_prompt: bool = True) -> int:
        """Token positions a forward pass processes (padding included)."""
        b, p = self.prompt_ids.shape
        _, k, c = self.completion_ids.shape
        return b * (p + k * c) if shared_prompt else b * k * (p + c)


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log_softmax(logits)[..., index] without materialising the full log-softmax.

    Naive twin: ``torch.log_softmax(logits, -1).gather(-1, index[..., None])[..., 0]``.
    """
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def group_logps(model, batch: GroupBatch) -> Tensor:
    """[B, K] summed log-probs of each completion given its prompt, prompt encoded once."""
    b, _ = batch.prompt_ids.shape
    k, c = batch.completion_ids.shape[1:]
    prompt_pos = (batch.prompt_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                position_ids=prompt_pos, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(k)
    first_logits = out.logits[:, -1].repeat_interleave(k, dim=0)  # predicts token 0

    comp = batch.completion_ids.reshape(b * k, c)
    comp_mask = batch.completion_mask.reshape(b * k, c)
    attn = torch.cat([batch.prompt_mask.repeat_interleave(k, dim=0), comp_mask], dim=1)
    start = batch.prompt_mask.sum(1).repeat_interleave(k)
    comp_pos = start.unsqueeze(1) + torch.arange(c, device=comp.device)
    out2 = model(input_ids=comp, attention_mask=attn, position_ids=comp_pos,
                 past_key_values=cache, use_cache=False)
    logits = torch.cat([first_logits.unsqueeze(1), out2.logits[:, :-1]], dim=1)
    logps = selective_log_softmax(logits.float() if logits.dtype != torch.float64 else logits,
                                  comp)
    return (logps * comp_mask).sum(-1).view(b, k)


def group_logps_packed(model, batch: GroupBatch) -> Tensor:
    """[B, K] as ``group_logps``, in one forward pass over ``[prompt, c_1, ..., c_K]`` rows."""
    b, p = batch.prompt_ids.shape
    k, c = batch.completion_ids.shape[1:]
    device = batch.prompt_ids.device
    width = p + k * c
    ids = torch.cat([batch.prompt_ids, batch.completion_ids.reshape(b, k * c)], dim=1)
    prompt_pos = (batch.prompt_mask.cumsum(1) - 1).clamp(min=0)
    start = batch.prompt_mask.sum(1)
    comp_pos = (start[:, None] + torch.arange(c, device=device)).repeat(1, k)
    positions = torch.cat([prompt_pos, comp_pos], dim=1)
    # segment -1 = the prompt (seen by everyone), j = completion j (seen by itself only)
    segment = torch.cat([torch.full((p,), -1, device=device),
                         torch.arange(k, device=device).repeat_interleave(c)])
    col = torch.arange(width, device=device)
    visible = (col[:, None] >= col[None, :]) & (
        (segment[:, None] == segment[None, :]) | (segment[None, :] == -1))
    real = torch.cat([batch.prompt_mask, batch.completion_mask.reshape(b, k * c)], 1).bool()
    # A padding query still needs one key (itself) so no softmax row is empty.
    allowed = (visible[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool,
                                                              device=device)[None]
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # a quantized base: the mask follows the compute dtype
        dtype = torch.float32
    mask = torch.zeros(b, 1, width, width, dtype=dtype, device=device).masked_fill(
        ~allowed[:, None], torch.finfo(dtype).min)
    # Logits where a completion token is predicted: the prompt's last position predicts
    # every completion's first token; completion position t predicts its token t+1.
    within = torch.arange(c - 1, device=device)
    keep = torch.cat([torch.tensor([p - 1], device=device),
                      (p + torch.arange(k, device=device)[:, None] * c + within).reshape(-1)])
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep, use_cache=False).logits
    first = logits[:, :1].unsqueeze(1).expand(b, k, 1, logits.shape[-1])
    rest = logits[:, 1:].reshape(b, k, c - 1, logits.shape[-1])
    logits = torch.cat([first, rest], dim=2)
    logps = selective_log_softmax(logits.float() if logits.dtype != torch.float64 else logits,
                                  batch.completion_ids)
    return (logps * batch.completion_mask).sum(-1)


def group_logps_naive(model, batch: GroupBatch) -> Tensor:
    """The reference computation: every candidate carries its own copy of the prompt."""
    b, _ = batch.prompt_ids.shape
    k, c = batch.completion_ids.shape[1:]
    rows, targets = [], []
    for i in range(b):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
        for j in range(k):
            comp_len = int(batch.completion_mask[i, j].sum())
            comp = batch.completion_ids[i, j, :comp_len]
            rows.append(torch.cat([prompt, comp]))
            targets.append((len(prompt), comp_len))
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=batch.prompt_ids.device)
    attn = torch.zeros_like(ids)
    for n, r in enumerate(rows):
        ids[n, : len(r)] = r
        attn[n, : len(r)] = 1
    logits = model(input_ids=ids, attention_mask=attn).logits
    logps = selective_log_softmax(logits[:, :-1], ids[:, 1:])
    mask = torch.zeros_like(logps)
    for n, (p_len, c_len) in enumerate(targets):
        mask[n, p_len - 1: p_len - 1 + c_len] = 1
    return (logps * mask).sum(-1).view(b, k)
