"""One optimizer step over a fixed set of groups, cut into passes that fit the token budget.

The objective of a step is the mean over its groups (over all processes) of each group's
weighted loss:  L_step = (1 / n_step) * sum_g w_g * L_g.  Every pass backpropagates its own
groups' share of that sum, scaled by ``world_size / n_step`` (DDP averages gradients over
processes), so a group's weight in the objective is the same whatever micro-batch, process
or split it lands in: the same data packed two ways gives the same gradient (tested).

A group larger than the token budget alone is split by candidates without changing its
loss, which is not a sum over candidates (Plackett-Luce normalises over the whole ranking):
first its candidates' log-probs are computed piece by piece without gradients, then the
loss and its gradient with respect to those K log-probs, then each piece is run again with
gradients and backpropagated with that piece's slice of the gradient (the chain rule through
the log-probs, "gradient caching"). The split groups pay one extra forward pass.

Only the last pass of a step synchronises gradients across processes (``no_sync`` on the
others); a process whose share of a step is empty (a short last step) runs one pass at
weight zero so that every process joins the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from trainers.data import TokenizedGroup, collate, plan_micro_batches, subset
from trainers.logprobs import GroupBatch
from trainers.losses import LossType, groupwise_loss, ranking_accuracy

# (model, batch on the device) -> [B, K] summed completion log-probs
LogpsFn = Callable[[object, GroupBatch], torch.Tensor]
# (groups of the pass, their batch) -> reference log-probs [B, K], or None (reference-free)
ReferenceFn = Callable[[list[TokenizedGroup], GroupBatch], "torch.Tensor | None"]


@dataclass
class StepStats:
    """Sums over one process's groups in a step; summed across processes, then divided."""

    loss: float = 0.0  # sum of w_g * L_g
    groups: float = 0.0
    margin: float = 0.0  # best tier minus worst tier implicit reward, summed over groups
    margin_n: float = 0.0
    rank_acc: float = 0.0
    rank_acc_n: float = 0.0
    kl: float = 0.0  # log pi - log pi_ref, summed over valid candidates
    kl_n: float = 0.0

    def add(self, losses, rewards, ranks, logps, ref) -> None:
        self.loss += float(losses.detach().sum())
        self.groups += len(losses)
        margin = _tier_margin(rewards, ranks)
        self.margin += float(margin.sum())
        self.margin_n += margin.numel()
        acc = ranking_accuracy(rewards, ranks)
        acc = acc[~torch.isnan(acc)]
        self.rank_acc += float(acc.sum())
        self.rank_acc_n += acc.numel()
        if ref is not None:
            diff = (logps.detach().float() - ref)[ranks >= 0]
            self.kl += float(diff.sum())
            self.kl_n += diff.numel()

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> StepStats:
        return cls(*(float(v) for v in values))

    def row(self, n_step: int) -> dict:
        """The logged metrics: means over the step's groups (over every process)."""
        def mean(total, n):
            return round(total / n, 6) if n else None

        row = {"loss": round(self.loss / n_step, 6), "reward_margin": mean(self.margin,
                                                                            self.margin_n),
               "rank_acc": mean(self.rank_acc, self.rank_acc_n)}
        if self.kl_n:
            # Mean of log pi - log pi_ref over the sampled completions: a KL estimate, valid
            # while the data is (close to) samples of the current policy.
            row["kl_estimate"] = mean(self.kl, self.kl_n)
        return row


def _tier_margin(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Per group, the best tier's highest reward minus the worst tier's lowest one: the
    margin the loss is opening up (groups with a single tier left out)."""
    valid = ranks >= 0
    big = torch.finfo(rewards.dtype).max
    best_rank = ranks.masked_fill(~valid, 10**6).min(1, True).values
    worst_rank = ranks.masked_fill(~valid, -1).max(1, True).values
    best = torch.where(valid & (ranks == best_rank), rewards, -big).max(1).values
    worst = torch.where(valid & (ranks == worst_rank), rewards, big).min(1).values
    keep = (worst_rank > best_rank).squeeze(1)
    return (best - worst)[keep]


@dataclass
class StepContext:
    """What a step needs besides its groups; built once per run."""

    model: object  # as prepared by accelerate (DDP/FSDP wrapper or the model itself)
    accelerator: object
    groups: list[TokenizedGroup]
    logps_fn: LogpsFn
    reference: ReferenceFn
    loss_type: LossType
    beta: float
    max_tokens: int
    pad_id: int


def train_step(ctx: StepContext, step_groups: list[int], share: list[int]) -> StepStats:
    """Forward and backward over this process's ``share`` of ``step_groups``; the caller
    steps the optimizer. Returns this process's sums (not yet reduced)."""
    acc = ctx.accelerator
    scale = acc.num_processes / len(step_groups)
    stats = StepStats()
    plan = plan_micro_batches(ctx.groups, share, ctx.max_tokens)
    passes: list[Callable[[], None]] = []
    for idx in plan.whole:
        passes.append(lambda idx=idx: _whole_groups_pass(ctx, idx, scale, stats))
    for i, pieces in plan.split.items():
        passes += _split_group_passes(ctx, i, pieces, scale, stats)
    if not passes:  # an empty share still joins the all-reduce, contributing zero
        passes.append(lambda: _whole_groups_pass(ctx, step_groups[:1], 0.0, None))
    for n, run in enumerate(passes):
        last = n == len(passes) - 1
        with contextlib.nullcontext() if last else acc.no_sync(ctx.model):
            run()
    return stats


def _forward(ctx: StepContext, groups: list[TokenizedGroup], with_reference: bool = True):
    batch, ranks, weights = collate(groups, ctx.pad_id)
    batch = batch.to(ctx.accelerator.device)
    ref = ctx.reference(groups, batch) if with_reference else None
    with ctx.accelerator.autocast():
        logps = ctx.logps_fn(ctx.model, batch)
    if logps.dtype != torch.float64:  # the loss in at least float32 (float64 in tests)
        logps = logps.float()
    return batch, logps, ref, ranks.to(logps.device), weights.to(logps.device)


def _whole_groups_pass(ctx: StepContext, idx: list[int], scale: float,
                       stats: StepStats | None) -> None:
    _, logps, ref, ranks, weights = _forward(ctx, [ctx.groups[i] for i in idx])
    losses, rewards = groupwise_loss(ctx.loss_type, logps, ref, ranks, ctx.beta, weights)
    ctx.accelerator.backward(losses.sum() * scale)
    if stats is not None:
        stats.add(losses.cpu(), rewards.cpu(), ranks.cpu(), logps.cpu(),
                  None if ref is None else ref.cpu())


def _split_group_passes(ctx: StepContext, i: int, pieces: list[list[int]], scale: float,
                        stats: StepStats) -> list[Callable[[], None]]:
    """Loss and d loss / d logps of group ``i`` from a gradient-free pass over its pieces,
    then one backward pass per piece carrying that piece's slice of the gradient."""
    group = ctx.groups[i]
    k = len(group.completion_ids)
    logps, ref = None, None
    with torch.no_grad():
        for cands in pieces:
            _, piece_logps, piece_ref, _, _ = _forward(ctx, [subset(group, cands)])
            logps = torch.zeros(1, k, dtype=piece_logps.dtype) if logps is None else logps
            logps[0, cands] = piece_logps[0].cpu()
            if piece_ref is not None:
                ref = torch.zeros(1, k, dtype=piece_logps.dtype) if ref is None else ref
                ref[0, cands] = piece_ref[0].to(ref.dtype).cpu()
    logps.requires_grad_(True)
    ranks = torch.tensor([group.ranks])
    losses, rewards = groupwise_loss(ctx.loss_type, logps, ref, ranks, ctx.beta,
                                     torch.tensor([group.weight], dtype=logps.dtype))
    (grad,) = torch.autograd.grad(losses.sum() * scale, logps)
    stats.add(losses.detach(), rewards, ranks, logps.detach(), ref)

    def backward_piece(cands: list[int]) -> None:
        _, piece_logps, _, _, _ = _forward(ctx, [subset(group, cands)], with_reference=False)
        ctx.accelerator.backward((piece_logps[0] * grad[0, cands].to(piece_logps.device)).sum())

    return [lambda cands=cands: backward_piece(cands) for cands in pieces]
