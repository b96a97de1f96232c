"""A worker process for the lease tests: ``python -m tests.lease_worker MODE DIR ...``.

race DIR N GO SLEEP  wait for the file GO, then run the fleet loop over outputs 0..N-1 in
                     DIR; each job appends "name owner" to DIR/record.txt, sleeps, writes
                     its output atomically.
hold DIR TTL         claim DIR/out-0 and hold it (heartbeat running) until killed; prints
                     the owner id once the lease is held.
judge DIR GO         wait for GO, then judge round 0 of the workdir DIR as one fleet worker
                     with the verifier and a journaled stand-in for an LLM judge.
grab DIR TTL GO N    wait for GO, try once to claim each of DIR/out-0..N-1 (their leases
                     expired); print "I SLOT" for each won, and hold what it won.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.fleet import Lazy, ShardJob, fleet_log, run_claimed
from pipeline.fleet_jobs import JudgeJob, judging_jobs
from pipeline.judging.groups import judgment_row
from pipeline.judging.sources import SourceSpec
from pipeline.judging.verifier import VerifierJudge
from pipeline.leases import new_owner_id, try_claim


def output(d: Path, i: int) -> Path:
    return d / f"out-{i}"


def _wait_for(go: Path) -> None:
    while not go.exists():
        time.sleep(0.005)


def race(d: Path, n: int, go: Path, sleep_s: float) -> None:
    owner = new_owner_id()

    def job(i: int, check) -> None:
        fd = os.open(d / "record.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{i} {owner}\n".encode())
        os.close(fd)
        time.sleep(sleep_s)
        check()
        write_text_atomic(f"{i}\n", output(d, i))

    jobs = [ShardJob(output(d, i), lambda check, i=i: job(i, check)) for i in range(n)]
    (d / f"ready-{os.getpid()}").touch()
    _wait_for(go)
    report = run_claimed(jobs, owner, ttl_s=5.0, log=d / f"log-{owner}.jsonl", poll_s=0.05)
    print(len(report.done), flush=True)


def hold(d: Path, ttl_s: float) -> None:
    lease = try_claim(output(d, 0), new_owner_id(), ttl_s)
    assert lease is not None, "out-0 was not claimable"
    print(lease.owner, flush=True)
    while True:
        time.sleep(60)


def grab(d: Path, ttl_s: float, go: Path, n: int) -> None:
    owner = new_owner_id()
    (d / f"ready-{os.getpid()}").touch()
    _wait_for(go)
    won = []
    for i in range(n):
        lease = try_claim(output(d, i), owner, ttl_s)
        if lease is not None:
            lease._stop_heartbeat()  # hundreds of leases: held by their ttl, no threads
            won.append(f"{i} {lease.slot}")
    print("\n".join(won), flush=True)


class SlowJournaledJudge:
    """Stands in for the LLM judge (an external service): yields each group's rows as it
    finishes, a little later each time, like requests coming back."""

    source = "llm:stand-in"

    def judge_groups(self, groups):
        for g in groups:
            time.sleep(0.02)
            yield g, [judgment_row(g, i, self.source, "score", 0, float(i))
                      for i in range(g.k)]


def judge(d: Path, go: Path) -> None:
    verifier = VerifierJudge("sort_digits")
    specs = [JudgeJob(SourceSpec(verifier.source, "verifier", "v1"), Lazy(lambda: verifier.judge)),
             JudgeJob(SourceSpec(SlowJournaledJudge.source, "llm", "j1"),
                      Lazy(SlowJournaledJudge), journaled=True)]
    jobs = judging_jobs(d, 0, specs)
    owner = new_owner_id()
    (d / f"ready-{os.getpid()}").touch()
    _wait_for(go)
    report = run_claimed(jobs, owner, ttl_s=5.0, log=fleet_log(d, 0, "judge", owner),
                         poll_s=0.05)
    print(len(report.done), flush=True)


if __name__ == "__main__":
    mode, directory, *rest = sys.argv[1:]
    d = Path(directory)
    if mode == "race":
        race(d, int(rest[0]), Path(rest[1]), float(rest[2]))
    elif mode == "hold":
        hold(d, float(rest[0]))
    elif mode == "judge":
        judge(d, Path(rest[0]))
    elif mode == "grab":
        grab(d, float(rest[0]), Path(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
