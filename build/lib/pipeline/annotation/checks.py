"""Checks of read entries against the store and against each other.

The group's candidates (and its round) come from the candidates table, never from parsing
ids, so any round number and any prompt id work. Within one file, a record that repeats an
earlier one is a duplicate; two records of one annotator that say different things about
the same candidate, pair or group are a conflict, and every record involved is quarantined
(none is picked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.annotation.entries import Entry
from pipeline.store import table_files


@dataclass(frozen=True)
class KnownGroup:
    round: int
    candidates: frozenset[str]


def known_groups(workdir: Path) -> dict[str, KnownGroup]:
    files = table_files(workdir, "candidates")
    if not files:
        return {}
    cands = pl.read_parquet(files, columns=["round", "group_id", "candidate_id"])
    agg = cands.group_by("group_id").agg(pl.col("round").first(), pl.col("candidate_id"))
    return {g: KnownGroup(int(r), frozenset(ids)) for g, r, ids in agg.iter_rows()}


def check_against_store(entries: list[Entry], known: dict[str, KnownGroup]) -> None:
    for e in entries:
        if not e.accepted:
            continue
        group = known.get(e.group_id)
        if group is None:
            e.reason = "unknown group_id"
            continue
        for v in e.votes:
            for cid in (v.candidate_id, v.opponent_id):
                if cid is not None and cid not in group.candidates:
                    e.reason = "unknown candidate_id for this group"
                    break
            if e.reason:
                break
            k = len(group.candidates)
            if v.kind == "rank" and not 1 <= v.value <= k:
                e.reason = f"rank {int(v.value)} out of range 1..{k}"
                break


def _key(e: Entry) -> tuple:
    if e.whole_group:
        return e.source, e.group_id
    (v,) = e.votes
    return e.source, e.group_id, v.key


def mark_duplicates_and_conflicts(entries: list[Entry]) -> None:
    by_key: dict[tuple, list[Entry]] = {}
    for e in entries:
        if e.accepted:
            by_key.setdefault(_key(e), []).append(e)
    for same in by_key.values():
        distinct: dict[frozenset, Entry] = {}
        for e in same:
            sig = frozenset(e.votes)
            if sig in distinct:
                e.reason = f"duplicate of row {distinct[sig].row}"
            else:
                distinct[sig] = e
        if len(distinct) > 1:
            rows = ", ".join(str(e.row) for e in distinct.values())
            for e in distinct.values():
                e.reason = f"conflicting rows from one annotator (rows {rows})"
