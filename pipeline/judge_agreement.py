"""How far a listwise judge agrees with a gold score, and with itself across views.

Pure functions over per-group scores, counted as the ``agreement`` table counts them: Kendall
tau over the candidate pairs both sides order strictly, ties counting as neither concordant
nor discordant; views are reconciled pair by pair as ``LLMJudge`` does (views that disagree
make a tie).
"""

from __future__ import annotations

from itertools import combinations


def pair_signs(scores: list[float]) -> list[int]:
    """+1 / -1 / 0 for every pair i < j: i scored above, below, or equal to j."""
    return [_sign(scores[i] - scores[j]) for i, j in combinations(range(len(scores)), 2)]


def tau_of_signs(a: list[int], b: list[int]) -> float | None:
    """(concordant - discordant) / pairs both decide; None when no pair is decided by both."""
    decided = [x * y for x, y in zip(a, b, strict=True) if x and y]
    return sum(decided) / len(decided) if decided else None


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    return tau_of_signs(pair_signs(a), pair_signs(b))


def reconciled_signs(views: list[list[float]]) -> list[int]:
    """One verdict per pair: the views' common verdict, or a tie where they disagree."""
    per_view = [pair_signs(s) for s in views]
    return [v[0] if len(set(v)) == 1 else 0 for v in zip(*per_view, strict=True)]


def listwise_agreement(gold: list[list[float]], view_scores: list[list[list[float]]]) -> dict:
    """gold[g] and view_scores[g][v] (scores in canonical candidate order) -> mean tau with
    the gold per group and view, mean tau of the reconciled verdicts per group (None when no
    group has a pair both order), and, pooled
    over pairs, the judge's tie share, the share of pairs whose verdict differs between
    views, and the gold's own tie share."""
    taus, reconciled = [], []
    pairs = ties = disagree = gold_ties = 0
    for g, views in zip(gold, view_scores, strict=True):
        gold_signs = pair_signs(g)
        per_view = [pair_signs(s) for s in views]
        taus += [t for s in per_view if (t := tau_of_signs(s, gold_signs)) is not None]
        if (t := tau_of_signs(reconciled_signs(views), gold_signs)) is not None:
            reconciled.append(t)
        for verdicts, gs in zip(zip(*per_view, strict=True), gold_signs, strict=True):
            pairs += 1
            ties += verdicts.count(0) / len(verdicts)
            disagree += len(set(verdicts)) > 1
            gold_ties += gs == 0
    share = lambda n: round(n / max(pairs, 1), 4)  # noqa: E731
    return {"heldout_tau": _mean(taus), "heldout_tau_reconciled": _mean(reconciled),
            "tie_share": share(ties), "view_disagreement": share(disagree),
            "gold_tie_share": share(gold_ties)}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None
