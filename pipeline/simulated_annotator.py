"""A simulated annotator for the demo, so the human path runs end to end.

It ranks a sample of each round's groups by the gold verifier's score plus Gaussian noise
(two annotators, so agreement between people is measurable), and for a share of those
groups a third "annotator" gives pairwise verdicts with a planted cycle (A>B, B>C, C>A).
The files it writes go through the same ``grpo import-human`` path as real annotations.
Note: this leaks the gold verifier into a small share of the consensus, as a careful human
would; the held-out evaluation stays untouched.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl

from pipeline.store import round_dir
from pipeline.tasks import get_task


def write_annotations(workdir: Path, round_: int, task_name: str, fraction: float,
                      noise: float, cycles: float, seed: int = 0) -> list[Path]:
    rdir = round_dir(workdir, round_)
    cands = pl.read_parquet(rdir / "candidates" / "*.parquet").sort("group_id", "candidate_idx")
    refs = dict(pl.read_parquet(rdir / "prompts.parquet").select("prompt_id", "reference")
                .iter_rows())
    task = get_task(task_name)
    rng = random.Random(f"{seed}:{round_}")
    ranking_rows, pair_rows = [], []
    for (gid,), group in cands.group_by("group_id", maintain_order=True):
        if rng.random() >= fraction:
            continue
        ids, texts = group["candidate_id"].to_list(), group["text"].to_list()
        gold = [task.gold_score(refs[group["prompt_id"][0]], t) for t in texts]
        for annotator in ("sim-1", "sim-2"):
            noisy = [g + rng.gauss(0, noise) for g in gold]
            order = sorted(range(len(ids)), key=lambda i: -noisy[i])
            ranking_rows += [[gid, ids[i], rank + 1, annotator] for rank, i in enumerate(order)]
        if len(ids) >= 3 and rng.random() < cycles:
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
