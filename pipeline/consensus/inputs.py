"""What the ranking of a round reads, cut into batches of whole groups.

Memory must not grow with the number of groups, so a round is ranked one batch at a time: a
batch is a run of candidates shards (about ``batch_groups`` groups, whole shards) with the
judgment files made for those shards, read in one scan. A judgment file belongs to a shard
when its name ends with ``--<shard file name>`` (``SOURCE--FP--shard-00000-HASH.parquet``,
one per source and shard); any other judgment file (human imports, hand-written files) is
read for every batch, filtered to the batch's groups. Batches are cut in group-id order and
never split a group: shards whose group-id ranges overlap go into one batch, so a group
written across two shards is still ranked once, whole, and the outputs come out sorted by
group id.

Two things must hold for the whole round before the first batch is ranked, and are read in
one cheap pass over three columns: the sources (the tensors' S axis and the weights) and
which of them are *reconciled* (LLM judges with ``view = -1`` verdicts, whose per-view rows
are then ignored). ``k`` is the largest group size, from the candidates' ``candidate_idx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.consensus.preferences import CANDIDATE_COLUMNS, JUDGMENT_COLUMNS
from pipeline.store import round_dir


@dataclass(frozen=True)
class Batch:
    candidates: tuple[Path, ...]  # candidates shards ranked together
    judgments: tuple[Path, ...]  # judgment files named after those shards
    first_group: str  # group-id range of the shards, to filter the shared files
    last_group: str


@dataclass(frozen=True)
class RoundInputs:
    batches: tuple[Batch, ...]
    shared: tuple[Path, ...]  # judgment files not named after a shard: read for every batch
    sources: list[str]  # sorted: every source with a scored row
    reconciled: list[str]  # sources with reconciled (view = -1) verdicts
    k: int  # candidates in the largest group

    def candidates(self, batch: Batch) -> pa.Table:
        return _read(batch.candidates, CANDIDATE_COLUMNS, "parquet")

    def judgments(self, batch: Batch) -> list[pa.Table]:
        """The batch's judgment tables: its own files whole, the shared files filtered to
        its group-id range (Parquet statistics skip the row groups of other batches)."""
        in_range = (pc.field("group_id") >= batch.first_group) & (
            pc.field("group_id") <= batch.last_group)
        return [table for table in (_read(batch.judgments, JUDGMENT_COLUMNS, _JUDGMENTS),
                                    _read(self.shared, JUDGMENT_COLUMNS, _JUDGMENTS, in_range))
                if table is not None]


def _read(files: tuple[Path, ...], columns: list[str], file_format: ds.FileFormat | str,
          row_filter: pc.Expression | None = None) -> pa.Table | None:
    """Many files in one scan (a file costs about a millisecond to open on its own, and a
    round at the default shard size has tens of thousands), each column in one chunk."""
    if not files:
        return None
    table = ds.dataset([str(f) for f in files], format=file_format).to_table(
        columns=columns, filter=row_filter)
    return table.combine_chunks()


# Judgments' repeated strings come as dictionaries: looked up once per distinct value.
_JUDGMENTS = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(
    dictionary_columns=["group_id", "source", "kind", "status"]))


def plan_round(workdir: Path, round_: int, judgment_files: list[Path] | None = None,
               batch_groups: int = 50_000) -> RoundInputs:
    """Batches of about ``batch_groups`` groups of k (whole shards). ``judgment_files``
    (default: every file in the round's ``judgments/``) lets the caller decide which
    judgments count."""
    rdir = round_dir(workdir, round_)
    shards = sorted((rdir / "candidates").glob("*.parquet"))
    if not shards:
        raise ValueError(f"round {round_} has no candidates in {rdir}; run `grpo generate` "
                         "first")
    jfiles = sorted(Path(f) for f in (judgment_files if judgment_files is not None
                                      else (rdir / "judgments").glob("*.parquet")))
    if not jfiles:
        raise ValueError(f"round {round_} has no judgments; run `grpo judge` first")

    by_shard: dict[str, list[Path]] = {s.name: [] for s in shards}
    shared = []
    for f in jfiles:
        _, sep, shard_name = f.name.rpartition("--")
        (by_shard[shard_name] if sep and shard_name in by_shard else shared).append(f)

    k_max = pl.scan_parquet(shards).select(pl.col("candidate_idx").max()).collect().item()
    k = int(k_max) + 1 if k_max is not None else 1
    batch_rows = batch_groups * k
    ranges = sorted((*_group_range(meta := pq.read_metadata(s), s), meta.num_rows, s)
                    for s in shards)
    batches: list[Batch] = []
    run: list[tuple[str, str, Path]] = []
    rows, run_last = 0, ""
    for lo, hi, n, shard in ranges:
        if run and lo > run_last and rows + n > batch_rows:  # never split overlapping shards
            batches.append(_batch(run, by_shard))
            run, rows = [], 0
        run.append((lo, hi, shard))
        rows += n
        run_last = max(run_last, hi) if len(run) > 1 else hi
    if run:
        batches.append(_batch(run, by_shard))

    kinds = pl.scan_parquet(jfiles).select("source", "view", "status").filter(
        pl.col("status") == "scored").group_by("source").agg(
        (pl.col("view") == -1).any().alias("reconciled")).sort("source").collect(
        engine="streaming")
    return RoundInputs(tuple(batches), tuple(shared), kinds["source"].to_list(),
                       kinds.filter(pl.col("reconciled"))["source"].to_list(), k)


def _batch(run: list[tuple[str, str, Path]], by_shard: dict[str, list[Path]]) -> Batch:
    return Batch(tuple(s for _, _, s in run),
                 tuple(f for _, _, s in run for f in by_shard[s.name]),
                 min(r[0] for r in run), max(r[1] for r in run))


def _group_range(meta: pq.FileMetaData, shard: Path) -> tuple[str, str]:
    """Smallest and largest group id of a shard, from the Parquet statistics when written."""
    col = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == "group_id")
    stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
    if stats and all(s is not None and s.has_min_max for s in stats):
        return min(s.min for s in stats), max(s.max for s in stats)
    ids = pl.read_parquet(shard, columns=["group_id"])["group_id"]
    return (ids.min() or "", ids.max() or "")
