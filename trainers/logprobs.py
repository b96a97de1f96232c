"""Summed completion log-probabilities for whole groups, with the prompt encoded once.

A group is one prompt and K completions. Two ways to encode the prompt once, both with the
token work P + K*C instead of K*(P + C) (at K=8 and P=4C that is 3.3x less):

- ``group_logps`` runs the prompt through the model once, repeats its KV cache K times
  (``batch_repeat_interleave``: a copy, no compute) and runs only the completions on top.
  The prompt pass keeps the logits of its last position only (``logits_to_keep=1``): the
  [B, P, V] logits of the prompt are never materialised.
- ``group_logps_packed`` lays the groups' real tokens end to end, ``[prompt, c_1, ..., c_K]``
  with no pad inside a group and several groups to a row where they fit
  (``trainers.packing``), with a block attention mask (each completion sees its prompt and
  itself, never another completion or group) and positions that restart after the prompt
  for every completion. One plain forward pass and no cache object, so it works under
  gradient checkpointing (transformers drops the cache of checkpointed layers, as it must: a
  recompute would append to it again) and under DDP (one forward per backward). Logits are
  computed only where a completion token is predicted. The price is attention over the
  whole row for every query, masked.

``group_logps_auto`` takes whichever of the two costs fewer multiply-adds on a batch: the
packed form for short groups of uneven lengths (DPO pairs of the demo task: padding to the
longest prompt and completion added a quarter to the tokens), the KV-cache form for long ones.

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

from trainers.packing import attention_shape, pack, packed_is_cheaper, row_capacity

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


def group_logps_packed(model, batch: GroupBatch, capacity: int | None = None) -> Tensor:
    """[B, K] as ``group_logps``, in one forward pass over padding-free packed rows
    (``trainers.packing``); ``capacity``: tokens per row (default from the model's shape)."""
    b, k = batch.completion_ids.shape[:2]
    if capacity is None:
        shape = attention_shape(model)
        capacity = row_capacity(shape) if shape is not None else 1
    lay = pack(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
               batch.completion_mask, capacity)
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:  # a quantized base: the mask follows the compute dtype
        dtype = torch.float32
    mask = torch.zeros(lay.allowed.shape[0], 1, *lay.allowed.shape[1:], dtype=dtype,
                       device=lay.ids.device).masked_fill(~lay.allowed[:, None],
                                                          torch.finfo(dtype).min)
    # Logits only where a completion token is predicted (the union over rows).
    logits = model(input_ids=lay.ids, attention_mask=mask, position_ids=lay.positions,
                   logits_to_keep=lay.keep, use_cache=False).logits
    if logits.dtype != torch.float64:
        logits = logits.float()
    # One log-normaliser per kept position: a prompt's last position predicts the first
    # token of all K completions.
    lse = torch.logsumexp(logits, dim=-1)
    token = logits[lay.target_row, lay.target_keep, lay.target_ids] - \
        lse[lay.target_row, lay.target_keep]
    out = torch.zeros(b, k, dtype=token.dtype, device=token.device)
    return out.index_put((lay.target_group, lay.target_candidate), token, accumulate=True)


def group_logps_auto(model, batch: GroupBatch) -> Tensor:
    """``group_logps_packed`` where it costs fewer multiply-adds than ``group_logps`` on this
    batch (short, uneven groups), ``group_logps`` otherwise (long prompts and completions,
    where attending over a packed row costs more than the padding it saves)."""
    if packed_is_cheaper(model, batch.prompt_mask, batch.completion_mask):
        return group_logps_packed(model, batch)
    return group_logps(model, batch)


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
