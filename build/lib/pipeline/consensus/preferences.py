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
    group_ids: np.ndarray  # [G] object, sorted
    rounds: np.ndarray  # [G]
    n_candidates: np.ndarray  # [G] candidates in each group (from the candidates table)
    offsets: np.ndarray  # [G + 1] start of each group's candidates in candidate_ids
    candidate_ids: np.ndarray  # flat, object: group by group, by candidate index
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

    def group_candidates(self, g: int) -> list[str]:
        return self.candidate_ids[self.offsets[g]:self.offsets[g + 1]].tolist()

    def chunk(self, lo: int, hi: int) -> torch.Tensor:
        """P [hi - lo, S, k, k] float32 for groups lo..hi-1."""
        s = torch.from_numpy(self.scores[lo:hi])
        si, sj = s.unsqueeze(3), s.unsqueeze(2)
        p = (si > sj).float() + 0.5 * (si == sj).float()
        p[torch.isnan(si) | torch.isnan(sj)] = torch.nan
        a, b = np.searchsorted(self.pair_g, [lo, hi])
        if b > a:
            g = torch.from_numpy(self.pair_g[a:b].astype(np.int64) - lo)
            src = torch.from_numpy(self.pair_s[a:b].astype(np.int64))
            i = torch.from_numpy(self.pair_i[a:b].astype(np.int64))
            j = torch.from_numpy(self.pair_j[a:b].astype(np.int64))
            v = torch.from_numpy(self.pair_v[a:b])
            p[g, src, i, j] = v
            p[g, src, j, i] = 1 - v
        k = self.k
        p[:, :, torch.arange(k), torch.arange(k)] = torch.nan
        return p


JUDGMENT_COLUMNS = ["group_id", "candidate_id", "opponent_id", "source", "kind", "view",
                    "value", "status"]


def build_preferences(judgments: pl.LazyFrame | pl.DataFrame,
                      candidates: pl.DataFrame) -> PreferenceData:
    """``judgments`` (lazy is best: only the needed columns are read) and ``candidates`` as in
    the schema. Ids become integer codes through an Enum cast rather than string joins, which
    keeps tens of millions of rows within a few GB."""
    cands = candidates.select("round", "group_id", "candidate_id", "candidate_idx").sort(
        "group_id", "candidate_idx")
    groups = cands.group_by("group_id", maintain_order=True).agg(
        pl.col("round").first(), pl.len().alias("n"))
    group_ids = groups["group_id"].to_numpy().astype(object)
    n_cand = groups["n"].to_numpy().astype(np.int64)
    k = int(cands["candidate_idx"].max() or 0) + 1 if len(cands) else 1
    group_enum = pl.Enum(groups["group_id"].to_list())

    lazy = judgments.lazy().select(JUDGMENT_COLUMNS).filter(pl.col("status") == "scored")
    lazy = lazy.with_columns(
        pl.col("group_id").cast(group_enum, strict=False).to_physical().cast(pl.Int64)
        .alias("g"), _idx("candidate_id").alias("i"), _idx("opponent_id").alias("j"),
    ).filter(pl.col("g").is_not_null())
    kinds = lazy.group_by("source").agg((pl.col("view") == -1).any().alias("reconciled")) \
        .sort("source").collect(engine="streaming")
    sources = kinds["source"].to_list()
    reconciled = kinds.filter(pl.col("reconciled"))["source"].to_list()
    lazy = lazy.with_columns(
        pl.col("source").cast(pl.Enum(sources)).to_physical().cast(pl.Int64).alias("s"))
    # Rows naming a candidate index the group does not have are ignored.
    n_lookup = pl.DataFrame({"g": np.arange(len(group_ids)), "n": n_cand}).lazy()
    lazy = lazy.join(n_lookup, on="g").filter(
        (pl.col("i") < pl.col("n")) & (pl.col("j").is_null() | (pl.col("j") < pl.col("n"))))

    pointwise = lazy.filter(pl.col("kind").is_in(["score", "rank"])
                            & ~pl.col("source").is_in(reconciled)).group_by("g", "s", "i").agg(
        pl.when(pl.col("kind").first() == "rank").then(-pl.col("value").mean())
        .otherwise(pl.col("value").mean()).alias("v")).collect(engine="streaming")
    scores = np.full((len(group_ids), len(sources), k), np.nan, dtype=np.float32)
    scores[pointwise["g"].to_numpy(), pointwise["s"].to_numpy(),
           pointwise["i"].to_numpy()] = pointwise["v"].to_numpy()
    del pointwise

    pairwise = lazy.filter(
        (pl.col("kind") == "pairwise")
        & (pl.col("source").is_in(reconciled) == (pl.col("view") == -1))
    ).group_by("g", "s", "i", "j").agg(pl.col("value").mean().alias("v")).select(
        pl.col("g").cast(pl.Int32), pl.col("s").cast(pl.Int16), pl.col("i").cast(pl.Int16),
        pl.col("j").cast(pl.Int16), pl.col("v").cast(pl.Float32),
    ).sort("g").collect(engine="streaming")
    return PreferenceData(
        group_ids=group_ids, rounds=groups["round"].to_numpy(), n_candidates=n_cand,
        offsets=np.concatenate([[0], np.cumsum(n_cand)]),
        candidate_ids=cands["candidate_id"].to_numpy().astype(object),
        sources=sources, scores=scores,
        # Copies: polars may hand out read-only views, which torch will not index into.
        # Narrow dtypes keep 28M pairs in ~300 MB; int64 where torch indexes with them.
        pair_g=np.array(pairwise["g"].to_numpy()), pair_s=np.array(pairwise["s"].to_numpy()),
        pair_i=np.array(pairwise["i"].to_numpy()), pair_j=np.array(pairwise["j"].to_numpy()),
        pair_v=np.array(pairwise["v"].to_numpy()))


def _idx(column: str) -> pl.Expr:
    """Candidate index from a candidate id ``{group_id}:{candidate_idx}``."""
    return pl.col(column).str.split(":").list.last().cast(pl.Int64, strict=False)
