"""From one source's scores to a ranking per group (the single-source case).

Dense ranking, best first: equal scores share a rank (a tie is a set, not an order), and a
candidate without a usable score gets rank -1 (excluded), never a made-up position. A group
with fewer than two distinct usable ranks carries no preference: status ``unranked``,
weight 0. Merging several sources into a consensus builds on this (Bradley-Terry).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.atomic import write_parquet_atomic
from pipeline.schema import GROUPS, JUDGMENTS, RANKINGS
from pipeline.store import round_dir


def rank_scores(judgments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rankings, groups) from score judgments of one source (columns as in JUDGMENTS)."""
    usable = (pl.col("status") == "scored") & pl.col("value").is_not_null()
    ranked = judgments.with_columns(
        pl.when(usable).then(pl.col("value")).otherwise(None).alias("score")
    ).with_columns(
        (pl.col("score").rank(method="dense", descending=True).over("group_id") - 1)
        .fill_null(-1).cast(pl.Int32).alias("rank")
    )
    rankings = ranked.select("round", "group_id", "candidate_id", "rank",
                             pl.col("score").cast(pl.Float64))
    groups = ranked.group_by("round", "group_id").agg(
        (pl.col("rank").filter(pl.col("rank") >= 0).n_unique()).alias("levels")
    ).select(
        "round", "group_id",
        pl.when(pl.col("levels") >= 2).then(pl.lit("ok")).otherwise(pl.lit("unranked"))
        .alias("status"),
        pl.lit(1, pl.Int32).alias("n_sources"),
        pl.lit(0, pl.Int32).alias("n_cycles"),
        pl.lit(None, pl.Float64).alias("agreement"),
        pl.when(pl.col("levels") >= 2).then(1.0).otherwise(0.0).alias("weight"),
    )
    return rankings.sort("candidate_id"), groups.sort("group_id")


def rank_round_by_source(workdir: Path, round_: int, source: str) -> tuple[Path, Path]:
    rdir = round_dir(workdir, round_)
    judgments = pl.read_parquet(rdir / "judgments" / "*.parquet").filter(
        pl.col("source") == source)
    if judgments.is_empty():
        raise ValueError(f"round {round_} has no judgments from source {source!r}")
    rankings, groups = rank_scores(judgments)
    name = f"{source.replace(':', '-')}.parquet"
    r = write_parquet_atomic(rankings.to_arrow(), rdir / "rankings" / name, RANKINGS)
    g = write_parquet_atomic(groups.to_arrow(), rdir / "groups" / name, GROUPS)
    return r, g


__all__ = ["rank_scores", "rank_round_by_source", "JUDGMENTS"]
