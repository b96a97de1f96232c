"""The streaming atomic Parquet writer: tables in, one file out, only when all went well."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.atomic import TMP_MARK, parquet_writer_atomic, write_parquet_atomic
from pipeline.schema import EVALS, SchemaError


def _evals(metric, values):
    return pa.table({"round": pa.array(range(len(values)), pa.int32()),
                     "metric": [metric] * len(values), "value": values})


def test_streamed_tables_become_one_validated_file(tmp_path):
    path = tmp_path / "evals.parquet"
    with parquet_writer_atomic(path, EVALS) as write:
        write(_evals("a", [1.0, 2.0]))
        write(_evals("b", []))
        # Columns in another order and a castable type are brought to the schema.
        write(_evals("c", [3.0]).select(["value", "metric", "round"]))
        assert not path.exists()  # nothing visible before the end
    table = pq.read_table(path)
    assert table.schema == EVALS.arrow_schema
    assert table["metric"].to_pylist() == ["a", "a", "c"]
    assert list(tmp_path.iterdir()) == [path]


def test_an_empty_stream_writes_an_empty_file_with_the_schema(tmp_path):
    path = tmp_path / "evals.parquet"
    with parquet_writer_atomic(path, EVALS):
        pass
    assert pq.read_table(path).schema == EVALS.arrow_schema
    assert pq.read_table(path).num_rows == 0


@pytest.mark.parametrize("failure", ["exception", "schema"])
def test_a_failed_stream_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    path = tmp_path / "evals.parquet"
    write_parquet_atomic(_evals("old", [9.0]), path, EVALS)
    with pytest.raises(RuntimeError if failure == "exception" else SchemaError):
        with parquet_writer_atomic(path, EVALS) as write:
            write(_evals("new", [1.0]))
            if failure == "exception":
                raise RuntimeError("killed halfway")
            write(pa.table({"round": pa.array([1], pa.int32()), "metric": ["x"]}))
    assert pq.read_table(path)["metric"].to_pylist() == ["old"]
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]
