"""One optimizer step: a group's weight in the objective does not depend on how the step is
cut into passes; a group split across passes keeps its loss and gradient; the planning of
steps, shares and passes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainers.data import (
    TokenizedGroup,
    collate,
    epoch_order,
    plan_micro_batches,
    plan_steps,
    rank_share,
)
from trainers.logprobs import group_logps, group_logps_packed
from trainers.losses import LossType, groupwise_loss
from trainers.reference import cached_reference, no_reference
from trainers.step import StepContext, train_step


def _model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).double()


def _groups(seed: int = 0) -> list[TokenizedGroup]:
    """Groups of different K, prompt and completion lengths, weights and ties."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, (k, weight) in enumerate([(4, 1.0), (2, 0.5), (6, 1.0), (3, 1.0), (5, 0.25)]):
        prompt = torch.randint(3, 40, (3 + n,), generator=g).tolist()
        comps = [torch.randint(3, 40, (1 + (n + j) % 5,), generator=g).tolist()
                 for j in range(k)]
        ranks = torch.randperm(k, generator=g).tolist()
        if k >= 4:
            ranks[0] = ranks[1]  # a tie
        out.append(TokenizedGroup(prompt, comps, ranks, weight,
                                  [f"g{n}c{j}" for j in range(k)]))
    return out


def _reference(groups):
    """Fixed per candidate id (whatever other groups are in the step)."""
    return {c: (sum(map(ord, c)) % 17 - 8) * 0.4 for grp in groups for c in grp.candidate_ids}


def _step_grads(groups, max_tokens, loss="plackett_luce", ref=True, logps_fn=group_logps):
    from accelerate import Accelerator

    model = _model()
    ctx = StepContext(model, Accelerator(cpu=True), groups, logps_fn,
                      cached_reference(_reference(groups)) if ref else no_reference,
                      LossType(loss), 0.7, max_tokens, 0)
    idx = list(range(len(groups)))
    stats = train_step(ctx, idx, idx)
    return [p.grad.clone() for p in model.parameters()], stats


def _direct_grads(groups, loss="plackett_luce", ref=True):
    """The objective written out in one batch: (1/n) * sum_g w_g * L_g."""
    model = _model()
    batch, ranks, weights = collate(groups, 0)
    refs = cached_reference(_reference(groups))(groups, batch) if ref else None
    logps = group_logps(model, batch)
    losses, _ = groupwise_loss(loss, logps, refs.double() if ref else None, ranks, 0.7,
                               weights.double())
    (losses.sum() / len(groups)).backward()
    return [p.grad.clone() for p in model.parameters()], float(losses.detach().sum() / len(groups))


@pytest.mark.parametrize("loss", ["plackett_luce", "lipo_lambda", "dpo"])
def test_same_step_packed_three_ways_gives_the_same_gradient(loss):
    groups = _groups()
    biggest = max(len(g.prompt_ids) + len(g.completion_ids) * max(map(len, g.completion_ids))
                  for g in groups)
    want, want_loss = _direct_grads(groups, loss)
    # one pass; one group per pass; and groups split by candidates (budget below the largest)
    for budget in (10_000, biggest, 12):
        plan = plan_micro_batches(groups, list(range(len(groups))), budget)
        assert (budget == 12) == bool(plan.split)
        got, stats = _step_grads(groups, budget, loss)
        assert stats.loss / len(groups) == pytest.approx(want_loss, rel=1e-9)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_a_group_alone_in_its_pass_weighs_the_same_as_the_others():
    """The bug this replaced: loss.mean() per micro-batch gave a group alone in a pass the
    weight of a whole pass. Here the gradient of a step is linear in its groups: a step of
    groups {a, b} equals the mean of the single-group steps, however they are packed."""
    groups = _groups()[:3]
    budget_one_each = max(len(g.prompt_ids) + len(g.completion_ids) *
                          max(map(len, g.completion_ids)) for g in groups)
    together, _ = _step_grads(groups, budget_one_each)
    singles = [_step_grads([g], 10_000)[0] for g in groups]
    for n, a in enumerate(together):
        mean = sum(s[n] for s in singles) / len(groups)
        torch.testing.assert_close(a, mean, rtol=1e-4, atol=1e-7)


def test_split_group_under_packed_logps_and_reference_free():
    groups = _groups()
    want, _ = _direct_grads(groups, ref=False)
    got, _ = _step_grads(groups, 12, ref=False, logps_fn=group_logps_packed)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_micro_batches_fit_the_budget_and_cover_every_candidate():
    groups = _groups(3)
    for budget in (8, 12, 20, 40, 10_000):
        plan = plan_micro_batches(groups, [4, 0, 2, 1, 3], budget)
        seen = [i for idx in plan.whole for i in idx] + list(plan.split)
        assert sorted(seen) == [0, 1, 2, 3, 4]
        for idx in plan.whole:
            sub = [groups[i] for i in idx]
            p = max(len(g.prompt_ids) for g in sub)
            k = max(len(g.completion_ids) for g in sub)
            c = max(len(x) for g in sub for x in g.completion_ids)
            assert len(idx) * (p + k * c) <= budget
        for i, pieces in plan.split.items():
            assert sorted(j for piece in pieces for j in piece) == \
                list(range(len(groups[i].completion_ids)))


def test_steps_and_shares_are_disjoint_deterministic_and_complete():
    order = epoch_order(23, seed=5, epoch=2)
    assert order == epoch_order(23, seed=5, epoch=2) != epoch_order(23, seed=5, epoch=3)
    steps = plan_steps(order, 8)
    assert [len(s) for s in steps] == [8, 8, 7]
    for step in steps:
        shares = [rank_share(step, r, 3) for r in range(3)]
        assert sorted(i for s in shares for i in s) == sorted(step)
        assert all(not set(a) & set(b) for a in shares for b in shares if a is not b)
