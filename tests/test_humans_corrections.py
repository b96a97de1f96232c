"""A corrected annotation file, an identical one, and a crash anywhere before the import's
marker: the newest import from an annotator on a group wins, the replaced rows stay
queryable as history, nothing is imported twice and nothing is quarantined for nothing."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.annotation import history, import_human_file, importer
from pipeline.audit import run_query
from pipeline.catalog import connect_readonly, rebuild
from pipeline.store import table_files
from tests.annotation_helpers import human_judgments, quarantine, ranks_of, write_csv
from tests.judge_helpers import write_round

G0, G1 = "r000:p000", "r000:p001"
HEADER = ["group_id", "candidate_id", "rank", "annotator"]


def _rows(annotator, ranks_g0, ranks_g1=None):
    rows = [[G0, f"{G0}:{i}", r, annotator] for i, r in enumerate(ranks_g0)]
    if ranks_g1:
        rows += [[G1, f"{G1}:{i}", r, annotator] for i, r in enumerate(ranks_g1)]
    return rows


def _superseded(workdir) -> pl.DataFrame:
    files = table_files(workdir, "superseded_human")
    return pl.read_parquet(files) if files else pl.DataFrame()


def _state(workdir) -> tuple:
    """Everything an import leaves in the store, comparable between two workdirs."""
    j = human_judgments(workdir).drop("raw").sort("source", "candidate_id")
    s = _superseded(workdir)
    s = s.sort("source", "candidate_id", "superseded_by").rows() if s.height else []
    return j.rows(), s, quarantine(workdir).drop("source_file").sort("row_number").rows()


def test_a_corrected_file_replaces_that_annotators_ranking_of_its_groups(tmp_path):
    """Issue 15.3: change one rank in an imported file and import it again."""
    write_round(tmp_path, ["ok", "ok"], k=3)
    first = write_csv(tmp_path / "alice.csv", HEADER, _rows("alice", [1, 2, 3], [3, 2, 1]))
    import_human_file(tmp_path, first)
    import_human_file(tmp_path, write_csv(tmp_path / "bob.csv", HEADER, _rows("bob", [3, 2, 1])))

    corrected = write_csv(tmp_path / "alice-v2.csv", HEADER,
                          _rows("alice", [1, 3, 2], [3, 2, 1]))  # one group changed
    report = import_human_file(tmp_path, corrected)
    assert (report.accepted, report.quarantined) == (6, 0)
    assert (report.groups_replaced, report.groups_unchanged, report.groups_new) == (1, 1, 0)
    assert (report.judgments_written, report.superseded_rows) == (3, 3)
    assert quarantine(tmp_path).height == 0
    alice = ranks_of(tmp_path, "human:alice")
    assert alice == {f"{G0}:0": 1, f"{G0}:1": 3, f"{G0}:2": 2,
                     f"{G1}:0": 3, f"{G1}:1": 2, f"{G1}:2": 1}
    assert human_judgments(tmp_path).height == 9  # alice 6 (once each), bob 3
    assert ranks_of(tmp_path, "human:bob") == {f"{G0}:0": 3, f"{G0}:1": 2, f"{G0}:2": 1}

    old = _superseded(tmp_path)
    assert old["group_id"].unique().to_list() == [G0]
    assert dict(zip(old["candidate_id"], old["value"], strict=True)) == {
        f"{G0}:0": 1, f"{G0}:1": 2, f"{G0}:2": 3}
    assert set(old["superseded_by"]) == {report.sha256[:16]}
    # The history is in the catalog, next to (not inside) the judgments the consensus reads.
    rebuild(tmp_path)
    con = connect_readonly(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM judgments WHERE source = 'human:alice'"
                           ).fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM superseded_human").fetchone()[0] == 3
    finally:
        con.close()
    hist = run_query(tmp_path, "human_history").to_pylist()
    assert [(r["annotator"], r["group_id"], r["rows_replaced"]) for r in hist] == [
        ("human:alice", G0, 3)]
    assert hist[0]["replaced_values"] == f"{G0}:0=1.0, {G0}:1=2.0, {G0}:2=3.0"

    # A second correction moves the first correction into the history too.
    third = write_csv(tmp_path / "alice-v3.csv", HEADER, _rows("alice", [2, 1, 3]))
    import_human_file(tmp_path, third)
    assert ranks_of(tmp_path, "human:alice")[f"{G0}:1"] == 1
    assert _superseded(tmp_path).height == 6
    assert human_judgments(tmp_path).height == 9


def test_an_identical_reimport_adds_nothing(tmp_path):
    """Issue 15.3: the same file again, or the same rows saved differently, write nothing and
    quarantine nothing."""
    write_round(tmp_path, ["ok", "ok"], k=3)
    path = write_csv(tmp_path / "a.csv", HEADER, _rows("ann", [1, 2, 3], [2, 1, 3]))
    import_human_file(tmp_path, path)
    before = _state(tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("*.parquet"))

    again = import_human_file(tmp_path, path)
    assert again.already_imported and again.quarantined == 0
    # Same rows, another order and Windows line endings: other bytes, same content.
    resaved = tmp_path / "a-resaved.csv"
    lines = path.read_text().splitlines()
    resaved.write_bytes(("\r\n".join([lines[0], *reversed(lines[1:])]) + "\r\n").encode())
    report = import_human_file(tmp_path, resaved)
    assert not report.already_imported
    assert (report.accepted, report.quarantined, report.groups_unchanged) == (6, 0, 2)
    assert (report.judgments_written, report.superseded_rows) == (0, 0)
    assert _state(tmp_path) == before
    new_files = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert [f for f in new_files if f not in files] == [f"{report.sha256[:16]}.parquet"]
    assert quarantine(tmp_path).height == 0  # the one new file is an empty quarantine


class Crash(Exception):
    pass


def _imports(workdir, paths):
    for p in paths:
        import_human_file(workdir, p)


@pytest.mark.parametrize("where", ["marker", "old-file-rewrite"])
def test_a_crash_before_the_marker_is_retried_to_the_same_state(tmp_path, monkeypatch, where):
    """Issue 10.9: a crash after the data is written but before the import marker; the retry
    used to quarantine every row as "already imported". Also a crash half-way through moving
    replaced rows into the history."""
    for w in ("clean", "crashed"):
        write_round(tmp_path / w, ["ok", "ok"], k=3)
    v1 = write_csv(tmp_path / "v1.csv", HEADER, _rows("ann", [1, 2, 3], [1, 2, 3]))
    v2 = write_csv(tmp_path / "v2.csv", HEADER, _rows("ann", [3, 2, 1], [1, 2, 3]))
    bad = write_csv(tmp_path / "bad.csv", HEADER, [[G0, f"{G0}:0", 9, "zed"]])
    _imports(tmp_path / "clean", [v1, bad, v2])
    _imports(tmp_path / "crashed", [v1, bad])

    crashed = tmp_path / "crashed"
    if where == "marker":
        def boom(report, path):
            raise Crash
        monkeypatch.setattr(importer, "write_marker", boom)
    else:
        real = history.write_parquet_atomic

        def boom(table, path, spec):  # the history file is written, the old file not yet
            if "superseded" not in str(path) and "human--" in str(path) and \
                    history.PREFIX + v2_sha not in str(path):
                raise Crash
            return real(table, path, spec)
        import hashlib
        v2_sha = hashlib.sha256(v2.read_bytes()).hexdigest()[:16]
        monkeypatch.setattr(history, "write_parquet_atomic", boom)
    with pytest.raises(Crash):
        import_human_file(crashed, v2)
    monkeypatch.undo()

    report = import_human_file(crashed, v2)
    assert (report.accepted, report.quarantined, report.groups_replaced) == (6, 0, 1)
    assert _state(crashed) == _state(tmp_path / "clean")
    assert import_human_file(crashed, v2).already_imported
