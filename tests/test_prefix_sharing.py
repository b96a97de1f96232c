"""Prompt-once log-probs (KV-cache repeat and padding-free packed rows) equal the naive
prompt-per-candidate computation, in value and gradient, with prompts and completions of
different lengths, groups of fewer candidates and any number of groups per row; the packed
form also under gradient checkpointing. The cost model picks packing for short groups and
the KV-cache form for long ones."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainers.logprobs import (
    GroupBatch,
    group_logps,
    group_logps_auto,
    group_logps_naive,
    group_logps_packed,
    selective_log_softmax,
)
from trainers.packing import assign_rows, attention_shape, pack, packed_is_cheaper, row_capacity


def _tiny_model(attn: str = "sdpa"):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).double()


def _batch():
    g = torch.Generator().manual_seed(1)
    b, k, p, c = 3, 4, 7, 6
    prompt_len = [7, 4, 2]
    prompt_ids = torch.randint(1, 40, (b, p), generator=g)
    prompt_mask = torch.zeros(b, p, dtype=torch.long)
    for i, n in enumerate(prompt_len):
        prompt_mask[i, p - n:] = 1  # left padding
    prompt_ids = prompt_ids * prompt_mask
    comp_ids = torch.randint(1, 40, (b, k, c), generator=g)
    comp_mask = torch.zeros(b, k, c, dtype=torch.long)
    for i in range(b):
        for j in range(k):
            comp_mask[i, j, : 1 + (i + 2 * j) % c] = 1
    return GroupBatch(prompt_ids, prompt_mask, comp_ids * comp_mask, comp_mask)


def _value_and_grads(model, fn, batch):
    model.zero_grad()
    out = fn(model, batch)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_shared_prompt_equals_naive_in_value_and_gradient():
    model = _tiny_model()
    batch = _batch()
    shared, grads_shared = _value_and_grads(model, group_logps, batch)
    naive, grads_naive = _value_and_grads(model, group_logps_naive, batch)
    torch.testing.assert_close(shared, naive, rtol=0, atol=1e-10)
    for a, b in zip(grads_shared, grads_naive, strict=True):
        # See trainers/logprobs.py: values agree to rounding, gradients to ~2e-5 relative.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert batch.n_tokens(True) < batch.n_tokens(False)


def _batch_with_missing_candidate():
    """The second group has two candidates of four (as groups of different K batch)."""
    batch = _batch()
    mask = batch.completion_mask.clone()
    mask[1, 2:] = 0
    return GroupBatch(batch.prompt_ids, batch.prompt_mask, batch.completion_ids * mask, mask)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("capacity", [1, 30, None, 1000])  # a row per group .. one row
def test_packed_equals_naive_in_value_and_gradient(attn, checkpointing, capacity):
    model = _tiny_model(attn)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    for batch in (_batch(), _batch_with_missing_candidate()):
        packed, grads_packed = _value_and_grads(
            model, lambda m, b: group_logps_packed(m, b, capacity), batch)
        naive, grads_naive = _value_and_grads(model, group_logps_naive, batch)
        torch.testing.assert_close(packed, naive, rtol=0, atol=1e-6)
        for a, b in zip(grads_packed, grads_naive, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # as above
    assert float(packed[1, 2:].abs().sum()) == 0.0  # missing candidates score nothing


def test_rows_hold_each_group_once_within_capacity():
    sizes = [30, 29, 26, 26, 25, 22, 21, 19, 70]
    rows = assign_rows(sizes, 60)
    assert sorted(i for row in rows for i in row) == list(range(len(sizes)))
    assert [8] in rows  # longer than a row: a row of its own
    assert all(sum(sizes[i] for i in row) <= 60 for row in rows if row != [8])
    assert len(rows) == 5  # 30+29, 26+26, 25+22, 21+19, 70


def test_packed_rows_leave_out_every_pad():
    batch = _batch()
    lay = pack(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
               batch.completion_mask, capacity=1000)
    real = int(batch.prompt_mask.sum() + batch.completion_mask.sum())
    assert lay.ids.shape == (1, real)  # one row, not a pad in it
    assert batch.n_tokens(True) > real
    # a completion token never sees another completion or another group's tokens
    assert not lay.allowed[0].triu(1).any()


def test_prompt_pass_keeps_only_its_last_logits():
    """The [B, P, V] prompt logits are never built: only [B, 1, V]; the packed form keeps
    the positions that predict a completion token and no other."""
    model = _tiny_model()
    batch = _batch()
    shapes = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    group_logps(model, batch)
    group_logps_packed(model, batch, capacity=1000)
    hook.remove()
    b = batch.prompt_ids.shape[0]
    predicting = b + int((batch.completion_mask.sum(2) - 1).clamp(min=0).sum())
    assert shapes[0] == (b, 1, 40)  # the prompt pass of the KV-cache form
    assert shapes[2] == (1, predicting, 40)  # the packed form: predicted positions only


def _shaped(hidden: int, layers: int, inner: int, heads: int):
    """Something with a model's config and no weights: the cost model reads only the shape."""
    return SimpleNamespace(config=LlamaConfig(hidden_size=hidden, intermediate_size=inner,
                                              num_hidden_layers=layers,
                                              num_attention_heads=heads))


def _masks(b: int, k: int, p: int, c: int, short: int):
    """b groups of k completions, prompts p tokens, completions c tokens except every
    other one ``short`` tokens (uneven groups: padding to trim)."""
    prompt = torch.ones(b, p, dtype=torch.long)
    comp = torch.zeros(b, k, c, dtype=torch.long)
    for i in range(b):
        for j in range(k):
            comp[i, j, : c if (i + j) % 2 else short] = 1
    return prompt, comp


def test_cost_model_packs_short_groups_and_caches_long_ones():
    # the benchmark's ~100M model: DPO pairs of a short prompt and short answers
    small = _shaped(768, 12, 2560, 12)
    assert 400 < row_capacity(attention_shape(small)) < 700
    assert packed_is_cheaper(small, *_masks(8, 2, 13, 9, 4))
    # a 7B-shaped model, k=8 groups of 512-token prompts and completions: attending over a
    # 4,600-token row costs more than the padding saved
    big = _shaped(4096, 32, 11008, 32)
    assert not packed_is_cheaper(big, *_masks(4, 8, 512, 512, 400))
    # no shape to read: the KV-cache form
    assert not packed_is_cheaper(SimpleNamespace(), *_masks(8, 2, 13, 9, 4))


def test_auto_form_equals_naive():
    model = _tiny_model()
    batch = _batch()
    torch.testing.assert_close(group_logps_auto(model, batch), group_logps_naive(model, batch),
                               rtol=0, atol=1e-10)


def test_selective_log_softmax_matches_its_twin():
    logits = torch.randn(5, 7, 11, dtype=torch.float64)
    idx = torch.randint(0, 11, (5, 7))
    naive = torch.log_softmax(logits, -1).gather(-1, idx[..., None])[..., 0]
    torch.testing.assert_close(selective_log_softmax(logits, idx), naive)
