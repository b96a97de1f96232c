"""The DuckDB catalog: views over the Parquet files, derived and rebuildable at any time.

``rebuild`` writes a fresh database beside the old one and swaps it in with ``os.replace``,
so there is one writer and readers (``connect_readonly``) never see a half-built catalog.
Each table is a view over its files' glob, so shards written after a rebuild are visible
at once; a table with no files yet is an empty view with the schema's column types.
``_files`` lists every file with its row count from the Parquet footer.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.schema import TABLES, SchemaError
from pipeline.store import TABLE_GLOBS, catalog_path, table_files


def rebuild(workdir: Path) -> dict[str, int]:
    """Recreate ``catalog.duckdb`` from the files; return rows per table."""
    workdir = Path(workdir).resolve()
    target = catalog_path(workdir)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    file_rows: list[dict] = []
    con = duckdb.connect(str(tmp))
    try:
        for name, spec in TABLES.items():
            files = table_files(workdir, name)
            for f in files:
                meta = pq.read_metadata(f)
                _check_file_schema(f, meta.schema.to_arrow_schema(), spec.arrow_schema)
                file_rows.append({"table_name": name, "path": str(f), "rows": meta.num_rows})
            if files:
                pattern = str(workdir / TABLE_GLOBS[name]).replace("'", "''")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}')")
            else:
                con.register("_empty", spec.empty())
                con.execute(f"CREATE TABLE _empty_{name} AS SELECT * FROM _empty")
                con.unregister("_empty")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
            rows[name] = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        files_tbl = pa.Table.from_pylist(
            file_rows,
            schema=pa.schema([("table_name", pa.string()), ("path", pa.string()),
                              ("rows", pa.int64())]),
        )
        con.register("_f", files_tbl)
        con.execute("CREATE TABLE _files AS SELECT * FROM _f")
        con.unregister("_f")
    finally:
        con.close()
    os.replace(tmp, target)
    return rows


def _check_file_schema(path: Path, actual: pa.Schema, expected: pa.Schema) -> None:
    if actual.names != expected.names or any(
        a.type != e.type for a, e in zip(actual, expected, strict=True)
    ):
        raise SchemaError(f"{path}: columns {actual.names} do not match the schema "
                          f"{expected.names}; was it written by another version?")


def connect_readonly(workdir: Path) -> duckdb.DuckDBPyConnection:
    path = catalog_path(workdir)
    if not path.exists():
        rebuild(workdir)
    return duckdb.connect(str(path), read_only=True)
