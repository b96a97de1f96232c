"""The DuckDB catalog: views over the Parquet files, derived and rebuildable at any time.

``rebuild`` writes a fresh database beside the old one and swaps it in with ``os.replace``,
so there is one writer and readers (``connect_readonly``) never see a half-built catalog.
Each table is a view over its files' glob, so shards written after a rebuild are visible
at once; a table with no files yet is an empty view with the schema's column types.
``_files`` lists every file with its row count from the Parquet footer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import sweep_stale_temps, temp_path
from pipeline.schema import TABLES, SchemaError
from pipeline.store import TABLE_GLOBS, catalog_path, table_files

# The `duckdb` shell on PyPI (duckdb-cli, installed with the project) trails the Python
# package by a storage version; the catalog is written in a format both can open.
SHELL_STORAGE = "v1.5.0"


def rebuild(workdir: Path) -> dict[str, int]:
    """Recreate ``catalog.duckdb`` from the files; return rows per table."""
    workdir = Path(workdir).resolve()
    target = catalog_path(workdir)
    sweep_stale_temps(target)  # a killed rebuild's file and its log
    tmp = temp_path(target)
    wal = tmp.with_name(tmp.name + ".wal")
    rows: dict[str, int] = {}
    file_rows: list[dict] = []
    con = None
    try:
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": SHELL_STORAGE})
        here = Path(_own_path(con)).with_name(target.name)
        guard = _moved_guard(str(here))
        for name, spec in TABLES.items():
            files = table_files(workdir, name)
            for f in files:
                meta = pq.read_metadata(f)
                _check_file_schema(f, meta.schema.to_arrow_schema(), spec.arrow_schema)
                file_rows.append({"table_name": name, "path": str(f), "rows": meta.num_rows})
            if files:
                pattern = str(workdir / TABLE_GLOBS[name]).replace("'", "''")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}') "
                            f"WHERE {guard}")
            else:
                con.register("_empty", spec.empty())
                con.execute(f"CREATE TABLE _empty_{name} AS SELECT * FROM _empty")
                con.unregister("_empty")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
            rows[name] = sum(r["rows"] for r in file_rows if r["table_name"] == name)
        files_tbl = pa.Table.from_pylist(
            file_rows,
            schema=pa.schema([("table_name", pa.string()), ("path", pa.string()),
                              ("rows", pa.int64())]),
        )
        con.register("_f", files_tbl)
        con.execute("CREATE TABLE _files AS SELECT * FROM _f")
        con.unregister("_f")
        con.execute("CREATE TABLE _catalog AS SELECT ? AS path, ? AS workdir",
                    [str(here), str(workdir)])
        # An explicit checkpoint: one that fails inside close() (seen on a full disk) is
        # silent and leaves the tables in the write-ahead log, which the rename would leave
        # behind: an empty catalog.
        con.execute("CHECKPOINT")
        con.close()
        if wal.exists():
            raise RuntimeError(f"catalog: DuckDB left {wal.name} after its checkpoint; the "
                               "catalog was not replaced")
        os.replace(tmp, target)
    except BaseException:
        # The old catalog stays; the half-built one goes (on a full disk it holds the space
        # the user has to free).
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()
        for leftover in (tmp, wal):
            leftover.unlink(missing_ok=True)
        raise
    return rows


def _check_file_schema(path: Path, actual: pa.Schema, expected: pa.Schema) -> None:
    if actual.names != expected.names or any(
        a.type != e.type for a, e in zip(actual, expected, strict=True)
    ):
        raise SchemaError(f"{path}: columns {actual.names} do not match the schema "
                          f"{expected.names}; was it written by another version?")


def _own_path(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT path FROM duckdb_databases() "
                       "WHERE database_name = current_database()").fetchall()[0][0]


def _moved_guard(expected: str) -> str:
    """A predicate that is true while the catalog sits where it was built, and an error
    naming the fix once it was copied or moved: its absolute paths would otherwise read the
    other workdir's files (the DuckDB shell has no way to resolve them relative to it)."""
    quoted = expected.replace("'", "''")
    message = (f"this catalog was built for {expected}; it was copied or moved: run "
               "`grpo db rebuild --workdir DIR` for its new place").replace("'", "''")
    return (f"(SELECT CASE WHEN path = '{quoted}' THEN true ELSE error('{message}') END "
            "FROM duckdb_databases() WHERE database_name = current_database())")


def connect_readonly(workdir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the workdir's own catalog, rebuilt first when it is
    missing or was built for another place (a copied or moved workdir)."""
    path = catalog_path(workdir)
    if not path.exists():
        rebuild(workdir)
    con = duckdb.connect(str(path), read_only=True)
    try:
        built_for = con.execute("SELECT path FROM _catalog").fetchall()[0][0]
    except duckdb.Error:
        built_for = None  # a catalog from before the guard
    if built_for == _own_path(con):
        return con
    con.close()
    rebuild(workdir)
    return duckdb.connect(str(path), read_only=True)
