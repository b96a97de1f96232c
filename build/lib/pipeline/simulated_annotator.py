"""A simulated annotator for the demo, so the human path runs end to end.

It ranks a sample of each round's groups by the gold source's scores (``loop.gold``, read
from the round's judgments) plus Gaussian noise (two annotators, so agreement between people
is measurable), and for a share of those groups a third "annotator" gives pairwise verdicts
with a planted cycle (A>B, B>C, C>A). The files it writes go through the same
``grpo import-human`` path as real annotations. Note: this leaks the gold source into a
small share of the consensus, as a careful human would; the held-out evaluation stays
untouched.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl

from pipeline.config import Config, ConfigError
from pipeline.judging import stage
from pipeline.judging.sources import configured_sources
from pipeline.store import round_dir


def gold_scores(workdir: Path, round_: int, cfg: Config) -> dict[str, float]:
    """Mean gold-source score per candidate of the round (from its current judgments)."""
    spec = next((s for s in configured_sources(cfg, workdir) if s.source == cfg.loop.gold),
                None)
    if spec is None:
        raise ConfigError("loop.simulated_annotator: the simulated annotators rank by the gold "
                          "source; set loop.gold to a judged source")
    files = [stage.judgment_path(workdir, round_, spec.source, spec.fingerprint, s)
             for s in stage.candidate_shards(workdir, round_)]
    j = pl.read_parquet([f for f in files if f.exists()]).filter(
        (pl.col("status") == "scored") & (pl.col("kind") == "score") & (pl.col("view") >= 0))
    return dict(j.group_by("candidate_id").agg(pl.col("value").mean()).iter_rows())


def write_annotations(workdir: Path, round_: int, cfg: Config, seed: int = 0) -> list[Path]:
    lp = cfg.loop
    rdir = round_dir(workdir, round_)
    cands = pl.read_parquet(rdir / "candidates" / "*.parquet").sort("group_id", "candidate_idx")
    gold = gold_scores(workdir, round_, cfg)
    rng = random.Random(f"{seed}:{round_}")
    ranking_rows, pair_rows = [], []
    for (gid,), group in cands.group_by("group_id", maintain_order=True):
        if rng.random() >= lp.annotator_fraction:
            continue
        ids = group["candidate_id"].to_list()
        scores = [gold.get(c, 0.0) for c in ids]
        for annotator in ("sim-1", "sim-2"):
            noisy = [g + rng.gauss(0, lp.annotator_noise) for g in scores]
            order = sorted(range(len(ids)), key=lambda i: -noisy[i])
            ranking_rows += [[gid, ids[i], rank + 1, annotator] for rank, i in enumerate(order)]
        if len(ids) >= 3 and rng.random() < lp.annotator_cycles:
            a, b, c = rng.sample(ids, 3)
            pair_rows += [[gid, a, b, "sim-cyclic", ""], [gid, b, c, "sim-cyclic", ""],
                          [gid, c, a, "sim-cyclic", ""]]
    out_dir = Path(workdir) / "annotation"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, header, rows in (("ranks", ["group_id", "candidate_id", "rank", "annotator"],
                                ranking_rows),
                               ("pairs", ["group_id", "winner_id", "loser_id", "annotator",
                                          "tie"], pair_rows)):
        if not rows:
            continue
        path = out_dir / f"simulated-r{round_:03d}-{name}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        paths.append(path)
    return paths
