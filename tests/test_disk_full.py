"""A full disk, for real (a small tmpfs): the errors each library raises are recognised as
out of space, and a command that hits one ends with one line and exit 1, keeping the old
catalog and leaving nothing half-built behind. The mid-round case, with the resume, is in
test_generation.py."""

from __future__ import annotations

import contextlib
import errno
import os
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import cli
from flows.cli import _disk_full, main
from pipeline.atomic import STALE_TEMP_S, TMP_MARK, parquet_writer_atomic, write_parquet_atomic
from pipeline.catalog import rebuild
from pipeline.schema import EVALS
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
    # A message without the C library's text: the errno alone decides.
    assert _disk_full(OSError(getattr(errno, code), "write failed", "/data/x.parquet"))
    assert _disk_full(OSError(errno.EIO, "write failed", "/data/x.parquet")) is None


def _dispatch_raising(monkeypatch, after_enospc: BaseException) -> None:
    """The command (whatever it is) fills the disk, then ``after_enospc`` is raised while
    that is handled: what main reports is the point here, not the command."""
    def dispatch(args):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.parquet")
        except OSError:
            raise after_enospc from None

    monkeypatch.setattr(cli, "_dispatch", dispatch)


def test_a_sigterm_during_the_clean_up_after_a_full_disk_is_still_the_stop(monkeypatch,
                                                                           tmp_path):
    _dispatch_raising(monkeypatch, SystemExit(143))
    with pytest.raises(SystemExit) as stopped:
        main(["db", "rebuild", "--workdir", str(tmp_path)])
    assert stopped.value.code == 143


def test_an_error_while_handling_a_full_disk_is_shown_not_hidden(monkeypatch, tmp_path,
                                                                capsys):
    _dispatch_raising(monkeypatch, KeyError("shard"))
    assert main(["db", "rebuild", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("grpo db: error: no space left on the device holding "
                             "/data/x.parquet")
    assert err[1] == "grpo db: then, while handling it: KeyError: 'shard'"


def test_a_killed_writers_old_temp_file_goes_with_the_next_write_a_fresh_one_stays(tmp_path):
    target = tmp_path / "evals.parquet"
    stale = tmp_path / f"evals.parquet{TMP_MARK}7-dead"
    live = tmp_path / f"evals.parquet{TMP_MARK}8-live"  # another writer, mid-write
    other = tmp_path / f"other.parquet{TMP_MARK}7-dead"  # another target's
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_parquet_atomic(pa.table({"round": pa.array([0], pa.int32()), "metric": ["gold"],
                                   "value": [0.5]}), target, EVALS)
    assert not stale.exists() and live.exists() and other.exists()


def test_a_streamed_write_that_fills_the_disk_leaves_no_temp_file(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "64k"):
        _fill(disk)
        with pytest.raises(OSError) as raised, \
                parquet_writer_atomic(disk / "evals.parquet", EVALS) as write:
            write(pa.table({"round": pa.array(range(10_000), pa.int32()),
                            "metric": ["m"] * 10_000, "value": [0.5] * 10_000}))
        assert _disk_full(raised.value) is not None
        assert sorted(p.name for p in disk.iterdir()) == ["ballast"]


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


def test_a_lease_rewrite_on_a_full_disk_leaves_no_temp_file(tmp_path):
    """The heartbeat's renew and the release's expiry both rewrite the lease through a
    temp file; on a full disk the write fails and the temp file must not stay (it used to,
    empty, beside every lease the failing worker held)."""
    from pipeline.leases import try_claim

    disk = tmp_path / "disk"
    with small_disk(disk, "64k"):
        lease = try_claim(disk / "shard-00000.parquet", "worker-a", ttl_s=600)
        assert lease is not None
        _fill(disk)
        with pytest.raises(OSError) as raised:
            lease.renew()
        assert _disk_full(raised.value) is raised.value
        with pytest.raises(OSError):
            lease.release(done=False)
        assert sorted(p.name for p in disk.iterdir()) == ["ballast", "shard-00000.parquet.lease-0"]


CHECKPOINT_ON = """
import json, sys, torch
from pathlib import Path
from accelerate import Accelerator
from trainers.checkpoints import Position, save_checkpoint
acc = Accelerator(cpu=True)
model = torch.nn.Linear(100, 100)
model, opt = acc.prepare(model, torch.optim.AdamW(model.parameters()))
model(torch.randn(2, 100)).sum().backward()
opt.step()  # the optimizer's state: twice the model's size
try:
    save_checkpoint(acc, Path(sys.argv[1]), Position(step=1), keep=2)
    print(json.dumps({"raised": None}))
except Exception as err:
    from flows.cli import _disk_full
    print(json.dumps({"raised": type(err).__name__, "errno": getattr(err, "errno", None),
                      "disk_full": _disk_full(err) is not None,
                      "cause": type(err.__cause__).__name__}))
"""


def test_a_checkpoint_that_fills_the_disk_says_so(tmp_path):
    """The model fits, the optimizer's state does not: torch.save's bare RuntimeError
    ('unexpected pos ...') becomes an OSError(ENOSPC) the CLI reports as a full disk, and
    the half-written checkpoint is gone. On a disk with room, the same save succeeds."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def save(where) -> dict:
        done = subprocess.run([sys.executable, "-c", CHECKPOINT_ON, str(where)], cwd=root,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    disk = tmp_path / "disk"
    with small_disk(disk, "100k"):
        record = save(disk / "ckpts")
        assert record == {"raised": "OSError", "errno": errno.ENOSPC, "disk_full": True,
                          "cause": "RuntimeError"}
        assert list((disk / "ckpts").iterdir()) == []
    assert save(tmp_path / "roomy") == {"raised": None}
    assert (tmp_path / "roomy" / "step-0000001" / "position.json").exists()
