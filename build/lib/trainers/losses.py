"""Groupwise preference losses over whole ranked groups.

Every loss takes, for a batch of B groups of K candidates:

- ``policy_logps`` [B, K]: summed log-probability of each completion under the policy;
- ``ref_logps`` [B, K] or ``None``: the same under the reference model (``None`` = the
  reference-free variant, where the implicit reward is ``beta * policy_logps``);
- ``ranks`` [B, K] integer: 0 is best, equal values are ties, a negative value excludes the
  candidate (a failed judgment, or padding of a group smaller than K);
- ``beta``: the KL-strength of the implicit reward.

and returns ``(losses [B], rewards [B, K])`` where ``rewards`` are the detached implicit
rewards ``s = beta * (log pi(y|x) - log pi_ref(y|x))``. A group with fewer than two usable
ranks (everything tied or excluded) has loss exactly 0 and no NaN anywhere.

Ties. A tie group is a set, not an order: no loss ever prefers one member of a tie over
another. Each candidate is only compared against candidates strictly worse than it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossOutput = tuple[Tensor, Tensor]


def implicit_rewards(policy_logps: Tensor, ref_logps: Tensor | None, beta: float) -> Tensor:
    """s = beta * (log pi - log pi_ref); beta * log pi when reference-free."""
    if ref_logps is None:
        return beta * policy_logps
    return beta * (policy_logps - ref_logps)


def _pair_masks(ranks: Tensor) -> Tensor:
    """better[b, i, j] = True where candidate i is strictly better ranked than j, both valid."""
    valid = ranks >= 0
    both = valid.unsqueeze(2) & valid.unsqueeze(1)
    return both & (ranks.unsqueeze(2) < ranks.unsqueeze(1))


def plackett_luce_loss(policy_logps: Tensor, ref_logps: Tensor | None, ranks: Tensor,
                       beta: float) -> LossOutput:
    """Plackett-Luce DPO (Rafailov et al. 2023, appendix A.3).

    L = - sum_j [ s_tau(j) - log sum_{l >= j} exp(s_tau(l)) ]  with tau the ranking, best first.

    With ties, candidate i's denominator holds i itself and every candidate strictly worse
    than i (tied candidates are left out of each other's denominators). Without ties this is
    exactly the formula above; a tie contributes no ordering between its members; K=2
    without a tie equals ``-log sigmoid(s_w - s_l)``, pairwise DPO.
    """
    s = implicit_rewards(policy_logps, ref_logps, beta)
    valid = ranks >= 0
    eye = torch.eye(s.shape[1], dtype=torch.bool, device=s.device).unsqueeze(0)
    # Denominator set of i: itself (always, so no row is all -inf and no NaN can appear)
    # plus everything strictly worse.
    in_denominator = _pair_masks(ranks) | eye
    logits = s.unsqueeze(1).expand(-1, s.shape[1], -1).masked_fill(~in_denominator, -math.inf)
    terms = s - torch.logsumexp(logits, dim=2)
    losses = -(terms * valid).sum(dim=1)
    return losses, s.detach()


def dpo_loss(policy_logps: Tensor, ref_logps: Tensor | None, ranks: Tensor,
             beta: float) -> LossOutput:
    """Pairwise DPO on best vs worst: the baseline peers apply to a group.

    -log sigmoid(s_best - s_worst), averaged over every (best-tier, worst-tier) pair so that
    a tie at the top or bottom is not broken silently by index order.
    """
    s = implicit_rewards(policy_logps, ref_logps, beta)
    valid = ranks >= 0
    big = torch.iinfo(ranks.dtype).max
    best = ranks.masked_fill(~valid, big).min(dim=1, keepdim=True).values
    worst = ranks.masked_fill(~valid, -1).max(dim=1, keepdim=True).values
    top = valid & (ranks == best)
    bottom = valid & (ranks == worst) & (worst > best)
    pairs = top.unsqueeze(2) & bottom.unsqueeze(1)
    return _mean_pair_loss(s, pairs), s.detach()


def all_pairs_loss(policy_logps: Tensor, ref_logps: Tensor | None, ranks: Tensor,
                   beta: float) -> LossOutput:
    """Mean pairwise DPO over every ordered pair (i better than j) of the group."""
    s = implicit_rewards(policy_logps, ref_logps, beta)
    return _mean_pair_loss(s, _pair_masks(ranks)), s.detach()


def _mean_pair_loss(s: Tensor, pairs: Tensor) -> Tensor:
    diff = s.unsqueeze(2) - s.unsqueeze(1)  # diff[b, i, j] = s_i - s_j
    per_pair = -F.logsigmoid(diff) * pairs
    count = pairs.sum(dim=(1, 2))
    return per_pair.sum(dim=(1, 2)) / count.clamp(min=1)


def lipo_lambda_loss(policy_logps: Tensor, ref_logps: Tensor | None, ranks: Tensor,
                     beta: float) -> LossOutput:
    """LiPO-lambda (Liu et al. 2024, arXiv 2402.01878, eq. 6).

    sum over pairs with psi_i > psi_j of Delta_ij * log(1 + exp(-(s_i - s_j))),
    Delta_ij = |G_i - G_j| * |1/D(tau(i)) - 1/D(tau(j))|, G = 2^psi - 1, D(r) = log(1 + r),
    tau = 1-based position when sorting by the current s (descending). Delta is detached.

    Departure from the paper: its psi are graded labels; here labels come from ranks, so
    psi_i is the fraction of the group's valid candidates strictly worse than i (in [0, 1]),
    which keeps G bounded whatever K is and gives tied candidates equal labels.
    """
    s = implicit_rewards(policy_logps, ref_logps, beta)
    valid = ranks >= 0
    better = _pair_masks(ranks)
    n_valid = valid.sum(dim=1, keepdim=True)
    psi = better.sum(dim=2).to(s.dtype) / (n_valid - 1).clamp(min=1).to(s.dtype)
    gain = torch.pow(2.0, psi) - 1.0
    with torch.no_grad():
        # Invalid candidates sort last so they never displace a valid one's position.
        key = s.detach().masked_fill(~valid, -math.inf)
        order = key.argsort(dim=1, descending=True)
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(1, s.shape[1] + 1, device=s.device)
                          .expand_as(order))
        inv_discount = 1.0 / torch.log1p(position.to(s.dtype))
        delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * (
            inv_discount.unsqueeze(2) - inv_discount.unsqueeze(1)).abs()
    diff = s.unsqueeze(2) - s.unsqueeze(1)
    losses = (delta * F.softplus(-diff) * better).sum(dim=(1, 2))
    return losses, s.detach()


LossFn = Callable[[Tensor, Tensor | None, Tensor, float], LossOutput]


class LossType(enum.StrEnum):
    """The losses by config name; properties instead of string comparisons elsewhere.

    All of them are DPO-style and read a reference model unless ``train.reference_free``."""

    PLACKETT_LUCE = "plackett_luce"
    DPO = "dpo"
    ALL_PAIRS = "all_pairs"
    LIPO_LAMBDA = "lipo_lambda"

    @property
    def fn(self) -> LossFn:
        return _LOSSES[self]

    @property
    def uses_whole_group(self) -> bool:
        """False for best-vs-worst DPO, which reads only two tiers of the ranking."""
        return self is not LossType.DPO


_LOSSES: dict[LossType, LossFn] = {
    LossType.PLACKETT_LUCE: plackett_luce_loss,
    LossType.DPO: dpo_loss,
    LossType.ALL_PAIRS: all_pairs_loss,
    LossType.LIPO_LAMBDA: lipo_lambda_loss,
}


def groupwise_loss(loss_type: LossType | str, policy_logps: Tensor, ref_logps: Tensor | None,
                   ranks: Tensor, beta: float, weights: Tensor | None = None) -> LossOutput:
    """Dispatch by name and apply optional per-group weights [B] (from the consensus)."""
    losses, rewards = LossType(loss_type).fn(policy_logps, ref_logps, ranks, beta)
    if weights is not None:
        losses = losses * weights
    return losses, rewards


def ranking_accuracy(rewards: Tensor, ranks: Tensor) -> Tensor:
    """Per group, the fraction of strictly ordered pairs the implicit rewards order the same
    way; NaN for a group with no ordered pair."""
    better = _pair_masks(ranks)
    agree = ((rewards.unsqueeze(2) > rewards.unsqueeze(1)) & better).sum(dim=(1, 2))
    total = better.sum(dim=(1, 2))
    return torch.where(total > 0, agree / total.clamp(min=1), torch.nan)
