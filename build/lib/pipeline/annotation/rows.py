"""Rows a person fills in: CSV (a spreadsheet) or JSON lines, three layouts.

- ranking rows: ``group_id, candidate_id, rank, annotator`` (rank 1 is best; equal ranks are
  ties; an annotator may rank only part of a group);
- pairwise rows: ``group_id, winner_id, loser_id, annotator[, tie]`` (tie = true/1/yes);
- grouped lines (the JSON lines twin of an export): ``{"group_id", "annotator",
  "candidates": [{"candidate_id", "rank"}, ...]}``, one group per line.

Row numbers are what the person sees: a CSV row as a spreadsheet numbers it (the header is
row 1, the first data row is row 2), a JSON line by its line number (blank lines count, as
in any editor). Empty rows carry nothing and are not rows. A row whose rank is blank was not
annotated (a group the annotator did not reach): counted, not quarantined.
"""

from __future__ import annotations

import csv
import io
import json

from pipeline.annotation.entries import Entry, Vote, blank, human, is_formula

RANK_COLUMNS = ("group_id", "candidate_id", "rank", "annotator")
PAIR_COLUMNS = ("group_id", "winner_id", "loser_id", "annotator")
TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"", "0", "false", "no", "n", "f"}
NOT_ANNOTATED = "not annotated"


def read_csv(text: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    header = [h.strip() for h in header]
    out = []
    for n, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        row = dict(zip(header, cells, strict=False))
        if len(cells) > len(header):
            row["__extra__"] = cells[len(header):]
        out.append((n, row))
    return out


def read_json_lines(text: str) -> list[tuple[int, dict]]:
    out = []
    # Split on "\n" only: str.splitlines also breaks on U+2028 and friends, which JSON
    # allows raw inside strings and editors do not count as new lines.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        out.append((n, obj if isinstance(obj, dict) else {"__unparsable__": line}))
    return out


def layout(columns: set[str]) -> str | None:
    if {"group_id", "candidates"} <= columns:
        return "grouped"
    if set(RANK_COLUMNS) <= columns:
        return "ranking"
    if set(PAIR_COLUMNS) <= columns:
        return "pairwise"
    return None


def _field(row: dict, name: str) -> tuple[str | None, str | None]:
    """(value, reason) for a required text field."""
    value = row.get(name)
    if blank(value):
        return None, f"missing {name}"
    if is_formula(str(value)):
        return None, f"spreadsheet formula in {name}"
    return str(value).strip(), None


def _rank(raw) -> tuple[int | None, str | None]:
    text = str(raw).strip()
    if isinstance(raw, bool):
        return None, f"rank {text!r} is not an integer"
    try:
        return int(text), None
    except ValueError:
        return None, ("spreadsheet formula in rank" if is_formula(text)
                      else f"rank {text!r} is not an integer")


def _fields(entry: Entry, row: dict, names) -> dict | None:
    values = {}
    for name in names:
        values[name], entry.reason = _field(row, name)
        if entry.reason:
            return None
    return values


def ranking_entry(n: int, row: dict) -> Entry:
    e = Entry(n, row)
    if "__unparsable__" in row:
        e.reason = "unparsable line"
        return e
    if blank(row.get("rank")):
        e.skip = NOT_ANNOTATED
        return e
    values = _fields(e, row, ("group_id", "candidate_id", "annotator"))
    if values is None:
        return e
    rank, e.reason = _rank(row["rank"])
    if e.reason:
        return e
    e.source, e.group_id = human(values["annotator"]), values["group_id"]
    e.votes = [Vote(values["candidate_id"], "rank", float(rank))]
    return e


def pairwise_entry(n: int, row: dict) -> Entry:
    e = Entry(n, row)
    if "__unparsable__" in row:
        e.reason = "unparsable line"
        return e
    if blank(row.get("winner_id")) and blank(row.get("loser_id")):
        e.skip = NOT_ANNOTATED
        return e
    values = _fields(e, row, PAIR_COLUMNS)
    if values is None:
        return e
    tie_raw = str(row.get("tie") if row.get("tie") is not None else "").strip().lower()
    if tie_raw not in TRUE | FALSE:
        e.reason = f"tie {tie_raw!r} is not true/false"
        return e
    winner, loser = values["winner_id"], values["loser_id"]
    if winner == loser:
        e.reason = "winner and loser are the same candidate"
        return e
    # Canonical orientation (smaller id first), so A>B and "B<A" are the same key.
    first, second = sorted((winner, loser))
    value = 0.5 if tie_raw in TRUE else (1.0 if first == winner else 0.0)
    e.source, e.group_id = human(values["annotator"]), values["group_id"]
    e.votes = [Vote(first, "pairwise", value, second)]
    return e


def grouped_entry(n: int, row: dict) -> Entry:
    """One line of the JSON lines twin: all of one annotator's ranks for one group."""
    e = Entry(n, row, whole_group=True)
    if "__unparsable__" in row:
        e.reason = "unparsable line"
        return e
    cands = row.get("candidates")
    if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
        e.reason = "candidates is not a list of objects"
        return e
    ranked = [c for c in cands if not blank(c.get("rank"))]
    if not ranked:
        e.skip = NOT_ANNOTATED
        return e
    values = _fields(e, row, ("group_id", "annotator"))
    if values is None:
        return e
    votes = []
    for c in ranked:
        cid, e.reason = _field(c, "candidate_id")
        if e.reason:
            return e
        rank, e.reason = _rank(c["rank"])
        if e.reason:
            e.reason += f" ({cid})"
            return e
        votes.append(Vote(cid, "rank", float(rank)))
    if len({v.candidate_id for v in votes}) < len(votes):
        e.reason = "a candidate ranked twice"
        return e
    e.source, e.group_id, e.votes = human(values["annotator"]), values["group_id"], votes
    return e


ENTRY = {"ranking": ranking_entry, "pairwise": pairwise_entry, "grouped": grouped_entry}
