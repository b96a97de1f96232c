"""Human rankings: a file with every kind of bad row, both formats, re-import, export."""

from __future__ import annotations

import csv
import json

import polars as pl
import pytest

from flows.cli import main
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.humans import ImportFileError, export_annotation, import_human_file
from pipeline.store import round_dir, table_files
from tests.judge_helpers import write_round

G0, G1 = "r000:p000", "r000:p001"


def _write_csv(path, header, rows, bom=True):
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_ranking_file_with_every_bad_row_kind(tmp_path):
    write_round(tmp_path, ["ok", "ok"], k=3)
    rows = [
        [G0, f"{G0}:0", 1, "alice"],      # 1 ok
        [G0, f"{G0}:1", 2, "alice"],      # 2 ok
        [G0, f"{G0}:2", 2, "alice"],      # 3 ok: a tie with row 2
        [G0, f"{G0}:0", 1, "alice"],      # 4 duplicate of row 1
        ["r000:nope", f"{G0}:0", 1, "bob"],  # 5 unknown group
        [G0, f"{G1}:0", 1, "bob"],        # 6 candidate of another group
        [G0, f"{G0}:1", 4, "bob"],        # 7 rank out of range (k = 3)
        [G0, f"{G0}:1", "=1+1", "bob"],   # 8 formula in rank
        [G0, f"{G0}:1", 1, "=HYPERLINK(\"x\")"],  # 9 formula in annotator
        [G1, f"{G1}:0", 1, "carol"],      # 10 conflicts with 11
        [G1, f"{G1}:0", 3, "carol"],      # 11
        [G1, f"{G1}:1", 1, "dave"],       # 12 ok
        [G1, f"{G1}:2", 2, "dave"],       # 13 ok
        [G1, "", 1, "dave"],              # 14 missing candidate
        [G1, f"{G1}:0", "two", "dave"],   # 15 not an integer
    ]
    path = _write_csv(tmp_path / "ranks.csv", ["group_id", "candidate_id", "rank", "annotator"],
                      rows)
    report = import_human_file(tmp_path, path)
    assert report.format == "ranking"
    assert report.rows_read == 15
    assert report.accepted + report.quarantined == report.rows_read
    assert report.accepted == 5
    quarantine = pl.read_parquet(table_files(tmp_path, "quarantine"))
    reasons = dict(zip(quarantine["row_number"].to_list(), quarantine["reason"].to_list(),
                       strict=True))
    assert reasons[4] == "duplicate of row 1"
    assert reasons[5] == "unknown group_id"
    assert reasons[6] == "unknown candidate_id for this group"
    assert reasons[7] == "rank 4 out of range 1..3"
    assert reasons[8] == "spreadsheet formula in rank"
    assert reasons[9] == "spreadsheet formula in annotator"
    assert reasons[10].startswith("conflicting rows from one annotator (rows 10, 11)")
    assert reasons[11] == reasons[10]
    assert reasons[14] == "missing candidate_id"
    assert reasons[15] == "rank 'two' is not an integer"
    # The BOM did not leak into the first column's name.
    judgments = pl.read_parquet(table_files(tmp_path, "judgments"))
    assert set(judgments["source"]) == {"human:alice", "human:dave"}
    assert judgments.filter(pl.col("source") == "human:alice")["value"].to_list() == [1, 2, 2]
    # Importing the same file again adds nothing.
    again = import_human_file(tmp_path, path)
    assert again.already_imported and again.accepted == 0
    assert pl.read_parquet(table_files(tmp_path, "judgments")).height == judgments.height
    assert pl.read_parquet(table_files(tmp_path, "quarantine")).height == quarantine.height


def test_pairwise_file_with_ties_cycles_and_disagreement(tmp_path):
    write_round(tmp_path, ["ok", "ok"], k=3)
    a, b, c = (f"{G0}:{i}" for i in range(3))
    rows = [
        [G0, a, b, "erin", ""],    # erin: a > b > c > a, a cycle
        [G0, b, c, "erin", "0"],
        [G0, c, a, "erin", "no"],
        [G0, a, b, "finn", ""],    # finn disagrees with erin on (a, b)...
        [G0, b, a, "finn", ""],    # ...and with himself: conflict, both quarantined
        [G0, b, c, "finn", "yes"],  # a tie
        [G0, a, a, "finn", ""],    # same candidate twice
        [G0, a, c, "finn", "maybe"],  # bad tie value
    ]
    path = _write_csv(tmp_path / "pairs.csv", ["group_id", "winner_id", "loser_id", "annotator",
                                               "tie"], rows, bom=False)
    report = import_human_file(tmp_path, path)
    assert report.format == "pairwise"
    assert (report.accepted, report.quarantined) == (4, 4)
    assert report.reasons == {"conflicting rows from one annotator": 2,
                              "winner and loser are the same candidate": 1,
                              "tie 'maybe' is not true/false": 1}
    # The cycle is kept, found by the ranking stage, and not forced into an order.
    rank_round(tmp_path, 0, load_config(overrides={"rank.weights": ["human:*=1"]}).rank)
    cycles = pl.read_parquet(round_dir(tmp_path, 0) / "cycles" / "consensus.parquet")
    assert ("r000:p000", "human:erin") in set(zip(cycles["group_id"], cycles["source"],
                                                  strict=True))
    ranks = pl.read_parquet(round_dir(tmp_path, 0) / "rankings" / "consensus.parquet")
    g0 = ranks.filter(pl.col("group_id") == G0)["rank"].to_list()
    assert len(set(g0)) == 1  # erin's cycle dominates: all three tie


def test_jsonl_and_bad_files(tmp_path):
    write_round(tmp_path, ["ok"], k=2)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"group_id": G0, "candidate_id": f"{G0}:0", "rank": 1,
                                "annotator": "x"}) + "\nnot json\n")
    report = import_human_file(tmp_path, path)
    assert (report.accepted, report.quarantined) == (1, 1)
    wrong = _write_csv(tmp_path / "w.csv", ["group", "cand"], [["a", "b"]])
    with pytest.raises(ImportFileError, match="neither ranking rows"):
        import_human_file(tmp_path, wrong)
    assert main(["import-human", str(wrong), "--workdir", str(tmp_path)]) == 2


def test_export_then_import_round_trip(tmp_path):
    write_round(tmp_path, ["ok", "ok"], k=3, texts={0: ["=1+1", "12", "21"]})
    csv_path, jsonl_path = export_annotation(tmp_path, 0, tmp_path / "ann")
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["group_id"] for r in rows} == {G0, G1}
    # A candidate that looks like a formula is defused for spreadsheets.
    assert "'=1+1" in {r["text"] for r in rows}
    groups = [json.loads(x) for x in jsonl_path.read_text().splitlines()]
    assert [len(g["candidates"]) for g in groups] == [3, 3]
    for r in rows:  # the annotator fills in the blanks
        r["rank"], r["annotator"] = r["position"], "gina"
    filled = _write_csv(tmp_path / "filled.csv", list(rows[0]),
                        [list(r.values()) for r in rows])
    report = import_human_file(tmp_path, filled)
    assert report.accepted == 6 and report.quarantined == 0
