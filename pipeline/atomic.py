"""Crash-safe file writes: a reader sees the old complete file or the new one, never half.

The data goes to a temporary file in the same directory, is fsynced, then renamed over the
target with ``os.replace`` (atomic on POSIX), and the directory is fsynced so the rename
itself survives a power cut. Temporary names carry the pid and a random token, so two
writers never collide, and the next write of a target removes what a killed writer left
(``sweep_stale_temps``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.schema import Table, validate

TMP_MARK = ".tmp-"


# A temporary file nobody has written for this long belongs to a writer that was killed
# (a live one writes far more often), and the next write of the same target removes it.
STALE_TEMP_S = 3600.0


def sweep_stale_temps(path: Path, written_before: float | None = None) -> list[Path]:
    """Remove the temporary files of ``path`` (``PATH.tmp-*``, a DuckDB log beside one too)
    last written before ``written_before`` (a file time; default STALE_TEMP_S ago); return
    them. A fresh one may be another live writer's and is left alone."""
    removed = []
    cutoff = time.time() - STALE_TEMP_S if written_before is None else written_before
    for p in Path(path).parent.glob(f"{Path(path).name}{TMP_MARK}*"):
        with contextlib.suppress(FileNotFoundError):
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def temp_path(path: Path) -> Path:
    """A temporary name beside ``path`` that no other writer picks. The pid alone is not
    unique: threads of one process share it, and so do containers on different machines
    writing to one shared file system (each has its own pid 1)."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_parquet_atomic(table: pa.Table, path: Path, spec: Table) -> Path:
    """Validate against ``spec`` and write ``path`` atomically. Returns the path."""
    return write_table_atomic(validate(table, spec, where=str(path)), path)


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``path`` atomically, unchecked: for files of other tools' formats (exports);
    the store's own tables go through ``write_parquet_atomic``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Fill the yielded ``TARGET.tmp`` directory; on success it replaces ``TARGET``.

    The new tree is fsynced, then swapped with the old one in one atomic step
    (``renameat2(RENAME_EXCHANGE)`` on Linux), so a reader always finds a complete
    directory at TARGET, old or new; the old tree is removed after. Where the exchange is
    not available the old tree is first moved aside to ``TARGET.old`` (restored by the next
    attempt if a crash lands between the two renames). A save that raises removes its
    ``.tmp``; a killed writer leaves it (cleared by the next attempt), never a half-saved
    model.
    """
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():
        os.replace(old, target)  # a crash between the fallback's two renames
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        # A failed save (a full disk, most likely) frees what it wrote at once.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        if _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the old tree
            _fsync_dir(target.parent)
            return
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def read_parquet_checked(path: Path, spec: Table) -> pa.Table:
    """Read a file written by this project and validate it on the way in."""
    return validate(pq.read_table(path), spec, where=str(path))


@contextlib.contextmanager
def parquet_writer_atomic(path: Path, spec: Table) -> Iterator:
    """Stream tables into one Parquet file ``path``, atomically: yields ``write(table)``.

    Each table is validated against ``spec`` and written as it comes (one or more row
    groups), so a large output never has to be held in memory; the file replaces ``path``
    only when the ``with`` block ends without an error, and an empty stream writes an empty
    file with the schema. Key uniqueness is checked within each table: the caller passes
    tables with disjoint keys (the ranking stage writes one batch of whole groups at a time).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = temp_path(path)
    writer = None

    def write(table: pa.Table) -> None:
        table = validate(table, spec, where=str(path))
        if table.num_rows:
            writer.write_table(table)

    try:
        # Inside the try: on a full disk the constructor creates the file, then raises.
        writer = pq.ParquetWriter(tmp, spec.arrow_schema, compression="zstd")
        yield write
        writer.close()
        _commit(tmp, path)
    finally:
        if writer is not None:
            writer.close()  # a second close is a no-op
        tmp.unlink(missing_ok=True)
