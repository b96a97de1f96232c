"""Prompt-once log-probs (KV-cache repeat and packed block mask) equal the naive
prompt-per-candidate computation, in value and gradient, with prompts and completions of
different lengths; the packed form also under gradient checkpointing."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainers.logprobs import (
    GroupBatch,
    group_logps,
    group_logps_naive,
    group_logps_packed,
    selective_log_softmax,
)


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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_equals_naive_in_value_and_gradient(attn, checkpointing):
    model = _tiny_model(attn)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    batch = _batch()
    packed, grads_packed = _value_and_grads(model, group_logps_packed, batch)
    naive, grads_naive = _value_and_grads(model, group_logps_naive, batch)
    torch.testing.assert_close(packed, naive, rtol=0, atol=1e-6)
    for a, b in zip(grads_packed, grads_naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # as above


def test_prompt_pass_keeps_only_its_last_logits():
    """The [B, P, V] prompt logits are never built: only [B, 1, V]."""
    model = _tiny_model()
    batch = _batch()
    shapes = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    group_logps(model, batch)
    group_logps_packed(model, batch)
    hook.remove()
    b, p = batch.prompt_ids.shape
    k, c = batch.completion_ids.shape[1:]
    assert shapes[0] == (b, 1, 40)  # the prompt pass of the KV-cache form
    assert shapes[2] == (b, 1 + k * (c - 1), 40)  # the packed form: predicted positions only


def test_selective_log_softmax_matches_its_twin():
    logits = torch.randn(5, 7, 11, dtype=torch.float64)
    idx = torch.randint(0, 11, (5, 7))
    naive = torch.log_softmax(logits, -1).gather(-1, idx[..., None])[..., 0]
    torch.testing.assert_close(selective_log_softmax(logits, idx), naive)
