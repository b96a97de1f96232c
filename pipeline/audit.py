"""Find and run the audit queries in ``sql/``.

The queries are plain SQL files a person can also run in the DuckDB shell against
``catalog.duckdb``; this module only lists them and runs one. A query's summary is the first
paragraph of its leading comment (up to the first empty ``--`` line), whole sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.catalog import connect_readonly
from pipeline.resources import SQL_DIR  # the checkout's sql/, or the wheel's copy


@dataclass(frozen=True)
class AuditQuery:
    name: str
    path: Path
    summary: str

    @property
    def sql(self) -> str:
        return self.path.read_text()


def list_queries(sql_dir: Path = SQL_DIR) -> list[AuditQuery]:
    return [AuditQuery(path.stem, path, summary(path.read_text()))
            for path in sorted(sql_dir.glob("*.sql"))]


def summary(sql: str) -> str:
    """The first paragraph of the leading ``--`` comment, on one line."""
    words: list[str] = []
    for line in sql.lstrip().splitlines():
        if not line.startswith("--"):
            break
        text = line.lstrip("-").strip()
        if not text:
            if words:
                break
            continue
        words.append(text)
    return " ".join(words)


def get_query(name: str, sql_dir: Path = SQL_DIR) -> AuditQuery:
    queries = {q.name: q for q in list_queries(sql_dir)}
    if name not in queries:
        raise KeyError(f"no audit query {name!r}; available: {', '.join(sorted(queries))}")
    return queries[name]


def run_query(workdir: Path, name: str, sql_dir: Path = SQL_DIR) -> pa.Table:
    query = get_query(name, sql_dir)
    con = connect_readonly(workdir)
    try:
        return con.sql(query.sql).to_arrow_table()
    finally:
        con.close()
