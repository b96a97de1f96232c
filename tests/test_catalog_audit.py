"""The catalog is derived from the files; every audit query runs on it."""

import pyarrow as pa
import pytest

from flows.cli import main
from pipeline.atomic import write_parquet_atomic
from pipeline.audit import list_queries, run_query
from pipeline.catalog import connect_readonly, rebuild
from pipeline.schema import CANDIDATES, PROMPTS, TABLES
from pipeline.store import prompts_path, shard_path


def _fake_round(workdir, k=3, n=4):
    """A small but schema-valid round, written with the project's own writer."""
    prompts = [{"round": 0, "prompt_id": f"p{i}", "split": "train",
                "messages": [{"role": "user", "content": f"S {i}1="}], "prompt": f"S {i}1=",
                "prompt_token_ids": [1, 5], "reference": f"1{i}", "row_json": "{}"}
               for i in range(n)]
    write_parquet_atomic(pa.Table.from_pylist(prompts, PROMPTS.arrow_schema),
                         prompts_path(workdir, 0), PROMPTS)
    rows = [{"round": 0, "group_id": f"r000:p{i}", "prompt_id": f"p{i}", "candidate_idx": j,
             "candidate_id": f"r000:p{i}:{j}", "text": "1" * j, "token_ids": [7] * j,
             "policy": "m",
             "n_tokens": j, "finish_reason": "length" if j == 2 else "stop",
             "stop_token_id": None if j == 2 else 2,
             "logprob": -float(j), "seed": i, "config_hash": "h", "injection": None}
            for i in range(n) for j in range(k)]
    write_parquet_atomic(pa.Table.from_pylist(rows, CANDIDATES.arrow_schema),
                         shard_path(workdir, "candidates", 0, 0, "h"), CANDIDATES)


def test_rebuild_is_deterministic_and_views_are_typed(tmp_path):
    _fake_round(tmp_path)
    counts = rebuild(tmp_path)
    assert counts["candidates"] == 12 and counts["prompts"] == 4 and counts["judgments"] == 0
    con = connect_readonly(tmp_path)
    for name, spec in TABLES.items():
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        assert cols == [c.name for c in spec.columns]
    snapshot = con.execute("SELECT * FROM candidates ORDER BY candidate_id").fetchall()
    files = con.execute("SELECT table_name, rows FROM _files ORDER BY 1").fetchall()
    con.close()
    assert files == [("candidates", 12), ("prompts", 4)]
    (tmp_path / "catalog.duckdb").unlink()
    assert rebuild(tmp_path) == counts
    con = connect_readonly(tmp_path)
    assert con.execute("SELECT * FROM candidates ORDER BY candidate_id").fetchall() == snapshot
    con.close()


def test_catalog_readers_cannot_write(tmp_path):
    _fake_round(tmp_path)
    rebuild(tmp_path)
    con = connect_readonly(tmp_path)
    with pytest.raises(Exception, match="read-only"):
        con.execute("CREATE TABLE x (a INT)")
    con.close()


def test_every_audit_query_runs(tmp_path):
    _fake_round(tmp_path)
    rebuild(tmp_path)
    queries = list_queries()
    assert queries, "sql/ holds no audit query"
    for q in queries:
        assert q.summary, f"{q.name}.sql needs a first comment line saying what it shows"
        run_query(tmp_path, q.name)
    coverage = run_query(tmp_path, "generation_coverage").to_pylist()
    assert coverage == [{
        "round": 0, "train_prompts": 4, "groups": 4, "candidates": 12, "duplicate_ids": 0,
        "groups_with_repeated_idx": 0, "min_k": 3, "max_k": 3, "truncated": 4,
        "empty_texts": 4, "mean_tokens": 1.0, "config_hashes": 1}]


def test_cli_audit_saves_csv(tmp_path, capsys):
    _fake_round(tmp_path)
    rebuild(tmp_path)
    out = tmp_path / "cov.csv"
    assert main(["audit", "generation_coverage", "--workdir", str(tmp_path),
                 "--csv", str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith('"round","train_prompts"')
    assert main(["audit", "nope", "--workdir", str(tmp_path)]) == 2
    assert "no audit query" in capsys.readouterr().err


def test_cli_db_rebuild_recreates_the_catalog(tmp_path, capsys):
    _fake_round(tmp_path)
    assert main(["db", "rebuild", "--workdir", str(tmp_path)]) == 0
    assert '"candidates": 12' in capsys.readouterr().out
    (tmp_path / "catalog.duckdb").unlink()
    assert main(["db", "rebuild", "--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "catalog.duckdb").exists()


def test_every_subcommand_is_dispatched():
    """Each subcommand the parser knows has a branch in _dispatch (no AssertionError path)."""
    import inspect

    from flows.cli import _dispatch, build_parser

    source = inspect.getsource(_dispatch)
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f'"{name}"' in source, f"grpo {name} has no branch in _dispatch"


def test_a_copied_workdir_reads_only_its_own_files(tmp_path):
    import shutil

    import duckdb

    _fake_round(tmp_path / "a")
    rebuild(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "rounds")  # the copy holds no round at all
    # The DuckDB shell (a plain connection) is stopped with the fix, not fed a's rows.
    raw = duckdb.connect(str(tmp_path / "b" / "catalog.duckdb"), read_only=True)
    with pytest.raises(duckdb.Error, match="copied or moved: run `grpo db rebuild"):
        raw.execute("SELECT count(*) FROM candidates").fetchall()
    raw.close()
    # grpo's own readers rebuild for the new place and read only b's files.
    con = connect_readonly(tmp_path / "b")
    assert con.execute("SELECT count(*) FROM candidates").fetchall() == [(0,)]
    con.close()
    assert run_query(tmp_path / "a", "generation_coverage").num_rows == 1
