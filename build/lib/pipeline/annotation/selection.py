"""Which groups go to people: annotator time is the scarcest input.

- ``random``: a seeded random sample, the unbiased choice for audits (the default);
- ``disagreement``: lowest mean Kendall tau between machine sources (``agreement`` table,
  pairs of sources that are not ``human:*``): the judges contradict each other;
- ``uncertainty``: smallest gap between neighbouring Bradley-Terry strengths in the
  consensus (``rankings.score``): the order there is closest to a coin flip;
- ``cycles``: groups with preference cycles (``cycles`` table), most 3-cycles first.

The three targeted ones need ``grpo rank`` to have run; groups they cannot score (no two
machine sources, fewer than two ranked candidates, no cycle) are not eligible. Equal scores
are ordered by the seeded random draw, so a selection is reproducible from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.store import round_dir

SELECTIONS = ("random", "disagreement", "uncertainty", "cycles")


@dataclass(frozen=True)
class Pick:
    group_id: str
    score: float | None  # what it was chosen on; None for random


def select(workdir: Path, round_: int, method: str, eligible: list[str], n: int | None,
           seed: int) -> list[Pick]:
    if method not in SELECTIONS:
        raise ValueError(f"--select {method!r}: choose one of {', '.join(SELECTIONS)}")
    rng = random.Random(seed)
    draw = {g: rng.random() for g in sorted(eligible)}  # random order, and ties broken by it
    if method == "random":
        picks = [Pick(g, None) for g in sorted(draw, key=draw.get)]
    else:
        scores = _SCORES[method](workdir, round_)
        scores = {g: s for g, s in scores.items() if g in draw}
        sign = -1.0 if method == "cycles" else 1.0  # cycles: most first; others: lowest first
        picks = [Pick(g, scores[g]) for g in sorted(scores, key=lambda g: (sign * scores[g],
                                                                           draw[g]))]
        if not picks:
            raise ValueError(f"--select {method}: no eligible group of round {round_} has "
                             f"{_NEEDS[method]}; try --select random")
    return picks if n is None else picks[:n]


def _table(workdir: Path, round_: int, name: str, method: str) -> pl.DataFrame:
    files = sorted((round_dir(workdir, round_) / name).glob("*.parquet"))
    if not files:
        raise ValueError(f"--select {method}: round {round_} has no {name} table yet; run "
                         f"`grpo rank --round {round_}` first")
    return pl.read_parquet(files)


def _disagreement(workdir: Path, round_: int) -> dict[str, float]:
    a = _table(workdir, round_, "agreement", "disagreement")
    machine = a.filter(~pl.col("source_a").str.starts_with("human:")
                       & ~pl.col("source_b").str.starts_with("human:")
                       & pl.col("tau").is_not_null() & pl.col("tau").is_not_nan())
    per_group = machine.group_by("group_id").agg(pl.col("tau").mean())
    return dict(per_group.iter_rows())


def _uncertainty(workdir: Path, round_: int) -> dict[str, float]:
    r = _table(workdir, round_, "rankings", "uncertainty")
    ranked = r.filter((pl.col("rank") >= 0) & pl.col("score").is_not_null()
                      & pl.col("score").is_not_nan())
    gaps = (ranked.sort(["group_id", "score"], descending=[False, True])
            .with_columns((pl.col("score").shift(1).over("group_id") - pl.col("score"))
                          .alias("gap"))
            .drop_nulls("gap")
            .group_by("group_id").agg(pl.col("gap").min()))
    return dict(gaps.iter_rows())


def _cycles(workdir: Path, round_: int) -> dict[str, float]:
    c = _table(workdir, round_, "cycles", "cycles")
    per_group = c.group_by("group_id").agg(pl.col("n_3cycles").sum().cast(pl.Float64))
    return dict(per_group.iter_rows())


_SCORES = {"disagreement": _disagreement, "uncertainty": _uncertainty, "cycles": _cycles}
_NEEDS = {"disagreement": "two machine sources with an opinion",
          "uncertainty": "two ranked candidates", "cycles": "a preference cycle"}
