"""One consensus ranking per group from every source's preferences, with its consistency.

For a chunk of G groups (P [G, S, k, k] from ``preferences``) and source weights w [S]:
1. wins[i, j] = sum_s w_s * P_s[i, j] (a tie gives half to each side);
2. Bradley-Terry strengths theta by maximum likelihood (``bradley_terry``);
3. the weighted majority graph (i -> j where wins[i, j] > wins[j, i]); its cycles are found,
   not forced away: candidates of one strongly connected component share the mean strength
   of its members and therefore one rank (a tie);
4. dense ranks, 0 = best; a candidate no weighted source has an opinion on gets -1;
5. per source: its own cycles (A>B, B>C, C>A), Kendall tau against every other source and
   its ties and whether its own winner is a consensus winner;
6. status, first match: intransitive (consensus cycle), contested (mean tau between
   weighted sources below ``contested_below``), unranked (fewer than two ranks) or ok; the
   config's policy for the status sets the group's training weight (unranked: 0).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pipeline.config import RankConfig
from pipeline.consensus.bradley_terry import fit_bradley_terry
from pipeline.consensus.graph import closure, count_3cycles, on_cycle, scc_labels

Tensor = torch.Tensor
STATUS_NAMES = np.array(["ok", "contested", "intransitive", "unranked"])
TIE_TOL = 1e-6  # strengths closer than this are a tie
MARGIN_TOL = 1e-9
# Win counts closer than this are equal. They are sums of at most k - 1 verdicts, each a
# multiple of 0.5 or a mean over a few views, so distinct counts differ by far more, while
# float32 rounding of the same sum in another order stays far below.
WINS_TOL = 1e-4


def configured_weight(source: str, cfg: RankConfig) -> float:
    """First matching GLOB=WEIGHT wins; else the default weight."""
    for item in cfg.weights:
        pattern, _, weight = item.rpartition("=")
        if fnmatch.fnmatchcase(source, pattern):
            return float(weight)
    return cfg.default_weight


def source_weights(sources: list[str], cfg: RankConfig,
                   estimated: dict[str, float] | None = None,
                   zero: list[str] | tuple[str, ...] = ()) -> np.ndarray:
    """Configured weights; estimated weights (if any) replace them, except that a source
    configured at 0 and the ``zero`` sources (the held-out gold) stay 0 whatever the
    estimate says: a held-out measure must never leak into training."""
    out = []
    for source in sources:
        weight = configured_weight(source, cfg)
        if source in zero or weight == 0:
            out.append(0.0)
        elif estimated and source in estimated:
            out.append(estimated[source])
        else:
            out.append(weight)
    return np.asarray(out, dtype=np.float32)


class SourceAgreement(NamedTuple):
    """Per group, every two sources [G, S, S]; NaN where the denominator is 0."""
    tau: Tensor  # (concordant - discordant) / pairs
    pairs: Tensor  # int64: pairs both sources have an opinion on (ties included)
    decided: Tensor  # int64: pairs both sources order strictly
    tau_decided: Tensor  # (concordant - discordant) / decided


class SourceSummary(NamedTuple):
    """Per group and source [G, S]: its ties, and its own winner against the consensus."""
    judged: Tensor  # int64: candidates the source has an opinion on (0 = none)
    tied: Tensor  # int64: candidates it ties with another (equal mean score, a tie verdict)
    best: Tensor  # int64: candidates sharing the source's best win count (>= 2: a tied winner)
    agrees: Tensor  # bool: one of those is a consensus winner (rank 0)


@dataclass
class ChunkResult:
    theta: Tensor  # [G, k] consensus strength (SCC-averaged)
    ranks: Tensor  # [G, k] 0 = best, -1 excluded
    status: list[str]  # [G]
    weight: Tensor  # [G]
    n_sources: Tensor  # [G]
    n_cycles: Tensor  # [G] 3-cycles of the consensus majority graph
    consensus_cycle: Tensor  # [G, k] on a consensus cycle
    source_cycle: Tensor  # [G, S, k] on a cycle of that source's own verdicts
    source_3cycles: Tensor  # [G, S]
    agreement: SourceAgreement  # [G, S, S] Kendall tau of every two sources, two ways
    mean_tau: Tensor  # [G] mean tau over pairs of weighted sources; NaN with fewer than two
    sources: SourceSummary  # [G, S] each source's ties and winner against the consensus


def dense_rank_desc(score: Tensor, valid: Tensor, tol: float = TIE_TOL) -> Tensor:
    """Dense ranks by descending score (0 = best), equal within ``tol``; -1 where invalid."""
    k = score.shape[1]
    close = (score.unsqueeze(2) - score.unsqueeze(1)).abs() <= tol
    earlier = torch.tril(torch.ones(k, k, dtype=torch.bool, device=score.device), -1)
    # j is the first of its tie class among valid candidates
    first = valid & ~((close & earlier.unsqueeze(0) & valid.unsqueeze(1)).any(2))
    better = score.unsqueeze(1) > score.unsqueeze(2) + tol  # better[g, i, j] = s_j > s_i
    rank = (better & first.unsqueeze(1)).sum(2)
    return torch.where(valid, rank, torch.full_like(rank, -1))


def kendall_tau(p: Tensor) -> SourceAgreement:
    """p [G, S, k, k] -> agreement of every two sources over pairs i < j.

    With x_s = sign(P_s - 1/2) per pair (0 for a tie or no opinion) and m_s = 1 where s has
    an opinion: concordant - discordant = x_a . x_b, pairs = m_a . m_b (ties count in the
    denominator) and decided = |x_a| . |x_b| (pairs both order strictly), one batched matrix
    product each rather than a [G, S, S, pairs] tensor. Over the decided pairs it is the
    agreement where both take a side (Goodman-Kruskal gamma): a judge that ties most pairs
    has a tau near 0 whatever it says about the rest, which gamma does not hide."""
    k = p.shape[-1]
    iu, ju = torch.triu_indices(k, k, 1, device=p.device)
    upper_p = p.flatten(2)[:, :, iu * k + ju]  # [G, S, pairs]; NaN = no opinion
    known = (~torch.isnan(upper_p)).float()  # not from sign(): torch.sign(NaN) is 0, not NaN
    sign = torch.sign(torch.nan_to_num(upper_p, nan=0.5) - 0.5)
    strict = sign.abs()
    concordance = torch.bmm(sign, sign.transpose(1, 2))
    pairs = torch.bmm(known, known.transpose(1, 2))
    decided = torch.bmm(strict, strict.transpose(1, 2))
    nan = torch.full_like(concordance, torch.nan)
    return SourceAgreement(
        torch.where(pairs > 0, concordance / pairs.clamp(min=1), nan), pairs.to(torch.int64),
        decided.to(torch.int64), torch.where(decided > 0, concordance / decided.clamp(min=1), nan))


def summarise_sources(pz: Tensor, opinion: Tensor, ranks: Tensor) -> SourceSummary:
    """P with NaN as 0 and where it is not NaN (both [G, S, k, k], as ``merge_chunk`` already
    holds them), ranks [G, k] -> each source's ties and winner against the consensus.

    A source's winner is the candidate that wins most of its own verdicts (a tie counts
    half). For a score source that is exactly its best mean score (a higher score beats
    every candidate a lower one beats, and that one too), for a ranking its best rank, for
    pairwise verdicts the most wins (Copeland): one rule for every kind of source. When
    several candidates share the best count the source names no single winner; it agrees if
    any of them is a consensus winner."""
    has = opinion.any(3)  # [G, S, k]: an opinion on the candidate against another
    wins = torch.where(has, pz.sum(3), -torch.inf)
    top = wins.max(2, keepdim=True).values
    best = has & (wins >= top - WINS_TOL)
    tied = (pz == 0.5).any(3)  # no opinion is 0 in pz: no tie
    return SourceSummary(has.sum(2), tied.sum(2), best.sum(2),
                         (best & (ranks == 0).unsqueeze(1)).any(2))


def merge_chunk(p: Tensor, n_candidates: Tensor, weights: Tensor, cfg: RankConfig,
                may_cycle: Tensor | None = None) -> ChunkResult:
    """``may_cycle`` [S] bool: the sources whose own verdicts can hold a cycle (those with
    pairwise verdicts in the chunk; verdicts derived from one score per candidate cannot).
    The others are not searched for cycles; by default every source is."""
    g, s, k, _ = p.shape
    exists = torch.arange(k).unsqueeze(0) < n_candidates.unsqueeze(1)  # [G, k]
    opinion = ~torch.isnan(p)
    weighted = weights > 0
    pz = torch.nan_to_num(p)

    wins = (pz * weights.view(1, s, 1, 1)).sum(1)
    has_view = (opinion & weighted.view(1, s, 1, 1)).any(1)  # [G, k, k]
    valid = exists & has_view.any(2)
    theta = fit_bradley_terry(wins, valid, l2=cfg.l2).float()

    majority = (wins - wins.transpose(1, 2) > MARGIN_TOL) & valid.unsqueeze(2) & valid.unsqueeze(1)
    reach = closure(majority)
    cyc = on_cycle(reach)
    scc = scc_labels(reach)
    members = scc.unsqueeze(2) == torch.arange(k).view(1, 1, k)  # [G, k(node), k(label)]
    label_mean = (theta.unsqueeze(2) * members).sum(1) / members.sum(1).clamp(min=1)
    strength = label_mean.gather(1, scc)
    ranks = dense_rank_desc(strength, valid)

    strict = pz > 0.5  # a source's own strict verdicts (NaN compared as 0 above)
    strict &= opinion
    source_cycle = torch.zeros(g, s, k, dtype=torch.bool)
    source_3 = torch.zeros(g, s, dtype=torch.int64)
    searched = torch.arange(s) if may_cycle is None else may_cycle.nonzero().squeeze(1)
    if len(searched):
        own = strict[:, searched].reshape(-1, k, k)
        source_cycle[:, searched] = on_cycle(closure(own)).view(g, len(searched), k)
        source_3[:, searched] = count_3cycles(own).view(g, len(searched))
    agreement = kendall_tau(p)
    tau, pairs = agreement.tau, agreement.pairs

    n_sources = opinion.flatten(2).any(2).sum(1)
    w_pair = weighted.view(1, s, 1) & weighted.view(1, 1, s) & \
        torch.triu(torch.ones(s, s, dtype=torch.bool), 1).unsqueeze(0)
    usable_tau = w_pair & (pairs > 0)
    mean_tau = torch.where(usable_tau, torch.nan_to_num(tau), 0).sum((1, 2)) / \
        usable_tau.sum((1, 2)).clamp(min=1)
    mean_tau = torch.where(usable_tau.any((1, 2)), mean_tau, torch.nan)

    levels = ranks.max(1).values + 1
    contested = ~torch.isnan(mean_tau) & (mean_tau < cfg.contested_below)
    # The reason comes first: a cycle or a flat disagreement usually leaves every candidate
    # tied, and "unranked" alone would hide why.
    code = torch.where(cyc.any(1), 2, torch.where(contested, 1, torch.where(levels < 2, 3, 0)))
    policy = {"keep": 1.0, "downweight": cfg.downweight, "drop": 0.0}
    by_code = torch.tensor([1.0, policy[cfg.contested], policy[cfg.intransitive], 0.0])
    weight = by_code[code]
    status = STATUS_NAMES[code.numpy()].tolist()
    return ChunkResult(strength, ranks, status, weight, n_sources, count_3cycles(majority), cyc,
                       source_cycle, source_3, agreement, mean_tau,
                       summarise_sources(pz, opinion, ranks))
