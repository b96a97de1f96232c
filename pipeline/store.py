"""Where every table's Parquet files live under a workdir.

The files are the source of truth and the record of finished work: a shard whose file
exists (and reads back) is done. Names are fixed by round, shard and config hash, so a
retried or restarted stage rewrites the same name instead of adding a second copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.schema import TABLES

SUPERSEDED = "superseded"

# Glob of each table's files, relative to the workdir.
TABLE_GLOBS: dict[str, str] = {
    "prompts": "rounds/*/prompts.parquet",
    "candidates": "rounds/*/candidates/*.parquet",
    "judgments": "rounds/*/judgments/*.parquet",
    "rankings": "rounds/*/rankings/*.parquet",
    "groups": "rounds/*/groups/*.parquet",
    "cycles": "rounds/*/cycles/*.parquet",
    "agreement": "rounds/*/agreement/*.parquet",
    "source_groups": "rounds/*/source_groups/*.parquet",
    "quarantine": "quarantine/*.parquet",
    "evals": "rounds/*/evals.parquet",
    "superseded_human": "rounds/*/judgments/superseded/human/*.parquet",
    "annotation_exports": "rounds/*/annotation_exports/*.parquet",
}
assert set(TABLE_GLOBS) == set(TABLES), "every schema table needs a home on disk"


def round_dir(workdir: Path, round_: int) -> Path:
    return Path(workdir) / "rounds" / f"r{round_:03d}"


def prompts_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "prompts.parquet"


def shard_path(workdir: Path, table: str, round_: int, shard: int, config_hash: str) -> Path:
    return round_dir(workdir, round_) / table / f"shard-{shard:05d}-{config_hash}.parquet"


def supersede(folder: Path, pattern: str, keep: str | None = None) -> list[Path]:
    """Move files matching ``pattern`` (except ``keep``) into ``folder/superseded/``.

    Work that a changed config no longer uses is set aside, not deleted: the catalog's views
    stop reading it (their globs do not descend into ``superseded/``), the audit can still
    see it, and ``unsupersede`` brings it back when the config changes back.
    """
    folder = Path(folder)
    moved = []
    for p in sorted(folder.glob(pattern)):
        if p.name == keep or not p.is_file():
            continue
        target = folder / SUPERSEDED / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, target)
        moved.append(target)
    return moved


def unsupersede(folder: Path, name: str) -> bool:
    """Bring ``folder/superseded/NAME`` back; True if it was there."""
    src = Path(folder) / SUPERSEDED / name
    if not src.is_file():
        return False
    os.replace(src, Path(folder) / name)
    return True


def table_files(workdir: Path, table: str) -> list[Path]:
    return sorted(Path(workdir).glob(TABLE_GLOBS[table]))


def catalog_path(workdir: Path) -> Path:
    return Path(workdir) / "catalog.duckdb"


def group_id(round_: int, prompt_id: str) -> str:
    return f"r{round_:03d}:{prompt_id}"


def candidate_id(group: str, candidate_idx: int) -> str:
    return f"{group}:{candidate_idx}"


def rounds_with_candidates(workdir: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in (Path(workdir) / "rounds").glob("r[0-9]*")
                  if any((p / "candidates").glob("*.parquet")))


def next_round(workdir: Path) -> int:
    """The first round after every round with candidates: where a nightly run writes."""
    done = rounds_with_candidates(workdir)
    return done[-1] + 1 if done else 0


def latest_round(workdir: Path) -> int:
    """The newest round with candidates (what a scheduled judge or rank run works on)."""
    done = rounds_with_candidates(workdir)
    if not done:
        raise FileNotFoundError(f"no round with candidates in {workdir}; generate one first")
    return done[-1]
