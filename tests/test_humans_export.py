"""Exports for annotators: never over a filled-in file, annotated groups left out, the JSON
lines twin importable, each export drawing its own groups, and targeted selections recorded
so the audit can tell them from a random sample."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from flows.cli import main
from pipeline.annotation import export_annotation, import_human_file
from pipeline.atomic import write_parquet_atomic
from pipeline.audit import run_query
from pipeline.catalog import rebuild
from pipeline.schema import AGREEMENT, CYCLES, RANKINGS
from pipeline.store import round_dir, table_files
from tests.annotation_helpers import quarantine, ranks_of, read_csv, write_csv
from tests.judge_helpers import write_round

HEADER = ["group_id", "prompt", "position", "candidate_id", "text", "rank", "annotator"]


def _fill(rows: list[dict], groups: set[str], annotator: str) -> list[dict]:
    """The annotator ranks ``groups`` in the order shown and leaves the rest blank."""
    for r in rows:
        if r["group_id"] in groups:
            r["rank"], r["annotator"] = r["position"], annotator
    return rows


def _save(path, rows):
    return write_csv(path, HEADER, [[r[h] for h in HEADER] for r in rows])


def test_export_then_import_round_trip(tmp_path):
    write_round(tmp_path, ["ok", "ok"], k=3, texts={0: ["=1+1", "12", "21"]})
    result = export_annotation(tmp_path, 0)
    csv_path = next(p for p in result.files if p.endswith(".csv"))
    rows = read_csv(csv_path)
    assert len(rows) == 6 and {r["group_id"] for r in rows} == {"r000:p000", "r000:p001"}
    assert "'=1+1" in {r["text"] for r in rows}  # defused for spreadsheets
    filled = _save(tmp_path / "filled.csv", _fill(rows, {"r000:p000", "r000:p001"}, "gina"))
    report = import_human_file(tmp_path, filled)
    assert (report.accepted, report.quarantined) == (6, 0)
    shown = {r["candidate_id"]: int(r["position"]) for r in rows}
    assert ranks_of(tmp_path, "human:gina") == shown


def test_an_export_never_overwrites_a_file_holding_annotations(tmp_path):
    """Issue 15.4: a second export used to overwrite the CSV an annotator was filling in."""
    write_round(tmp_path, ["ok"] * 4, k=3)
    first = export_annotation(tmp_path, 0)
    csv_path = next(p for p in first.files if p.endswith(".csv"))
    rows = _fill(read_csv(csv_path), {read_csv(csv_path)[0]["group_id"]}, "ann")
    _save(csv_path, rows)  # filled in place, not imported yet
    filled = open(csv_path, "rb").read()

    second = export_annotation(tmp_path, 0)
    # Even with the export records gone, the next number comes from the files on disk.
    for f in table_files(tmp_path, "annotation_exports"):
        f.unlink()
    third = export_annotation(tmp_path, 0)
    assert len({first.export_id, second.export_id, third.export_id}) == 3
    assert not set(first.files) & (set(second.files) | set(third.files))
    assert open(csv_path, "rb").read() == filled
    assert import_human_file(tmp_path, csv_path).accepted == 3


def test_groups_already_annotated_are_left_out_unless_asked(tmp_path):
    """Issue 15.4: every export used to start with the same, already annotated, groups."""
    write_round(tmp_path, ["ok"] * 6, k=3)
    first = export_annotation(tmp_path, 0, max_groups=2)
    csv_path = next(p for p in first.files if p.endswith(".csv"))
    rows = read_csv(csv_path)
    done = {r["group_id"] for r in rows}
    import_human_file(tmp_path, _save(tmp_path / "done.csv", _fill(rows, done, "ann")))

    second = export_annotation(tmp_path, 0)
    exported = {r["group_id"] for r in read_csv(next(p for p in second.files
                                                     if p.endswith(".csv")))}
    assert (second.groups, second.annotated_skipped) == (4, 2)
    assert exported.isdisjoint(done) and len(exported) == 4
    everything = export_annotation(tmp_path, 0, include_annotated=True)
    assert (everything.groups, everything.annotated_skipped) == (6, 0)
    rest = read_csv(next(p for p in everything.files if p.endswith(".csv")))
    import_human_file(tmp_path, _save(tmp_path / "rest.csv",
                                      _fill(rest, exported, "ann")))
    with pytest.raises(ValueError, match="--include-annotated"):
        export_annotation(tmp_path, 0)


def test_each_random_export_draws_anew_and_a_seed_repeats_a_draw(tmp_path):
    write_round(tmp_path, ["ok"] * 12, k=2)
    picks = [export_annotation(tmp_path, 0, max_groups=3, fmt="label-studio")
             for _ in range(2)]
    chosen = [[g["group_id"] for g in json.loads(open(r.manifest).read())["groups_chosen"]]
              for r in picks]
    assert chosen[0] != chosen[1]
    again = export_annotation(tmp_path, 0, max_groups=3, seed=picks[0].seed)
    assert [g["group_id"] for g in json.loads(open(again.manifest).read())["groups_chosen"]] \
        == chosen[0]


def test_the_json_lines_twin_is_importable_once_filled_in(tmp_path):
    """Issue 15.4: the JSONL twin used to be refused ("neither ranking rows nor pairwise")."""
    write_round(tmp_path, ["ok"] * 3, k=3)
    result = export_annotation(tmp_path, 0)
    jsonl = next(p for p in result.files if p.endswith(".jsonl"))
    lines = [json.loads(x) for x in open(jsonl).read().splitlines()]
    assert [len(g["candidates"]) for g in lines] == [3, 3, 3]
    lines[0]["annotator"] = "jo"  # ranks the first group, best last as shown, with a tie
    for c, r in zip(lines[0]["candidates"], [2, 2, 1], strict=True):
        c["rank"] = r
    lines[2]["annotator"] = "jo"
    lines[2]["candidates"][0]["rank"] = "first"  # a typo, on line 3
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps(g) + "\n" for g in lines))
    report = import_human_file(tmp_path, filled)
    assert report.format == "grouped"
    assert (report.accepted, report.quarantined, report.skipped) == (1, 1, {"not annotated": 1})
    assert quarantine(tmp_path)["row_number"].to_list() == [3]
    expected = {c["candidate_id"]: c["rank"] for c in lines[0]["candidates"]}
    assert ranks_of(tmp_path, "human:jo") == expected


def _tables(workdir):
    """Four groups and what the ranking stage would have said about them."""
    write_round(workdir, ["ok"] * 4, k=3)
    r = round_dir(workdir, 0)

    def agree(g, a, b, tau):
        return {"round": 0, "group_id": f"r000:p{g:03d}", "source_a": a, "source_b": b,
                "pairs": 3, "tau": tau, "decided_pairs": 3, "tau_decided": tau}
    rows = [agree(0, "llm:j", "rm:a", 0.9), agree(0, "rm:a", "verifier:t", 0.7),
            agree(1, "llm:j", "rm:a", -0.8), agree(1, "rm:a", "verifier:t", 0.2),
            agree(2, "llm:j", "rm:a", 1.0), agree(2, "human:x", "rm:a", -1.0),
            agree(3, "llm:j", "rm:a", 0.1)]
    write_parquet_atomic(pa.Table.from_pylist(rows, AGREEMENT.arrow_schema),
                         r / "agreement" / "consensus.parquet", AGREEMENT)
    scores = {0: [2.0, 0.0, -2.0], 1: [1.0, 0.9, -1.0], 2: [0.5, 0.0, -3.0],
              3: [0.0, 0.0, 0.0]}
    rows = [{"round": 0, "group_id": f"r000:p{g:03d}", "candidate_id": f"r000:p{g:03d}:{i}",
             "rank": -1 if g == 3 else i, "score": None if g == 3 else s}
            for g, ss in scores.items() for i, s in enumerate(ss)]
    write_parquet_atomic(pa.Table.from_pylist(rows, RANKINGS.arrow_schema),
                         r / "rankings" / "consensus.parquet", RANKINGS)
    rows = [{"round": 0, "group_id": "r000:p002", "source": "llm:j",
             "members": ["r000:p002:0", "r000:p002:1", "r000:p002:2"], "n_3cycles": 1},
            {"round": 0, "group_id": "r000:p001", "source": "consensus",
             "members": ["r000:p001:0", "r000:p001:1", "r000:p001:2"], "n_3cycles": 1},
            {"round": 0, "group_id": "r000:p001", "source": "rm:a",
             "members": ["r000:p001:0", "r000:p001:1", "r000:p001:2"], "n_3cycles": 1}]
    write_parquet_atomic(pa.Table.from_pylist(rows, CYCLES.arrow_schema),
                         r / "cycles" / "consensus.parquet", CYCLES)


def _chosen(result) -> list[tuple[str, float | None]]:
    return [(g["group_id"][-4:], g["score"])
            for g in json.loads(open(result.manifest).read())["groups_chosen"]]


def test_targeted_selections_and_their_record(tmp_path):
    _tables(tmp_path)
    # Disagreement: mean tau over machine pairs only (the human pair of p002 is ignored).
    dis = export_annotation(tmp_path, 0, max_groups=2, selection="disagreement")
    assert _chosen(dis) == [("p001", pytest.approx(-0.3)), ("p003", pytest.approx(0.1))]
    # Uncertainty: the smallest gap between neighbouring strengths; p003 is unranked.
    unc = export_annotation(tmp_path, 0, selection="uncertainty")
    assert _chosen(unc) == [("p001", pytest.approx(0.1)), ("p002", pytest.approx(0.5)),
                            ("p000", pytest.approx(2.0))]
    cyc = export_annotation(tmp_path, 0, max_groups=5, selection="cycles")
    assert _chosen(cyc) == [("p001", 2.0), ("p002", 1.0)]
    rnd = export_annotation(tmp_path, 0, max_groups=4)
    assert sorted(g for g, _ in _chosen(rnd)) == ["p000", "p001", "p002", "p003"]

    rebuild(tmp_path)
    audit = {r["export_id"]: r for r in run_query(tmp_path, "annotation_exports").to_pylist()}
    assert {e: (r["selection"], r["groups"]) for e, r in audit.items()} == {
        dis.export_id: ("disagreement", 2), unc.export_id: ("uncertainty", 3),
        cyc.export_id: ("cycles", 2), rnd.export_id: ("random", 4)}
    assert audit[rnd.export_id]["mean_score"] is None
    table = pl.read_parquet(table_files(tmp_path, "annotation_exports"))
    assert table.filter(pl.col("export_id") == unc.export_id)["position"].to_list() == [1, 2, 3]


def test_targeted_selection_needs_the_ranking_stage(tmp_path):
    write_round(tmp_path, ["ok"] * 2, k=3)
    with pytest.raises(ValueError, match="run `grpo rank --round 0` first"):
        export_annotation(tmp_path, 0, selection="uncertainty")
    assert not list(tmp_path.glob("annotation/*"))


def test_cli_export_flags_and_one_line_errors(tmp_path, capsys):
    write_round(tmp_path, ["ok"] * 3, k=3)
    out = tmp_path / "for-people"
    assert main(["export-annotation", "--workdir", str(tmp_path), "--format", "label-studio",
                 "--groups", "2", "--select", "random", "--seed", "7", "--out",
                 str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["groups"], printed["seed"], printed["selection"]) == (2, 7, "random")
    assert sorted(p.name for p in out.iterdir()) == [
        "annotation-r000-e0001.label-studio.json", "annotation-r000-e0001.label-studio.xml",
        "annotation-r000-e0001.manifest.json"]
    for args, says in ((["--round", "7"], "round 7 of"),
                       (["--select", "cycles"], "run `grpo rank --round 0` first"),
                       (["--groups", "0"], "--groups 0")):
        assert main(["export-annotation", "--workdir", str(tmp_path), *args]) == 2
        err = [line for line in capsys.readouterr().err.strip().splitlines()
               if not line.endswith(": round 0")]  # the line that names the round
        assert len(err) == 1 and says in err[0], err
