"""Claiming a shard across processes and machines with a lease file beside its output.

Several workers (processes, or machines sharing the workdir's storage) may work through the
same round. A worker claims a shard by creating a lease file beside the shard's output
(``shard-00003-HASH.parquet.lease-0``) with ``O_CREAT | O_EXCL``: of two workers racing for
it, exactly one creates the file. The lease holds the owner's id, host, pid and an expiry
(wall clock); a heartbeat thread pushes the expiry forward while the shard is worked on,
and the lease is removed once the output has been written (atomically, as every output is).

A worker that dies stops renewing; once its lease has expired (no heartbeat for
``ttl_s``) another worker takes the shard over by creating the *next* lease file,
``...lease-1``, again with ``O_EXCL``. Numbering the leases makes takeover race-free with
nothing but exclusive creation: two workers that both judged lease n expired both try to
create lease n+1, and one of them fails. (Renaming the stale file away would not be: the
slower of two takers could rename away the fresh lease the faster one just made.) The
current lease of a shard is its highest-numbered file; an owner that finds a higher one has
lost the shard and must not write it. A worker that gives a shard up without finishing it
marks its own lease expired rather than deleting it, so lease numbers are never reused
while the output is missing.

A finished shard (its output exists) is never claimed: the output is checked before and
again after the lease is created, so a shard finished between the two is released at once.

Clocks: expiry is compared with the reader's wall clock, so machines sharing a workdir need
clocks in sync to well within ``ttl_s`` (NTP does this). Lease files are not fsynced: after
a power cut a lost lease only makes its shard claimable again, which is what a dead owner
needs anyway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

LEASE_MARK = ".lease-"


class LeaseLost(RuntimeError):
    """Another worker took the shard over (this one looked dead); do not write its output."""


def new_owner_id() -> str:
    """A worker id unique across machines and restarts: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def lease_path(output: Path, slot: int) -> Path:
    return output.with_name(f"{output.name}{LEASE_MARK}{slot}")


def lease_slots(output: Path) -> list[int]:
    """The lease numbers present beside ``output``, ascending."""
    pattern = re.compile(re.escape(output.name + LEASE_MARK) + r"(\d+)$")
    try:
        names = os.listdir(output.parent)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := pattern.match(n)))


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says (or, for a file caught mid-write, what its age implies)."""

    output: Path
    slot: int
    owner: str
    host: str
    pid: int
    acquired_at: float
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires_at


def read_lease(output: Path, slot: int, ttl_s: float) -> LeaseRecord | None:
    """The lease in ``slot``, or None if there is no such file.

    A file that does not parse was caught between its creation and its first write; it
    counts as held until ``ttl_s`` after it was last modified."""
    path = lease_path(output, slot)
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        d = json.loads(text)
        return LeaseRecord(output, slot, d["owner"], d["host"], int(d["pid"]),
                           float(d["acquired_at"]), float(d["expires_at"]))
    except (ValueError, KeyError, TypeError):
        return LeaseRecord(output, slot, "?", "?", -1, mtime, mtime + ttl_s)


def current_lease(output: Path, ttl_s: float) -> LeaseRecord | None:
    """The highest-numbered lease of ``output`` (the one that counts), if any."""
    slots = lease_slots(output)
    return read_lease(output, slots[-1], ttl_s) if slots else None


def claimable(output: Path, ttl_s: float) -> bool:
    """True if ``output`` is missing and nobody holds a live lease on it (a cheap look; the
    claim itself decides)."""
    if output.exists():
        return False
    lease = current_lease(output, ttl_s)
    return lease is None or lease.expired()


class Lease:
    """A held claim on one output. Use ``try_claim`` to get one; release it when done."""

    def __init__(self, output: Path, slot: int, owner: str, ttl_s: float,
                 previous: LeaseRecord | None) -> None:
        self.output = output
        self.slot = slot
        self.owner = owner
        self.ttl_s = ttl_s
        self.previous = previous  # the expired lease this one took over, if any
        self.acquired_at = time.time()
        self.expires_at = self.acquired_at + ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    @property
    def path(self) -> Path:
        return lease_path(self.output, self.slot)

    def content(self, expires_at: float) -> bytes:
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
            "slot": self.slot, "acquired_at": self.acquired_at, "expires_at": expires_at,
            "ttl_s": self.ttl_s,
        }).encode()

    # -- keeping it ---------------------------------------------------------------------
    def superseded(self) -> bool:
        """True once a later lease exists or ours is gone: someone took the shard over."""
        return lease_path(self.output, self.slot + 1).exists() or not self.path.exists()

    def check(self) -> None:
        """Raise ``LeaseLost`` if the shard is no longer ours; call before writing output."""
        if self.lost.is_set() or self.superseded():
            self.lost.set()
            raise LeaseLost(f"{self.output.name}: lease {self.slot} of {self.owner} was taken "
                            "over (no heartbeat within the lease's ttl)")

    def renew(self) -> None:
        """Push the expiry forward. Only this owner ever writes this lease file, so the
        rewrite (temp file + rename, never seen half-written) cannot clobber another's."""
        if self.superseded():
            self.lost.set()
            return
        expires_at = time.time() + self.ttl_s
        self._write_expiry(expires_at)
        self.expires_at = expires_at

    def _write_expiry(self, expires_at: float) -> None:
        """Rewrite this lease with ``expires_at`` (temp file + rename, never seen
        half-written). A failed write (a full disk) leaves no temp file behind."""
        tmp = self.path.with_name(f"{self.path.name}.renew-{self.owner}")
        try:
            tmp.write_bytes(self.content(expires_at))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)

    def start_heartbeat(self) -> None:
        """Renew every third of the ttl from a daemon thread, so two missed beats in a row
        still leave the lease alive."""
        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except OSError:  # shared storage hiccup: try again at the next beat
                    continue
                if self.lost.is_set():
                    return

        self._thread = threading.Thread(target=beat, name=f"lease-{self.output.name}",
                                        daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- giving it back -----------------------------------------------------------------
    def release(self, done: bool) -> None:
        """Stop the heartbeat. ``done`` (the output exists): remove this lease and the
        expired ones before it. Not done: mark this lease expired so the next worker may
        take the shard at once (deleting it could let a lease number be reused)."""
        if self._released:
            return
        self._released = True
        self._stop_heartbeat()
        if done:
            for slot in range(self.slot + 1):
                lease_path(self.output, slot).unlink(missing_ok=True)
        elif not self.superseded():
            self._write_expiry(0.0)  # if this fails, the lease lapses after its ttl

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release(done=self.output.exists())


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def try_claim(output: Path, owner: str, ttl_s: float) -> Lease | None:
    """Claim ``output`` for ``owner``: a held ``Lease`` with its heartbeat running, or None
    if the output exists, a live lease holds it, or another worker won the race."""
    output = Path(output)
    if output.exists():
        return None
    slots = lease_slots(output)
    previous = None
    if slots:
        previous = read_lease(output, slots[-1], ttl_s)
        if previous is None or not previous.expired():
            return None  # held (or released this instant: the next look sees the output)
    lease = Lease(output, previous.slot + 1 if previous else 0, owner, ttl_s, previous)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not _create_exclusive(lease.path, lease.content(lease.expires_at)):
        return None
    if output.exists():  # finished between our first look and the claim
        lease.release(done=True)
        return None
    lease.start_heartbeat()
    return lease


def sweep_finished_leases(outputs: list[Path]) -> int:
    """Remove lease files left beside outputs that exist (an owner killed between writing
    its output and releasing). Returns how many were removed."""
    removed = 0
    for output in outputs:
        if output.exists():
            for path in output.parent.glob(f"{glob_escape(output.name)}{LEASE_MARK}*"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
