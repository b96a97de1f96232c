"""One worker of a fleet: run the pending shards of a stage, claiming each by lease.

Any number of workers (processes, or machines sharing the workdir's storage) may run the
same round at once. Each goes through the shards in order, skips finished ones and those a
live worker holds, and claims the rest one at a time (``pipeline.leases``). When nothing is
left to claim it keeps watching the shards others hold until they are finished, so the
shard of a worker that died is taken over once its lease expires: the round is complete
when any surviving worker returns.

Every claim, takeover and finished shard is appended to the worker's own log,
``rounds/rNNN/_fleet/STAGE-OWNER.jsonl`` (one file per worker: appends from two machines to
one file are not atomic on shared storage), so who did what survives a killed worker.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import sweep_stale_temps
from pipeline.leases import LeaseLost, claimable, sweep_finished_leases, try_claim
from pipeline.store import round_dir

Check = Callable[[], None]  # raises LeaseLost once the shard has been taken over


@dataclass
class ShardJob:
    """One output to produce. ``run(check)`` writes ``output`` atomically and calls
    ``check`` right before writing (and may call it more often); ``prepare`` starts what the
    job needs (an engine, a model) and is called before each claim attempt, so it must be
    cheap once done (see ``Lazy``)."""

    output: Path
    run: Callable[[Check], Any]
    prepare: Callable[[], Any] | None = None


class Lazy:
    """A resource started on first use: an engine only starts if a shard is left to do."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start
        self._value: Any = None
        self.started = False

    def get(self) -> Any:
        if not self.started:
            self._value = self._start()
            self.started = True
        return self._value


@dataclass
class WorkerReport:
    owner: str
    done: list[str] = field(default_factory=list)  # outputs this worker wrote
    took_over: list[dict] = field(default_factory=list)  # expired leases it took over
    finished_elsewhere: int = 0  # outputs that were (or got) written by other workers
    incomplete: list[str] = field(default_factory=list)  # ran, but left no output (a cap)
    lost: list[str] = field(default_factory=list)  # taken over from this worker mid-shard
    waited_s: float = 0.0  # time spent watching shards other workers held
    results: list[Any] = field(default_factory=list)

    def summary(self) -> dict:
        return {"owner": self.owner, "done": len(self.done), "took_over": self.took_over,
                "finished_elsewhere": self.finished_elsewhere, "incomplete": self.incomplete,
                "lost": self.lost, "waited_s": round(self.waited_s, 1)}


def fleet_log(workdir: Path, round_: int, stage: str, owner: str) -> Path:
    return round_dir(workdir, round_) / "_fleet" / f"{stage}-{owner}.jsonl"


def read_fleet_logs(workdir: Path, round_: int, stage: str) -> list[dict]:
    """Every worker's events for a stage, in time order (a killed worker's torn last line
    is skipped)."""
    events = []
    for path in sorted((round_dir(workdir, round_) / "_fleet").glob(f"{stage}-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(events, key=lambda e: e["at"])


class _Log:
    def __init__(self, path: Path | None, owner: str) -> None:
        self.path, self.owner = path, owner
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, output: Path, **extra: Any) -> None:
        if self.path is None:
            return
        entry = {"at": time.time(), "owner": self.owner, "event": event,
                 "output": output.name, **extra}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def _sweep_temp_files_of(output: Path, lease) -> None:
    """Temporary files a killed previous owner left for this output. Only the lease holder
    may do this: a round-wide sweep would delete another live worker's file mid-write. And
    only while it still holds the lease, and only files last written before its lease file
    was: a worker paused between its claim and this sweep (a VM pause, SIGSTOP, swap) may
    have lost the shard meanwhile, and the temporary file there now is the new owner's,
    written after our lease lapsed. The lease file's own time is the reference, not this
    machine's clock: on a shared filesystem both times come from the file server."""
    lease.check()
    try:
        ours = lease.path.stat().st_mtime
    except FileNotFoundError:
        lease.check()  # gone: taken over (raises LeaseLost)
        raise
    sweep_stale_temps(output, written_before=ours)


def run_claimed(jobs: Iterable[ShardJob], owner: str, ttl_s: float, *,
                log: Path | None = None, poll_s: float | None = None,
                wait_for_others: bool = True) -> WorkerReport:
    """Run every job whose output is missing and unclaimed, claiming each by lease; then,
    if ``wait_for_others``, watch the ones other workers hold until they are finished or
    their lease expires (then take them over). A job that raises gives its lease back at
    once (marked expired) and the error propagates."""
    jobs = list(jobs)
    poll_s = poll_s if poll_s is not None else max(0.5, min(5.0, ttl_s / 4))
    report = WorkerReport(owner)
    write = _Log(log, owner)
    remaining = jobs
    while remaining:
        held_elsewhere = []
        for job in remaining:
            if job.output.exists():
                continue
            if not claimable(job.output, ttl_s):
                held_elsewhere.append(job)
                continue
            if job.prepare is not None:
                job.prepare()
            lease = try_claim(job.output, owner, ttl_s)
            if lease is None:
                held_elsewhere.append(job)
                continue
            prev = lease.previous
            if prev is not None:
                report.took_over.append({"output": job.output.name, "from": prev.owner,
                                         "expired_at": prev.expires_at,
                                         "claimed_at": lease.acquired_at})
            started = time.time()
            try:
                write("claimed", job.output, slot=lease.slot,
                      took_over_from=prev.owner if prev else None,
                      previous_expires_at=prev.expires_at if prev else None)
                _sweep_temp_files_of(job.output, lease)
                result = job.run(lease.check)
            except LeaseLost:
                lease.release(done=False)
                report.lost.append(job.output.name)
                write("lost", job.output)
                continue
            except BaseException as err:
                # Best effort: on a full disk these writes fail too, and must not hide the
                # job's own error (the lease then lapses after its ttl).
                with contextlib.suppress(OSError):
                    lease.release(done=False)
                with contextlib.suppress(OSError):
                    write("failed", job.output, error=f"{type(err).__name__}: {err}")
                raise
            finished = job.output.exists()
            lease.release(done=finished)
            if finished:
                report.done.append(job.output.name)
                report.results.append(result)
                write("done", job.output, seconds=round(time.time() - started, 3))
            else:  # e.g. the LLM judge's request cap: another worker (or run) may go on
                report.incomplete.append(job.output.name)
                write("incomplete", job.output)
        remaining = [j for j in held_elsewhere if not j.output.exists()]
        if not remaining or not wait_for_others:
            break
        waited = time.time()
        time.sleep(poll_s)
        report.waited_s += time.time() - waited
    report.finished_elsewhere = sum(
        1 for j in jobs if j.output.exists()) - len(report.done)
    sweep_finished_leases([j.output for j in jobs])
    return report
