"""``grpo import-human FILE``: read any supported file, check it, write what it adds.

Formats are told apart by content, not by name: Label Studio's JSON export, Argilla's
flattened export (JSON, JSON lines or Parquet), and rows filled in by a person (CSV or JSON
lines: ranking rows, pairwise rows, or the grouped lines of an export's JSON lines twin).

Every record ends accepted, quarantined with its reason, or skipped (nothing to import:
not annotated, cancelled, a draft), and ``accepted + quarantined + skipped = rows_read`` is
checked on every import. The file's content hash names every output, and a marker written
last records that the import finished, so importing the same bytes twice adds nothing, and a
retry after a crash anywhere before the marker ends in the same state as one clean import.
A corrected file replaces what the same annotator said about the groups it covers (see
``history``). A cycle in one annotator's pairwise verdicts is not a bad row: it is imported,
reported by the ranking stage and never forced into an order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.annotation import argilla, history, label_studio, rows
from pipeline.annotation.checks import (
    check_against_store,
    known_groups,
    mark_duplicates_and_conflicts,
)
from pipeline.annotation.entries import Entry
from pipeline.atomic import write_parquet_atomic, write_text_atomic
from pipeline.schema import QUARANTINE


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not a row problem); the message says why."""


@dataclass
class ImportReport:
    file: str
    sha256: str
    format: str
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # why nothing was imported
    reasons: dict[str, int] = field(default_factory=dict)  # why rows were quarantined
    judgments_written: int = 0
    groups_new: int = 0  # (annotator, group) rankings the store did not have
    groups_replaced: int = 0  # ... that replace an earlier import's (moved to history)
    groups_unchanged: int = 0  # ... identical to what the store has: nothing written
    superseded_rows: int = 0
    already_imported: bool = False
    outputs: list[str] = field(default_factory=list)

    @classmethod
    def from_marker(cls, data: dict) -> ImportReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def marker_path(workdir: Path, sha: str) -> Path:
    return Path(workdir) / "imports" / f"{sha[:16]}.json"


def write_marker(report: ImportReport, path: Path) -> None:
    write_text_atomic(json.dumps(asdict(report), indent=2), path)


def import_human_file(workdir: Path, path: Path) -> ImportReport:
    path = Path(path)
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    marker = marker_path(workdir, sha)
    if marker.exists():
        prior = ImportReport.from_marker(json.loads(marker.read_text()))
        return ImportReport(prior.file, sha, prior.format, prior.rows_read,
                            already_imported=True)
    fmt, entries = read_entries(path, raw)

    known = known_groups(workdir)
    check_against_store(entries, known)
    mark_duplicates_and_conflicts(entries)
    plan = history.plan(entries, known, history.read_live(workdir, exclude_sha16=sha[:16]),
                        history.moved_by(workdir, sha))
    outputs = history.write_live(workdir, sha, plan.rows)
    history.supersede(workdir, sha, plan.moves)
    outputs.append(_write_quarantine(workdir, path, sha, entries))

    report = ImportReport(
        str(path), sha, fmt, len(entries),
        accepted=sum(e.accepted for e in entries),
        quarantined=sum(e.reason is not None for e in entries),
        skipped=_count(e.skip for e in entries if e.skip is not None),
        reasons=_count(_label(e.reason) for e in entries if e.reason is not None),
        judgments_written=sum(len(r) for r in plan.rows.values()),
        groups_new=len({(r["source"], r["group_id"]) for rs in plan.rows.values()
                        for r in rs}) - len(plan.replaced),
        groups_replaced=len(plan.replaced), groups_unchanged=len(plan.unchanged),
        superseded_rows=history.moved_by(workdir, sha).height, outputs=outputs)
    assert report.accepted + report.quarantined + sum(report.skipped.values()) \
        == report.rows_read, report
    write_marker(report, marker)  # last: the import is done
    return report


def read_entries(path: Path, raw: bytes) -> tuple[str, list[Entry]]:
    """(format name, one entry per record) for any supported file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            records = list(enumerate(pq.read_table(pa.BufferReader(raw)).to_pylist(), 1))
        except pa.ArrowInvalid as err:
            raise ImportFileError(f"{path}: not a Parquet file ({err})") from err
    else:
        try:
            text = raw.decode("utf-8-sig")  # a BOM from a spreadsheet export is not data
        except UnicodeDecodeError as err:
            raise ImportFileError(f"{path}: not UTF-8 text ({err}); export the sheet as "
                                  "UTF-8 CSV") from err
        obj = _json_document(text) if suffix == ".json" else None
        if label_studio.is_tasks(obj):
            if not label_studio.has_annotations(obj):
                raise ImportFileError(f"{path}: Label Studio tasks without annotations; import "
                                      "the project's JSON export (Export > JSON), not the "
                                      "tasks file written by export-annotation")
            return "label-studio", label_studio.entries(obj)
        if isinstance(obj, list):  # a JSON array of records (Argilla's to_list, or rows)
            records = [(n, r if isinstance(r, dict) else {"__unparsable__": json.dumps(r)})
                       for n, r in enumerate(obj, 1)]
        elif suffix in (".json", ".jsonl"):
            records = rows.read_json_lines(text)
        else:
            records = rows.read_csv(text)
    columns = set().union(*(r.keys() for _, r in records)) if records else set()
    if argilla.is_flattened(columns):
        return "argilla", argilla.entries(records)
    layout = rows.layout(columns)
    if layout is None:
        raise ImportFileError(
            f"{path}: columns {sorted(columns - {'__unparsable__'})} are not a supported "
            f"layout: ranking rows {list(rows.RANK_COLUMNS)}, pairwise rows "
            f"{list(rows.PAIR_COLUMNS)}, grouped lines (group_id, annotator, candidates), "
            "a Label Studio JSON export or an Argilla flattened export")
    return layout, [rows.ENTRY[layout](n, r) for n, r in records]


def _json_document(text: str):
    """The parsed document, or None when the file is JSON lines (or not JSON at all)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _label(reason: str) -> str:
    return reason.split(" (")[0].split(" of row")[0]


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _write_quarantine(workdir: Path, path: Path, sha: str, entries: list[Entry]) -> str:
    q_rows = [{"source_file": str(path), "file_sha256": sha, "row_number": e.row,
               "reason": e.reason, "raw": json.dumps(e.raw, ensure_ascii=False, default=str)}
              for e in entries if e.reason is not None]
    target = Path(workdir) / "quarantine" / f"{sha[:16]}.parquet"
    write_parquet_atomic(pa.Table.from_pylist(q_rows, QUARANTINE.arrow_schema), target,
                         QUARANTINE)
    return str(target)
