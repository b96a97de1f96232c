"""Test data for the annotation tests: rounds with any number, CSV files, store readers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import polars as pl

from pipeline.atomic import write_parquet_atomic
from pipeline.schema import CANDIDATES, PROMPTS
from pipeline.store import prompts_path, round_dir, shard_path, table_files
from tests.judge_helpers import write_round


def write_round_numbered(workdir: Path, round_: int, modes: list[str], k: int = 3) -> None:
    """``write_round``'s round 0, renumbered as ``round_`` (every column kept as written)."""
    src = Path(workdir) / f"_src-{round_}"
    write_round(src, modes, k=k)
    old, new = "r000:", f"r{round_:03d}:"
    prompts = pl.read_parquet(prompts_path(src, 0)).with_columns(pl.lit(round_).alias("round"))
    write_parquet_atomic(prompts.to_arrow(), prompts_path(workdir, round_), PROMPTS)
    for i, shard in enumerate(sorted((round_dir(src, 0) / "candidates").glob("*.parquet"))):
        cands = pl.read_parquet(shard).with_columns(
            pl.lit(round_).alias("round"),
            pl.col("group_id").str.replace(old, new, literal=True),
            pl.col("candidate_id").str.replace(old, new, literal=True))
        write_parquet_atomic(cands.to_arrow(), shard_path(workdir, "candidates", round_, i, "h"),
                             CANDIDATES)
    shutil.rmtree(src)


def write_csv(path: Path, header: list[str], rows: list[list], bom: bool = False) -> Path:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def human_judgments(workdir: Path) -> pl.DataFrame:
    files = [f for f in table_files(workdir, "judgments") if f.name.startswith("human--")]
    return pl.read_parquet(files) if files else pl.DataFrame()


def ranks_of(workdir: Path, source: str) -> dict[str, float]:
    j = human_judgments(workdir).filter(pl.col("source") == source)
    return dict(zip(j["candidate_id"], j["value"], strict=True))


def quarantine(workdir: Path) -> pl.DataFrame:
    files = table_files(workdir, "quarantine")
    return pl.read_parquet(files) if files else pl.DataFrame()
