"""From judgment rows to dense per-source preferences ``P[g, s, i, j]``.

P = 1 where source s prefers candidate i to j in group g, 0 the other way, 0.5 for a tie,
NaN where s has no opinion. How each kind of source becomes pairwise:
- reconciled pairwise rows (``view = -1``, LLM judges) are used as they are: they already
  turn order-inconsistent verdicts into ties;
- other pairwise rows (humans) are averaged per pair over views;
- ``score`` rows (higher is better) are averaged over views per candidate and compared;
- ``rank`` rows (1 = best, humans) are compared the other way round.
Failed rows are never read. Scores are held as [G, S, k] and expanded to [G, S, k, k] one
chunk of groups at a time, which bounds memory at a million groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch


@dataclass
class PreferenceData:
    group_ids: list[str]  # [G], sorted
    rounds: np.ndarray  # [G]
    n_candidates: np.ndarray  # [G] candidates in each group (from the candidates table)
    candidate_ids: list[list[str]]  # [G][k_g] by candidate index
    sources: list[str]  # [S], sorted
    scores: np.ndarray  # [G, S, k] float32, NaN = no score
    pair_g: np.ndarray  # pairwise entries, sorted by group
    pair_s: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_v: np.ndarray  # value from i's side: 1 = i better

    @property
    def k(self) -> int:
        return self.scores.shape[2]

    def __len__(self) -> int:
        return len(self.group_ids)

    def chunk(self, lo: int, hi: int) -> torch.Tensor:
        """P [hi - lo, S, k, k] float32 for groups lo..hi-1."""
        s = torch.from_numpy(self.scores[lo:hi])
        si, sj = s.unsqueeze(3), s.unsqueeze(2)
        p = (si > sj).float() + 0.5 * (si == sj).float()
        p[torch.isnan(si) | torch.isnan(sj)] = torch.nan
        a, b = np.searchsorted(self.pair_g, [lo, hi])
        if b > a:
            g = torch.from_numpy(self.pair_g[a:b] - lo)
            src = torch.from_numpy(self.pair_s[a:b])
            i = torch.from_numpy(self.pair_i[a:b])
            j = torch.from_numpy(self.pair_j[a:b])
            v = torch.from_numpy(self.pair_v[a:b])
            p[g, src, i, j] = v
            p[g, src, j, i] = 1 - v
        k = self.k
        p[:, :, torch.arange(k), torch.arange(k)] = torch.nan
        return p


def build_preferences(judgments: pl.DataFrame, candidates: pl.DataFrame) -> PreferenceData:
    """``judgments`` and ``candidates`` as in the schema (one round or several)."""
    cands = candidates.select("round", "group_id", "candidate_id", "candidate_idx").sort(
        "group_id", "candidate_idx")
    groups = cands.group_by("group_id", maintain_order=True).agg(
        pl.col("round").first(), pl.col("candidate_id"), pl.len().alias("n"))
    group_ids = groups["group_id"].to_list()
    g_index = pl.DataFrame({"group_id": group_ids,
                            "g": np.arange(len(group_ids), dtype=np.int64)})
    k = int(cands["candidate_idx"].max() or 0) + 1 if len(cands) else 1

    usable = judgments.filter(pl.col("status") == "scored").join(g_index, on="group_id")
    reconciled_sources = set(usable.filter(pl.col("view") == -1)["source"].unique().to_list())
    sources = sorted(set(usable["source"].unique().to_list()))
    s_index = pl.DataFrame({"source": sources, "s": np.arange(len(sources), dtype=np.int64)})
    usable = usable.join(s_index, on="source").with_columns(
        _idx("candidate_id").alias("i"), _idx("opponent_id").alias("j"))
    usable = usable.join(cands.select("candidate_id"), on="candidate_id", how="semi")

    pointwise = usable.filter(pl.col("kind").is_in(["score", "rank"])
                              & ~pl.col("source").is_in(list(reconciled_sources)))
    pointwise = pointwise.group_by("g", "s", "i").agg(
        pl.when(pl.col("kind").first() == "rank").then(-pl.col("value").mean())
        .otherwise(pl.col("value").mean()).alias("v"))
    scores = np.full((len(group_ids), len(sources), k), np.nan, dtype=np.float32)
    scores[pointwise["g"].to_numpy(), pointwise["s"].to_numpy(),
           pointwise["i"].to_numpy()] = pointwise["v"].to_numpy()

    pairwise = usable.filter(
        (pl.col("kind") == "pairwise")
        & (pl.col("source").is_in(list(reconciled_sources)) == (pl.col("view") == -1))
    ).group_by("g", "s", "i", "j").agg(pl.col("value").mean().alias("v")).sort("g")
    return PreferenceData(
        group_ids=group_ids, rounds=groups["round"].to_numpy(),
        n_candidates=groups["n"].to_numpy().astype(np.int64),
        candidate_ids=groups["candidate_id"].to_list(),
        sources=sources, scores=scores,
        # Copies: polars may hand out read-only views, which torch will not index into.
        pair_g=np.array(pairwise["g"].to_numpy()), pair_s=np.array(pairwise["s"].to_numpy()),
        pair_i=np.array(pairwise["i"].to_numpy()), pair_j=np.array(pairwise["j"].to_numpy()),
        pair_v=pairwise["v"].to_numpy().astype(np.float32))


def _idx(column: str) -> pl.Expr:
    """Candidate index from a candidate id ``{group_id}:{candidate_idx}``."""
    return pl.col(column).str.split(":").list.last().cast(pl.Int64, strict=False)
