"""The atomic writer under a real SIGKILL: the target is always a complete file."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.atomic import TMP_MARK, parquet_writer_atomic, sweep_stale_temps, write_parquet_atomic
from pipeline.schema import EVALS, SchemaError

ROWS = 200_000

WRITER = textwrap.dedent(f"""
    import sys, pyarrow as pa
    from pipeline.atomic import write_parquet_atomic
    from pipeline.schema import EVALS
    path = sys.argv[1]
    version = 0
    while True:
        version += 1
        # Every row of one version carries the same value: a torn file would mix or lack rows.
        t = pa.table({{"round": pa.array(range({ROWS}), pa.int32()),
                      "metric": pa.array([f"m{{version}}"] * {ROWS}),
                      "value": pa.array([float(version)] * {ROWS})}})
        write_parquet_atomic(t, path, EVALS)
        print(version, flush=True)
""")


def test_killed_writer_never_leaves_a_torn_file(tmp_path):
    target = tmp_path / "evals.parquet"
    seen_versions = set()
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete write happened
        time.sleep(0.05 + 0.07 * attempt)  # land the kill at different points of a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        table = pq.read_table(target)  # must parse: never truncated
        assert table.num_rows == ROWS
        values = set(table.column("value").to_pylist())
        assert len(values) == 1, "rows of two versions in one file"
        seen_versions |= values
    # The killed writers' temp files, as the sweep of the next write removes them once stale.
    leftovers = sweep_stale_temps(target, written_before=time.time() + 1)
    assert not list(tmp_path.glob(f"*{TMP_MARK}*"))
    assert all(TMP_MARK in p.name for p in leftovers)
    assert len(seen_versions) >= 2  # the kills did land while it kept writing new versions


def test_invalid_table_is_refused_and_old_file_kept(tmp_path):
    path = tmp_path / "e.parquet"
    good = pa.table({"round": pa.array([0], pa.int32()), "metric": ["gold"], "value": [0.5]})
    write_parquet_atomic(good, path, EVALS)
    bad = pa.table({"round": pa.array([0, 0], pa.int32()), "metric": ["gold", "gold"],
                    "value": [0.1, 0.2]})
    with pytest.raises(SchemaError, match="duplicate"):
        write_parquet_atomic(bad, path, EVALS)
    assert pq.read_table(path).to_pylist() == [{"round": 0, "metric": "gold", "value": 0.5}]
    assert not list(tmp_path.glob(f"*{TMP_MARK}*"))


def test_two_writers_with_one_pid_do_not_share_a_temporary_file(tmp_path):
    """Writers that share a pid (threads of one process; containers on different machines
    writing to one shared file system, each its own pid 1) write the same target with
    overlapping lifetimes: each commits a complete file of its own and none fails. With the
    pid alone in the temporary name the second truncated the first's file, and the first's
    rename left the second nothing to commit (FileNotFoundError)."""
    path = tmp_path / "evals.parquet"

    def version(v: int) -> pa.Table:
        return pa.table({"round": pa.array(range(1000), pa.int32()),
                         "metric": pa.array([f"m{v}"] * 1000),
                         "value": pa.array([float(v)] * 1000)})

    with parquet_writer_atomic(path, EVALS) as first:
        first(version(1))
        with parquet_writer_atomic(path, EVALS) as second:
            second(version(2))
        assert set(pq.read_table(path).column("value").to_pylist()) == {2.0}
    table = pq.read_table(path)  # the first commits last: its version, whole
    assert table.num_rows == 1000 and set(table.column("value").to_pylist()) == {1.0}
    assert not list(tmp_path.glob(f"*{TMP_MARK}*"))
