"""Human judgments in the store, and the rule for a corrected annotation.

The rule: the newest import speaks for an annotator on a group. When an imported file holds
an accepted ranking (or pairwise verdicts) from annotator A on group G, that becomes A's
whole say on G; A's earlier rows for G are moved out of ``judgments`` into
``rounds/rNNN/judgments/superseded/human/`` (the ``superseded_human`` table, with the file they
came from and the file that replaced them), never deleted. A file that says about (A, G)
exactly what the store already says changes nothing. Groups a file does not cover keep A's
earlier rows. Tool suggestions imported as ``suggestion:AGENT`` follow the same rule.

Every step can be retried: outputs are named by the file's hash, rows are moved by first
writing the superseded file and then rewriting the old file, and the comparison ignores the
file's own outputs, so a retry after a crash at any point ends in the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.annotation.checks import KnownGroup
from pipeline.annotation.entries import Entry
from pipeline.atomic import write_parquet_atomic
from pipeline.schema import JUDGMENTS, SUPERSEDED_HUMAN
from pipeline.store import round_dir

PREFIX = "human--"
HISTORY = Path("superseded") / "human"  # under judgments/, beside set-aside machine files
JUDGMENT_COLUMNS = [c.name for c in JUDGMENTS.columns]


def human_file(workdir: Path, round_: int, sha: str) -> Path:
    return round_dir(workdir, round_) / "judgments" / f"{PREFIX}{sha[:16]}.parquet"


def live_files(workdir: Path) -> list[Path]:
    return sorted(Path(workdir).glob(f"rounds/*/judgments/{PREFIX}*.parquet"))


def _sha16(path: Path) -> str:
    return path.stem[len(PREFIX):]


def read_live(workdir: Path, exclude_sha16: str | None = None) -> pl.DataFrame:
    """Every live human row, with the file it lives in (``_file``)."""
    frames = [pl.read_parquet(f).with_columns(pl.lit(str(f)).alias("_file"))
              for f in live_files(workdir) if _sha16(f) != exclude_sha16]
    if not frames:
        return pl.DataFrame(schema={**pl.from_arrow(JUDGMENTS.empty()).schema,
                                    "_file": pl.String})
    return pl.concat(frames, how="vertical_relaxed")


def annotated_groups(workdir: Path) -> set[str]:
    """Groups some person has ranked (machine suggestions do not count)."""
    live = read_live(workdir)
    return set(live.filter(pl.col("source").str.starts_with("human:"))["group_id"])


def _signature(rows) -> frozenset:
    return frozenset((r["candidate_id"], r["kind"], float(r["value"]), r["opponent_id"])
                     for r in rows)


@dataclass
class Plan:
    rows: dict[int, list[dict]] = field(default_factory=dict)  # round -> judgment rows
    unchanged: set[tuple[str, str]] = field(default_factory=set)  # (source, group)
    replaced: set[tuple[str, str]] = field(default_factory=set)
    moves: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # old file -> units


def moved_by(workdir: Path, sha: str) -> pl.DataFrame:
    """Rows this import has already moved into the history (a retry finds them there)."""
    files = sorted(Path(workdir).glob(f"rounds/*/judgments/{HISTORY}/*--by-{sha[:16]}.parquet"))
    return pl.read_parquet(files) if files else pl.DataFrame(
        schema=pl.from_arrow(SUPERSEDED_HUMAN.empty()).schema)


def plan(entries: list[Entry], known: dict[str, KnownGroup], live: pl.DataFrame,
         moved: pl.DataFrame) -> Plan:
    """What to write and what to move; ``live`` without this file's own outputs, ``moved``
    what this file moved before a crash (those units count as replaced, not new)."""
    units: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        if not e.accepted:
            continue
        for v in e.votes:
            units.setdefault((e.source, e.group_id), []).append({
                "round": known[e.group_id].round, "group_id": e.group_id,
                "candidate_id": v.candidate_id, "source": e.source, "kind": v.kind, "view": 0,
                "opponent_id": v.opponent_id, "value": float(v.value), "status": "scored",
                "error": None, "raw": None, "order_shown": None})
    existing: dict[tuple[str, str], list[dict]] = {}
    if units and live.height:
        wanted = pl.DataFrame({"source": [s for s, _ in units], "group_id": [g for _, g in units]})
        for r in live.join(wanted, on=["source", "group_id"], how="semi").iter_rows(named=True):
            existing.setdefault((r["source"], r["group_id"]), []).append(r)
    already = set(zip(moved["source"], moved["group_id"], strict=True))
    out = Plan()
    for unit, rows in units.items():
        before = existing.get(unit)
        if before and _signature(before) == _signature(rows):
            out.unchanged.add(unit)
            continue
        out.rows.setdefault(rows[0]["round"], []).extend(rows)
        if before or unit in already:
            out.replaced.add(unit)
        if before:
            for r in before:
                out.moves.setdefault(r["_file"], set()).add(unit)
    return out


def write_live(workdir: Path, sha: str, rows_by_round: dict[int, list[dict]]) -> list[str]:
    outputs = []
    for round_, rows in sorted(rows_by_round.items()):
        target = human_file(workdir, round_, sha)
        write_parquet_atomic(pa.Table.from_pylist(rows, JUDGMENTS.arrow_schema), target,
                             JUDGMENTS)
        outputs.append(str(target))
    return outputs


def supersede(workdir: Path, sha: str, moves: dict[str, set[tuple[str, str]]]) -> None:
    """Move the replaced units' rows out of their old files."""
    for old, units in sorted(moves.items()):
        old = Path(old)
        table = pl.read_parquet(old)
        unit_df = pl.DataFrame({"source": [s for s, _ in units],
                                "group_id": [g for _, g in units]})
        gone = table.join(unit_df, on=["source", "group_id"], how="semi")
        keep = table.join(unit_df, on=["source", "group_id"], how="anti")
        history = gone.with_columns(pl.lit(_sha16(old)).alias("imported_from"),
                                    pl.lit(sha[:16]).alias("superseded_by"))
        target = old.parent / HISTORY / f"{old.stem}--by-{sha[:16]}.parquet"
        # History first: a crash between the two writes leaves the rows in both places,
        # and the retry (same names) finishes the move; never in neither.
        write_parquet_atomic(history.to_arrow(), target, SUPERSEDED_HUMAN)
        if keep.height:
            write_parquet_atomic(keep.select(JUDGMENT_COLUMNS).to_arrow(), old, JUDGMENTS)
        else:
            old.unlink()
