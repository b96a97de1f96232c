"""Human rankings: export groups for annotators, import their answers back.

Two import formats (CSV, or JSON lines with the same keys), told apart by their columns:
- ranking rows: ``group_id, candidate_id, rank, annotator`` (rank 1 is best; equal ranks
  are ties; an annotator may rank only part of a group);
- pairwise rows: ``group_id, winner_id, loser_id, annotator`` and optionally ``tie``
  (true/1/yes: the two are equally good).

Nothing is dropped silently and nothing is half-imported: every row is either accepted or
quarantined with a reason (accepted + quarantined = rows read), and the file's content hash
names every output, so importing the same file twice adds nothing. A cycle in one
annotator's pairwise verdicts (A>B, B>C, C>A) is not a bad row: it is imported, reported by
the ranking stage and never forced into an order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.atomic import write_parquet_atomic, write_text_atomic
from pipeline.judging.views import views_for
from pipeline.schema import JUDGMENTS, QUARANTINE
from pipeline.store import round_dir, table_files

RANK_COLUMNS = ("group_id", "candidate_id", "rank", "annotator")
PAIR_COLUMNS = ("group_id", "winner_id", "loser_id", "annotator")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"", "0", "false", "no", "n", "f"}


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not a row problem); the message says why."""


@dataclass
class ImportReport:
    file: str
    sha256: str
    format: str
    rows_read: int
    accepted: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    already_imported: bool = False
    outputs: list[str] = field(default_factory=list)


def _marker(workdir: Path, sha: str) -> Path:
    return Path(workdir) / "imports" / f"{sha[:16]}.json"


def _read_rows(path: Path, text: str) -> list[dict]:
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = {"__unparsable__": line}
            rows.append(obj if isinstance(obj, dict) else {"__unparsable__": line, "__n__": n})
        return rows
    return list(csv.DictReader(io.StringIO(text)))


def _known(workdir: Path) -> dict[str, set[str]]:
    files = table_files(workdir, "candidates")
    if not files:
        return {}
    cands = pl.read_parquet(files, columns=["group_id", "candidate_id"])
    return {g: set(ids) for g, ids in cands.group_by("group_id").agg("candidate_id").iter_rows()}


def _existing_human_keys(workdir: Path) -> dict[tuple, str]:
    """(source, candidate_id, opponent_id) of human judgments already in the store."""
    files = [f for f in table_files(workdir, "judgments") if f.name.startswith("human--")]
    if not files:
        return {}
    j = pl.read_parquet(files, columns=["source", "candidate_id", "opponent_id"])
    return {tuple(r): "an earlier import" for r in j.iter_rows()}


def _is_formula(value) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_START)


def import_human_file(workdir: Path, path: Path) -> ImportReport:
    path = Path(path)
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    marker = _marker(workdir, sha)
    if marker.exists():
        prior = json.loads(marker.read_text())
        return ImportReport(**{**prior, "accepted": 0, "quarantined": 0, "reasons": {},
                               "already_imported": True, "outputs": []})
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a spreadsheet export is not data
    except UnicodeDecodeError as err:
        raise ImportFileError(f"{path}: not UTF-8 text ({err}); export the sheet as UTF-8 "
                              "CSV") from err
    rows = _read_rows(path, text)
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    if set(RANK_COLUMNS) <= columns:
        fmt = "ranking"
    elif set(PAIR_COLUMNS) <= columns:
        fmt = "pairwise"
    else:
        raise ImportFileError(f"{path}: columns {sorted(columns)} are neither ranking rows "
                              f"{list(RANK_COLUMNS)} nor pairwise rows {list(PAIR_COLUMNS)}")

    known = _known(workdir)
    existing = _existing_human_keys(workdir)
    accepted: list[tuple[int, dict]] = []  # (row number, judgment row)
    quarantined: list[tuple[int, str, dict]] = []
    seen: dict[tuple, int] = {}
    for n, row in enumerate(rows, 1):
        check = _check_ranking if fmt == "ranking" else _check_pairwise
        reason, judgment = check(row, known)
        if reason is None:
            key = (judgment["source"], judgment["candidate_id"], judgment["opponent_id"])
            dup_key = key + (judgment["value"],)
            if dup_key in seen:
                reason = f"duplicate of row {seen[dup_key]}"
            elif key in existing:
                reason = f"already imported ({existing[key]})"
            else:
                seen[dup_key] = n
        if reason:
            quarantined.append((n, reason, row))
        else:
            accepted.append((n, judgment))
    accepted, conflicts = _split_conflicts(accepted)
    quarantined += conflicts

    outputs = _write(workdir, path, sha, accepted, quarantined)
    reasons: dict[str, int] = {}
    for _, reason, _ in quarantined:
        label = reason.split(" (")[0].split(" of row")[0]
        reasons[label] = reasons.get(label, 0) + 1
    report = ImportReport(str(path), sha, fmt, len(rows), len(accepted), len(quarantined),
                          reasons, False, outputs)
    assert report.accepted + report.quarantined == report.rows_read
    write_text_atomic(json.dumps(asdict(report), indent=2), marker)  # last: the import is done
    return report


def _field(row: dict, name: str) -> tuple[str | None, str | None]:
    """(value, reason) for a required text field."""
    if "__unparsable__" in row:
        return None, "unparsable line"
    value = row.get(name)
    if value is None or str(value).strip() == "":
        return None, f"missing {name}"
    if _is_formula(str(value)):
        return None, f"spreadsheet formula in {name}"
    return str(value).strip(), None


def _source(annotator: str) -> str:
    return f"human:{annotator}"


def _check_ids(group: str, ids: list[str], known: dict[str, set[str]]) -> str | None:
    if group not in known:
        return "unknown group_id"
    for cid in ids:
        if cid not in known[group]:
            return "unknown candidate_id for this group"
    return None


def _base(group: str, cid: str, annotator: str) -> dict:
    return {"round": int(group[1:4]) if group[:1] == "r" and group[1:4].isdigit() else 0,
            "group_id": group, "candidate_id": cid, "source": _source(annotator),
            "view": 0, "status": "scored", "error": None, "raw": None, "order_shown": None}


def _check_ranking(row: dict, known) -> tuple[str | None, dict | None]:
    values = {}
    for name in ("group_id", "candidate_id", "annotator"):
        values[name], reason = _field(row, name)
        if reason:
            return reason, None
    rank_raw = str(row.get("rank") if row.get("rank") is not None else "").strip()
    if rank_raw == "":
        return "missing rank", None
    try:
        rank = int(rank_raw)
    except ValueError:
        return ("spreadsheet formula in rank" if _is_formula(rank_raw)
                else f"rank {rank_raw!r} is not an integer"), None
    reason = _check_ids(values["group_id"], [values["candidate_id"]], known)
    if reason:
        return reason, None
    k = len(known[values["group_id"]])
    if not 1 <= rank <= k:
        return f"rank {rank} out of range 1..{k}", None
    return None, {**_base(values["group_id"], values["candidate_id"], values["annotator"]),
                  "kind": "rank", "opponent_id": None, "value": float(rank)}


def _check_pairwise(row: dict, known) -> tuple[str | None, dict | None]:
    values = {}
    for name in PAIR_COLUMNS:
        values[name], reason = _field(row, name)
        if reason:
            return reason, None
    tie_raw = str(row.get("tie") if row.get("tie") is not None else "").strip().lower()
    if tie_raw not in TRUE | FALSE:
        return f"tie {tie_raw!r} is not true/false", None
    winner, loser = values["winner_id"], values["loser_id"]
    if winner == loser:
        return "winner and loser are the same candidate", None
    reason = _check_ids(values["group_id"], [winner, loser], known)
    if reason:
        return reason, None
    # Canonical orientation (smaller id first), so A>B and "B<A" are the same key.
    first, second = sorted((winner, loser))
    value = 0.5 if tie_raw in TRUE else (1.0 if first == winner else 0.0)
    return None, {**_base(values["group_id"], first, values["annotator"]), "kind": "pairwise",
                  "opponent_id": second, "value": value}


def _split_conflicts(accepted: list[tuple[int, dict]]):
    """One annotator saying two different things about the same candidate (ranking) or pair
    (pairwise): every row involved is quarantined, none is picked."""
    by_key: dict[tuple, list[tuple[int, dict]]] = {}
    for n, j in accepted:
        by_key.setdefault((j["source"], j["candidate_id"], j["opponent_id"]), []).append((n, j))
    keep, bad = [], []
    for items in by_key.values():
        if len({j["value"] for _, j in items}) > 1:
            rows = ", ".join(str(n) for n, _ in items)
            bad += [(n, f"conflicting rows from one annotator (rows {rows})", j)
                    for n, j in items]
        else:
            keep += items
    keep.sort(key=lambda x: x[0])
    return keep, bad


def _write(workdir: Path, path: Path, sha: str, accepted, quarantined) -> list[str]:
    outputs = []
    by_round: dict[int, list[dict]] = {}
    for _, j in accepted:
        by_round.setdefault(j["round"], []).append(j)
    for round_, rows in sorted(by_round.items()):
        target = round_dir(workdir, round_) / "judgments" / f"human--{sha[:16]}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(rows, JUDGMENTS.arrow_schema), target,
                             JUDGMENTS)
        outputs.append(str(target))
    q_rows = [{"source_file": str(path), "file_sha256": sha, "row_number": n, "reason": reason,
               "raw": json.dumps(row, ensure_ascii=False, default=str)}
              for n, reason, row in quarantined]
    target = Path(workdir) / "quarantine" / f"{sha[:16]}.parquet"
    write_parquet_atomic(pa.Table.from_pylist(q_rows, QUARANTINE.arrow_schema), target,
                         QUARANTINE)
    outputs.append(str(target))
    return outputs


def export_annotation(workdir: Path, round_: int, out_dir: Path, max_groups: int | None = None,
                      seed: int = 0) -> tuple[Path, Path]:
    """CSV (one row per candidate, with empty rank/annotator cells to fill in) and JSONL
    (one object per group), candidates in a shuffled order per group."""
    rdir = round_dir(workdir, round_)
    cands = pl.read_parquet(rdir / "candidates" / "*.parquet").sort("group_id", "candidate_idx")
    prompts = pl.read_parquet(rdir / "prompts.parquet").select("prompt_id", "prompt")
    cands = cands.join(prompts, on="prompt_id", how="left")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"annotation-r{round_:03d}.csv"
    jsonl_path = out_dir / f"annotation-r{round_:03d}.jsonl"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["group_id", "prompt", "position", "candidate_id", "text", "rank",
                     "annotator"])
    lines = []
    for n, (gid, group) in enumerate(cands.group_by("group_id", maintain_order=True)):
        if max_groups is not None and n >= max_groups:
            break
        gid = gid[0]
        ids, texts = group["candidate_id"].to_list(), group["text"].to_list()
        prompt = group["prompt"][0]
        perm = views_for(gid, len(ids), 1, seed)[0]
        for pos, c in enumerate(perm):
            writer.writerow([gid, _cell(prompt), pos + 1, ids[c], _cell(texts[c]), "", ""])
        lines.append(json.dumps({"group_id": gid, "prompt": prompt, "candidates": [
            {"candidate_id": ids[c], "text": texts[c]} for c in perm]}, ensure_ascii=False))
    write_text_atomic(buf.getvalue(), csv_path)
    write_text_atomic("".join(line + "\n" for line in lines), jsonl_path)
    return csv_path, jsonl_path


def _cell(text: str) -> str:
    """A leading quote keeps a spreadsheet from running text as a formula (OWASP advice)."""
    return "'" + text if _is_formula(text) else text
