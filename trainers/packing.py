"""Padding-free packing of whole groups into rows, and the cost model that picks between it
and the KV-cache form of ``trainers.logprobs``.

A group's real tokens, ``[prompt, c_1, ..., c_K]`` with every pad left out, are laid end to
end; several groups share a row when they fit. A block mask lets each completion see its own
group's prompt and itself (never another completion or group), and positions restart after
the prompt for every completion, so each candidate is scored exactly as if it followed its
prompt alone. Rows hold ``capacity`` tokens: at least the longest group, and up to the
length at which attending over the whole row costs about a tenth of the linear layers' work
per token (``row_capacity``), so packing never buys fewer tokens with much more attention.

Against the KV-cache form (prompt pass, cache repeat, completion pass over a [B*K, C]
batch padded to the longest completion) the packed form computes no padding inside a group
and none across groups of a row, in one forward pass; it pays attention over the whole row
for every query. ``packed_is_cheaper`` compares the two forms' multiply-adds for a batch
from the model's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor

# Attention over a packed row may cost up to this share of a token's linear-layer work.
ATTENTION_SHARE = 0.1


@dataclass
class PackedLayout:
    ids: Tensor  # [rows, R] token ids (pad 0 after each row's last group)
    positions: Tensor  # [rows, R] positions within each candidate's own sequence
    allowed: Tensor  # [rows, R, R] bool: query row, key column may attend
    keep: Tensor  # [n_keep] the columns whose logits predict a completion token (all rows)
    target_row: Tensor  # [n] row of each completion token's predicting position
    target_keep: Tensor  # [n] index into ``keep`` of that position
    target_ids: Tensor  # [n] the completion token predicted there
    target_group: Tensor  # [n] its group (batch row)
    target_candidate: Tensor  # [n] its candidate


@dataclass(frozen=True)
class AttentionShape:
    linear_macs: int  # multiply-adds of one token through one layer's linear maps
    attention_macs_per_key: int  # multiply-adds of one query against one key, one layer


def attention_shape(model) -> AttentionShape | None:
    """The per-layer work of ``model`` (unwrapped from DDP/peft), or None when its config
    does not say (the caller then keeps the KV-cache form)."""
    while hasattr(model, "module"):  # DDP and friends
        model = model.module
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    d = getattr(cfg, "hidden_size", None)
    heads = getattr(cfg, "num_attention_heads", None)
    if not d or not heads:
        return None
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    inner = getattr(cfg, "intermediate_size", None) or 4 * d
    # q and o: d x heads*head_dim each; k and v: d x kv_heads*head_dim each; a gated MLP's
    # three matrices (a plain MLP's two are close enough for a choice between forms)
    linear = 2 * d * heads * head_dim + 2 * d * kv_heads * head_dim + 3 * d * inner
    return AttentionShape(linear, 2 * heads * head_dim)  # q.k and weights.v


def row_capacity(shape: AttentionShape) -> int:
    """Tokens per row at which attending over the whole row costs ``ATTENTION_SHARE`` of a
    token's linear work."""
    return max(1, int(ATTENTION_SHARE * shape.linear_macs / shape.attention_macs_per_key))


def _lengths(prompt_mask: Tensor, completion_mask: Tensor) -> tuple[list[int], list[list[int]]]:
    return prompt_mask.sum(1).tolist(), completion_mask.sum(2).tolist()


def assign_rows(sizes: list[int], capacity: int) -> list[list[int]]:
    """Groups into rows of at most ``capacity`` tokens, first fit by decreasing size (a
    group longer than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for r, left in enumerate(room):
            if sizes[i] <= left:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(capacity - sizes[i])
    return rows


def packed_width(prompt_mask: Tensor, completion_mask: Tensor, capacity: int
                 ) -> tuple[list[list[int]], int]:
    """(rows of group indices, row length) of the packed layout."""
    p_len, c_len = _lengths(prompt_mask, completion_mask)
    sizes = [p + sum(c) for p, c in zip(p_len, c_len, strict=True)]
    rows = assign_rows(sizes, max(max(sizes), capacity))
    return rows, max(sum(sizes[i] for i in row) for row in rows)


def packed_is_cheaper(model, prompt_mask: Tensor, completion_mask: Tensor) -> bool:
    """Whether the packed form costs fewer multiply-adds than the KV-cache form on this
    batch (attention counted over every key the kernel visits: masked keys included)."""
    shape = attention_shape(model)
    if shape is None:
        return False
    b, p = prompt_mask.shape
    k, c = completion_mask.shape[1:]
    lin, att = shape.linear_macs, shape.attention_macs_per_key
    cache = lin * b * (p + k * c) + att * b * (p * p + k * c * (p + c))
    rows, width = packed_width(prompt_mask, completion_mask, row_capacity(shape))
    packed = lin * len(rows) * width + att * len(rows) * width * width
    return packed < cache


def pack(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
         completion_mask: Tensor, capacity: int) -> PackedLayout:
    """The packed layout of a batch (prompts left-padded, completions right-padded)."""
    b, p = prompt_ids.shape
    p_len, c_len = _lengths(prompt_mask, completion_mask)
    if min(p_len) < 1:
        raise ValueError("packed log-probs: every group needs at least one prompt token (the "
                         "position that predicts each completion's first token)")
    rows, width = packed_width(prompt_mask, completion_mask, capacity)
    prompts, completions = prompt_ids.tolist(), completion_ids.tolist()
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    # every column's group and segment (-1 the prompt, j completion j); padding: group -1
    group = torch.full((len(rows), width), -1, dtype=torch.long)
    segment = torch.full((len(rows), width), -2, dtype=torch.long)
    tr, tpos, tid, tg, tc = [], [], [], [], []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = p_len[i]
            ids[r, at: at + n] = torch.tensor(prompts[i][p - n:])
            positions[r, at: at + n] = torch.arange(n)
            group[r, at: at + n] = i
            segment[r, at: at + n] = -1
            last_prompt = at + n - 1
            at += n
            for j, m in enumerate(c_len[i]):
                if m == 0:
                    continue
                ids[r, at: at + m] = torch.tensor(completions[i][j][:m])
                positions[r, at: at + m] = torch.arange(n, n + m)
                group[r, at: at + m] = i
                segment[r, at: at + m] = j
                # token t is predicted at the prompt's last column (t = 0), else at t - 1
                tpos += [last_prompt, *range(at, at + m - 1)]
                tr += [r] * m
                tid += completions[i][j][:m]
                tg += [i] * m
                tc += [j] * m
                at += m
    col = torch.arange(width)
    causal = col[:, None] >= col[None, :]
    same_group = group[:, :, None] == group[:, None, :]
    seen = (segment[:, None, :] == -1) | (segment[:, :, None] == segment[:, None, :])
    # A padding query sees itself at least, so no softmax row is empty.
    allowed = (causal & same_group & seen) | torch.eye(width, dtype=torch.bool)
    pos = torch.tensor(tpos, dtype=torch.long)
    keep, where = torch.unique(pos, return_inverse=True)
    device = prompt_ids.device
    return PackedLayout(ids.to(device), positions.to(device), allowed.to(device),
                        keep.to(device), torch.tensor(tr, device=device), where.to(device),
                        torch.tensor(tid, device=device), torch.tensor(tg, device=device),
                        torch.tensor(tc, device=device))
