"""Human rankings from files people fill in: every kind of bad row, both row layouts, row
numbers as a person sees them, rows nobody annotated, any round number."""

from __future__ import annotations

import json

import polars as pl
import pytest

from flows.cli import main
from pipeline.annotation import ImportFileError, import_human_file
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.humans import import_human_file as import_through_old_name
from pipeline.store import round_dir
from tests.annotation_helpers import (
    human_judgments,
    quarantine,
    ranks_of,
    write_csv,
    write_round_numbered,
)
from tests.judge_helpers import write_round

G0, G1 = "r000:p000", "r000:p001"
RANK_HEADER = ["group_id", "candidate_id", "rank", "annotator"]


def _reasons(workdir) -> dict[int, str]:
    q = quarantine(workdir)
    return dict(zip(q["row_number"].to_list(), q["reason"].to_list(), strict=True))


def test_ranking_file_with_every_bad_row_kind(tmp_path):
    write_round(tmp_path, ["ok", "ok"], k=3)
    rows = [                              # spreadsheet row (the header is row 1)
        [G0, f"{G0}:0", 1, "alice"],      # 2 ok
        [G0, f"{G0}:1", 2, "alice"],      # 3 ok
        [G0, f"{G0}:2", 2, "alice"],      # 4 ok: a tie with row 3
        [G0, f"{G0}:0", 1, "alice"],      # 5 duplicate of row 2
        ["r000:nope", f"{G0}:0", 1, "bob"],  # 6 unknown group
        [G0, f"{G1}:0", 1, "bob"],        # 7 candidate of another group
        [G0, f"{G0}:1", 4, "bob"],        # 8 rank out of range (k = 3)
        [G0, f"{G0}:1", "=1+1", "bob"],   # 9 formula in rank
        [G0, f"{G0}:1", 1, "=HYPERLINK(\"x\")"],  # 10 formula in annotator
        [G1, f"{G1}:0", 1, "carol"],      # 11 conflicts with 12
        [G1, f"{G1}:0", 3, "carol"],      # 12
        [G1, f"{G1}:1", 1, "dave"],       # 13 ok
        [G1, f"{G1}:2", 2, "dave"],       # 14 ok
        [G1, "", 1, "dave"],              # 15 missing candidate
        [G1, f"{G1}:0", "two", "dave"],   # 16 not an integer
        [G1, f"{G1}:0", 1, ""],           # 17 ranked, but by whom?
        [G1, f"{G1}:0", "", "dave"],      # 18 not ranked: nothing to import, not an error
    ]
    path = write_csv(tmp_path / "ranks.csv", RANK_HEADER, rows, bom=True)
    report = import_human_file(tmp_path, path)
    assert report.format == "ranking"
    assert report.rows_read == 17
    assert (report.accepted, report.quarantined, report.skipped) == (5, 11, {"not annotated": 1})
    assert report.accepted + report.quarantined + sum(report.skipped.values()) \
        == report.rows_read
    reasons = _reasons(tmp_path)
    assert reasons[5] == "duplicate of row 2"
    assert reasons[6] == "unknown group_id"
    assert reasons[7] == "unknown candidate_id for this group"
    assert reasons[8] == "rank 4 out of range 1..3"
    assert reasons[9] == "spreadsheet formula in rank"
    assert reasons[10] == "spreadsheet formula in annotator"
    assert reasons[11] == "conflicting rows from one annotator (rows 11, 12)"
    assert reasons[12] == reasons[11]
    assert reasons[15] == "missing candidate_id"
    assert reasons[16] == "rank 'two' is not an integer"
    assert reasons[17] == "missing annotator"
    # The BOM did not leak into the first column's name.
    judgments = human_judgments(tmp_path)
    assert set(judgments["source"]) == {"human:alice", "human:dave"}
    assert ranks_of(tmp_path, "human:alice") == {f"{G0}:0": 1, f"{G0}:1": 2, f"{G0}:2": 2}
    # Importing the same file again adds nothing, not even quarantine rows.
    again = import_through_old_name(tmp_path, path)
    assert again.already_imported and again.accepted == 0
    assert human_judgments(tmp_path).height == judgments.height
    assert quarantine(tmp_path).height == 11


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
    path = write_csv(tmp_path / "pairs.csv", ["group_id", "winner_id", "loser_id", "annotator",
                                              "tie"], rows)
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


def test_bad_files_fail_whole_with_one_line(tmp_path, capsys):
    write_round(tmp_path, ["ok"], k=2)
    wrong = write_csv(tmp_path / "w.csv", ["group", "cand"], [["a", "b"]])
    with pytest.raises(ImportFileError, match="not a supported layout"):
        import_human_file(tmp_path, wrong)
    assert main(["import-human", str(wrong), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a supported layout" in err[0]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("group_id,candidate_id,rank,annotator\nr000:p000,x,1,Jos\xe9\n"
                      .encode("latin-1"))
    with pytest.raises(ImportFileError, match="not UTF-8"):
        import_human_file(tmp_path, latin)


def test_row_numbers_are_what_a_spreadsheet_shows(tmp_path):
    """Issue 15.5: the typo on line 4 is reported as row 4, not 3 (and a cell holding a line
    break does not shift the numbers: a spreadsheet shows one row per record)."""
    write_round(tmp_path, ["ok"], k=3, texts={0: ["a", "b", "c"]})
    header = ["group_id", "candidate_id", "text", "rank", "annotator"]
    rows = [[G0, f"{G0}:0", "two\nlines", 1, "ann"],   # row 2 (lines 2-3 in an editor)
            [G0, f"{G0}:1", "b", 2, "ann"],            # row 3
            [G0, f"{G0}:2", "c", "2x", "ann"]]         # row 4: the typo
    path = write_csv(tmp_path / "typo.csv", header, rows, bom=True)
    report = import_human_file(tmp_path, path)
    assert (report.accepted, report.quarantined) == (2, 1)
    assert _reasons(tmp_path) == {4: "rank '2x' is not an integer"}

    plain = write_csv(tmp_path / "plain.csv", RANK_HEADER,
                      [[G0, f"{G0}:0", 1, "bea"], [G0, f"{G0}:1", 2, "bea"],
                       [G0, f"{G0}:2", "x", "bea"]])
    import_human_file(tmp_path, plain)
    q = quarantine(tmp_path).filter(pl.col("source_file") == str(plain))
    assert q["row_number"].to_list() == [4]  # line 4 of the file, as an editor shows it


def test_json_lines_row_numbers_do_not_drift_on_blank_lines(tmp_path):
    """Issue 10.9: blank lines count as lines, as in any editor."""
    write_round(tmp_path, ["ok"], k=2)
    ok = json.dumps({"group_id": G0, "candidate_id": f"{G0}:0", "rank": 1, "annotator": "x"})
    bad = json.dumps({"group_id": G0, "candidate_id": f"{G0}:1", "rank": 9, "annotator": "x"})
    path = tmp_path / "r.jsonl"
    path.write_text(f"{ok}\n\n\n{bad}\nnot json\n")
    report = import_human_file(tmp_path, path)
    assert (report.rows_read, report.accepted, report.quarantined) == (3, 1, 2)
    assert _reasons(tmp_path) == {4: "rank 9 out of range 1..2", 5: "unparsable line"}


def test_rows_of_an_unreached_group_are_counted_not_quarantined(tmp_path):
    """Issue 15.5: blank rank and annotator cells of a group the annotator did not reach."""
    write_round(tmp_path, ["ok", "ok"], k=3)
    rows = [[G0, f"{G0}:{i}", i + 1, "ann"] for i in range(3)]
    rows += [[G1, f"{G1}:{i}", "", ""] for i in range(3)]
    path = write_csv(tmp_path / "half.csv", RANK_HEADER, rows)
    report = import_human_file(tmp_path, path)
    assert (report.accepted, report.quarantined) == (3, 0)
    assert report.skipped == {"not annotated": 3}
    assert quarantine(tmp_path).height == 0


@pytest.mark.parametrize("round_", [7, 1000])
def test_the_round_comes_from_the_store_not_the_group_id(tmp_path, round_):
    """Issue 10.9: group ids of round 1000 are ``r1000:...``; the old parser read 100."""
    write_round_numbered(tmp_path, round_, ["ok"], k=3)
    gid = f"r{round_:03d}:p000"
    path = write_csv(tmp_path / "r.csv", RANK_HEADER,
                     [[gid, f"{gid}:{i}", i + 1, "ann"] for i in range(3)])
    report = import_human_file(tmp_path, path)
    assert report.accepted == 3
    j = human_judgments(tmp_path)
    assert set(j["round"]) == {round_}
    assert all(f"/rounds/r{round_:03d}/judgments/" in o for o in report.outputs[:-1])
