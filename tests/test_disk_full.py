"""A full disk, for real (a small tmpfs): the errors each library raises are recognised as
out of space, and a command that hits one ends with one line and exit 1, keeping the old
catalog and leaving nothing half-built behind. The mid-round case, with the resume, is in
test_generation.py."""

from __future__ import annotations

import contextlib

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import _disk_full, main
from pipeline.catalog import rebuild
from pipeline.store import catalog_path
from tests.conftest import small_disk


def _fill(path) -> None:
    """Write zeros under ``path`` until the file system is full."""
    with contextlib.suppress(OSError), open(path / "ballast", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def _raised(fn) -> BaseException:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the point is to see what each library raises
        return err
    raise AssertionError("the write did not fail")


def test_out_of_space_errors_of_each_library_are_recognised(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "64k"):
        _fill(disk)
        table = pa.table({"x": list(range(100_000))})
        errors = {
            "python": _raised(lambda: (disk / "a.txt").write_bytes(b"x" * 65536)),
            "pyarrow": _raised(lambda: pq.write_table(table, disk / "a.parquet")),
            "duckdb": _raised(lambda: duckdb.connect(str(disk / "a.duckdb")).execute(
                "CREATE TABLE t AS SELECT range AS i FROM range(100000)")),
        }
    for lib, err in errors.items():
        assert _disk_full(err) is err, (lib, repr(err))
    # Found through the chain, as when Prefect or our clean-up raises on top of it.
    try:
        try:
            raise errors["duckdb"]
        except Exception as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        assert _disk_full(outer) is errors["duckdb"]
    assert _disk_full(FileNotFoundError(2, "No such file or directory")) is None
    assert _disk_full(ValueError("k must be at least 2")) is None


def test_a_full_disk_during_a_catalog_rebuild_keeps_the_old_one(tmp_path, capsys):
    disk = tmp_path / "disk"
    with small_disk(disk, "4m"):
        workdir = disk / "wd"
        workdir.mkdir()
        rebuild(workdir)
        old = catalog_path(workdir).read_bytes()
        _fill(disk)
        assert main(["db", "rebuild", "--workdir", str(workdir)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("grpo db: error: no space left on the device holding ")
        assert "KiB free there now" in err[0] and "rerun the same command" in err[0]
        # The old catalog is whole and opens; the half-built one is gone with its log.
        assert catalog_path(workdir).read_bytes() == old
        duckdb.connect(str(catalog_path(workdir)), read_only=True).close()
        assert sorted(p.name for p in catalog_path(workdir).parent.iterdir()
                      if p.name.startswith("catalog")) == [catalog_path(workdir).name]


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_both_out_of_space_codes_count(code):
    import errno
    import os

    n = getattr(errno, code)
    assert _disk_full(OSError(n, os.strerror(n), "/data/x.parquet")) is not None


def test_a_catalog_that_does_not_fit_is_an_error_not_an_empty_catalog(tmp_path, capsys):
    """Room for part of a new catalog (it takes about 512 KiB): DuckDB's checkpoint inside
    close() failed silently, the tables stayed in its write-ahead log, and the rename left
    that behind, so the command reported success with a catalog of no tables."""
    disk = tmp_path / "disk"
    with small_disk(disk, "256k"):
        workdir = disk / "wd"
        workdir.mkdir()
        assert main(["db", "rebuild", "--workdir", str(workdir)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no space left on the device holding" in err[0], err
        assert list(workdir.iterdir()) == []


def test_a_model_save_that_fills_the_disk_keeps_the_old_model_and_frees_its_space(tmp_path):
    """A checkpoint or model directory saved through atomic_dir runs out of space halfway:
    the old directory is untouched, and the half-written one is removed at once, so the
    space it took is free again for the rerun."""
    from pipeline.atomic import atomic_dir

    disk = tmp_path / "disk"
    with small_disk(disk, "1m"):
        target = disk / "model"
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_bytes(b"old" * 1000)
        with pytest.raises(OSError) as raised, atomic_dir(target) as tmp:
            (tmp / "config.json").write_text("{}")
            with open(tmp / "weights", "wb") as fh:
                while True:
                    fh.write(b"\1" * 65536)
        assert _disk_full(raised.value) is raised.value
        assert sorted(p.name for p in disk.iterdir()) == ["model"]
        assert (target / "weights").read_bytes() == b"old" * 1000
        assert sorted(p.name for p in target.iterdir()) == ["weights"]
