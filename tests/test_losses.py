"""Loss properties on CPU: shapes, ordering, K=2 == DPO, ties, exclusions, no NaN,
gradients by finite differences."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import (
    LossType,
    all_pairs_loss,
    dpo_loss,
    groupwise_loss,
    lipo_lambda_loss,
    plackett_luce_loss,
    ranking_accuracy,
)

ALL = [plackett_luce_loss, dpo_loss, all_pairs_loss, lipo_lambda_loss]


@pytest.fixture(autouse=True)
def float64():
    """Finite differences need float64; set for these tests only, so the rest of the session
    (the demo model its fixtures build included) runs in the dtype `make demo` uses."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _batch(b=3, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pol = torch.randn(b, k, generator=g) * 3
    ref = torch.randn(b, k, generator=g) * 3
    ranks = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    return pol, ref, ranks


@pytest.mark.parametrize("fn", ALL)
def test_shapes_and_detached_rewards(fn):
    pol, ref, ranks = _batch()
    pol.requires_grad_(True)
    losses, rewards = fn(pol, ref, ranks, 0.1)
    assert losses.shape == (3,) and rewards.shape == (3, 5)
    assert not rewards.requires_grad
    assert torch.allclose(rewards, 0.1 * (pol - ref))
    losses.sum().backward()
    assert pol.grad is not None and torch.isfinite(pol.grad).all()


@pytest.mark.parametrize("fn", ALL)
def test_better_ordering_gives_lower_loss(fn):
    k = 4
    ranks = torch.arange(k).unsqueeze(0)  # candidate 0 best
    ref = torch.zeros(1, k)
    agrees = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    disagrees = agrees.flip(1)
    assert fn(agrees, ref, ranks, 1.0)[0] < fn(disagrees, ref, ranks, 1.0)[0]


@pytest.mark.parametrize("fn", [plackett_luce_loss, dpo_loss, all_pairs_loss])
def test_k2_equals_pairwise_dpo_exactly(fn):
    pol, ref, _ = _batch(b=6, k=2, seed=4)
    ranks = torch.tensor([[0, 1], [1, 0]] * 3)
    beta = 0.3
    s = beta * (pol - ref)
    chosen = torch.where(ranks[:, 0] == 0, s[:, 0], s[:, 1])
    rejected = torch.where(ranks[:, 0] == 0, s[:, 1], s[:, 0])
    expected = -F.logsigmoid(chosen - rejected)
    torch.testing.assert_close(fn(pol, ref, ranks, beta)[0], expected, rtol=0, atol=1e-12)


def test_plackett_luce_matches_the_paper_formula_without_ties():
    pol, ref, ranks = _batch(b=4, k=6, seed=2)
    beta = 0.5
    s = beta * (pol - ref)
    expected = []
    for b in range(4):
        order = ranks[b].argsort()  # best first
        ss = s[b, order]
        expected.append(-sum(ss[j] - torch.logsumexp(ss[j:], 0) for j in range(6)))
    torch.testing.assert_close(plackett_luce_loss(pol, ref, ranks, beta)[0],
                               torch.stack(expected))


@pytest.mark.parametrize("fn", ALL)
def test_ties_do_not_order_their_members(fn):
    pol, ref, _ = _batch(b=1, k=4, seed=5)
    ranks = torch.tensor([[0, 1, 1, 2]])
    base = fn(pol, ref, ranks, 1.0)[0]
    swapped = pol.clone()
    swapped[0, [1, 2]] = swapped[0, [2, 1]]
    ref_swapped = ref.clone()
    ref_swapped[0, [1, 2]] = ref_swapped[0, [2, 1]]
    # Swapping the two tied candidates' values changes nothing.
    torch.testing.assert_close(fn(swapped, ref_swapped, ranks, 1.0)[0], base)
    # An all-tied group carries no preference.
    assert fn(pol, ref, torch.zeros(1, 4, dtype=torch.long), 1.0)[0].item() == 0.0


@pytest.mark.parametrize("fn", ALL)
def test_excluded_candidates_are_ignored(fn):
    pol, ref, _ = _batch(b=1, k=4, seed=6)
    ranks = torch.tensor([[1, -1, 0, 2]])
    full = fn(pol, ref, ranks, 1.0)[0]
    # Changing an excluded candidate's log-probs has no effect...
    pol2 = pol.clone()
    pol2[0, 1] = 1e6
    torch.testing.assert_close(fn(pol2, ref, ranks, 1.0)[0], full)
    # ...and equals the loss on the group without it.
    keep = [0, 2, 3]
    torch.testing.assert_close(fn(pol[:, keep], ref[:, keep], torch.tensor([[1, 0, 2]]),
                                  1.0)[0], full)


@pytest.mark.parametrize("fn", ALL)
def test_fully_masked_rows_give_zero_and_no_nan(fn):
    pol, ref, _ = _batch(b=3, k=4, seed=7)
    pol.requires_grad_(True)
    ranks = torch.tensor([[-1, -1, -1, -1], [0, -1, -1, -1], [0, 1, 2, 3]])
    losses, _ = fn(pol, ref, ranks, 1.0)
    assert losses[0].item() == 0.0 and losses[1].item() == 0.0
    losses.sum().backward()
    assert torch.isfinite(pol.grad).all()
    assert (pol.grad[:2] == 0).all()


@pytest.mark.parametrize("fn", ALL)
def test_gradients_match_finite_differences(fn):
    pol, ref, ranks = _batch(b=2, k=4, seed=8)
    ranks[1] = torch.tensor([0, 0, 1, -1])  # a tie and an exclusion
    pol = pol.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: fn(p, ref, ranks, 0.7)[0], (pol,))


def test_reference_free_and_weights():
    pol, ref, ranks = _batch()
    losses_free, rewards = plackett_luce_loss(pol, None, ranks, 0.2)
    torch.testing.assert_close(rewards, 0.2 * pol)
    w = torch.tensor([1.0, 0.5, 0.0])
    weighted, _ = groupwise_loss("plackett_luce", pol, ref, ranks, 0.2, weights=w)
    plain, _ = groupwise_loss(LossType.PLACKETT_LUCE, pol, ref, ranks, 0.2)
    torch.testing.assert_close(weighted, plain * w)
    with pytest.raises(ValueError):
        LossType("nope")


def test_lipo_weights_top_errors_more_than_bottom_errors():
    ref = torch.zeros(1, 4)
    ranks = torch.arange(4).unsqueeze(0)
    top_swapped = torch.tensor([[2.0, 3.0, 1.0, 0.0]])
    bottom_swapped = torch.tensor([[3.0, 2.0, 0.0, 1.0]])
    assert lipo_lambda_loss(top_swapped, ref, ranks, 1.0)[0] > \
        lipo_lambda_loss(bottom_swapped, ref, ranks, 1.0)[0]


def _lipo_by_the_formula(s: list[float], ranks: list[int]) -> float:
    """LiPO-lambda written out pair by pair, independently of the vectorised code:
    sum over pairs with psi_i > psi_j of Delta_ij * log(1 + exp(-(s_i - s_j))),
    Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|, G = 2^psi - 1, D(r) = log(1 + r),
    tau = 1-based position by descending s, psi_i = share of valid candidates worse than i."""
    import math

    valid = [i for i, r in enumerate(ranks) if r >= 0]
    n = len(valid)
    psi = {i: sum(ranks[j] > ranks[i] for j in valid) / max(n - 1, 1) for i in valid}
    order = sorted(valid, key=lambda i: -s[i])
    tau = {i: order.index(i) + 1 for i in valid}
    total = 0.0
    for i in valid:
        for j in valid:
            if psi[i] > psi[j]:
                delta = abs((2 ** psi[i] - 1) - (2 ** psi[j] - 1)) * \
                    abs(1 / math.log(1 + tau[i]) - 1 / math.log(1 + tau[j]))
                total += delta * math.log(1 + math.exp(-(s[i] - s[j])))
    return total


@pytest.mark.parametrize("seed", range(5))
def test_lipo_matches_its_formula_computed_pair_by_pair(seed):
    pol, ref, ranks = _batch(b=4, k=6, seed=seed)
    ranks[1, 2] = ranks[1, 3]  # a tie
    ranks[2, 0] = -1  # an excluded candidate
    losses, rewards = lipo_lambda_loss(pol, ref, ranks, 0.5)
    for b in range(4):
        expected = _lipo_by_the_formula(rewards[b].tolist(), ranks[b].tolist())
        assert losses[b].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ranking_accuracy():
    ranks = torch.tensor([[0, 1, 2], [0, 0, 0]])
    rewards = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    acc = ranking_accuracy(rewards, ranks)
    assert acc[0].item() == pytest.approx(2 / 3)
    assert torch.isnan(acc[1])


def test_every_permutation_of_k4_is_consistent():
    """Relabelling candidates (permuting columns of all inputs) never changes a loss."""
    pol, ref, ranks = _batch(b=1, k=4, seed=9)
    for fn in ALL:
        base = fn(pol, ref, ranks, 1.0)[0]
        for perm in itertools.permutations(range(4)):
            p = list(perm)
            torch.testing.assert_close(fn(pol[:, p], ref[:, p], ranks[:, p], 1.0)[0], base)
