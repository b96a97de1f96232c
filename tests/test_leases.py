"""Shard leases and the fleet loop, with real processes racing and a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from pipeline.atomic import write_text_atomic
from pipeline.fleet import ShardJob, run_claimed
from pipeline.leases import (
    LeaseLost,
    claimable,
    current_lease,
    lease_path,
    lease_slots,
    new_owner_id,
    read_lease,
    try_claim,
)
from tests.racing import no_worker_outlives_its_test, race, start_worker  # noqa: F401


def test_two_processes_race_every_shard_done_exactly_once(tmp_path):
    n = 300
    done = [int(out) for out in race(tmp_path, 2, "race", str(tmp_path), str(n),
                                     str(tmp_path / "go"), "0")]
    record = (tmp_path / "record.txt").read_text().split("\n")[:-1]
    started = Counter(line.split()[0] for line in record)
    assert started == Counter({str(i): 1 for i in range(n)}), "a shard ran twice or never"
    assert sum(done) == n and min(done) > 0, f"both workers must take part: {done}"
    assert all((tmp_path / f"out-{i}").read_text() == f"{i}\n" for i in range(n))
    assert not list(tmp_path.glob("out-*.lease-*")), "finished shards keep no lease"
    # Each worker's log names the shards it finished; together they cover each once.
    logged = [json.loads(line) for f in tmp_path.glob("log-*.jsonl")
              for line in f.read_text().splitlines()]
    assert Counter(e["output"] for e in logged if e["event"] == "done") == \
        Counter({f"out-{i}": 1 for i in range(n)})


def test_sigkilled_owner_lease_expires_and_is_taken_over(tmp_path):
    ttl = 2.0
    out = tmp_path / "out-0"
    holder = start_worker("hold", str(tmp_path), str(ttl))
    owner = holder.stdout.readline().strip()
    assert owner, holder.stderr.read()
    first = read_lease(out, 0, ttl)
    assert first.owner == owner and first.pid == holder.pid
    # The heartbeat keeps it alive past its first expiry; nobody can claim it meanwhile.
    time.sleep(ttl * 1.5)
    assert first.expired() and not current_lease(out, ttl).expired()
    assert try_claim(out, new_owner_id(), ttl) is None

    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    dead = current_lease(out, ttl)
    assert try_claim(out, new_owner_id(), ttl) is None, "taken before the lease expired"
    # Another worker's loop waits for the expiry, then takes the shard over and finishes it.
    me = new_owner_id()
    report = run_claimed([ShardJob(out, lambda check: write_text_atomic("x", out))], me, ttl,
                         poll_s=0.1)
    assert report.done == ["out-0"]
    [taken] = report.took_over
    assert taken["from"] == owner and taken["expired_at"] == dead.expires_at
    assert taken["claimed_at"] > dead.expires_at
    assert out.read_text() == "x" and lease_slots(out) == []


def test_takeover_races_have_exactly_one_winner(tmp_path):
    """Four processes try to take over the same 300 expired leases at the same moment."""
    ttl, n = 60.0, 300
    for i in range(n):
        stale = try_claim(tmp_path / f"out-{i}", "dead-owner", ttl)
        stale._stop_heartbeat()
        stale.release(done=False)  # marked expired, as a dead owner's lease ends up
    won = [out.splitlines() for out in race(tmp_path, 4, "grab", str(tmp_path), str(ttl),
                                            str(tmp_path / "go"), str(n))]
    wins = Counter(line.split()[0] for lines in won for line in lines)
    assert wins == Counter({str(i): 1 for i in range(n)}), "a lease was taken over twice"
    assert all(line.split()[1] == "1" for lines in won for line in lines)
    assert sum(1 for lines in won if lines) >= 2, "the processes did not actually race"


def test_finished_output_is_never_claimed(tmp_path):
    out = tmp_path / "out-0"
    write_text_atomic("done", out)
    assert try_claim(out, new_owner_id(), 5) is None
    assert not lease_path(out, 0).exists()
    ran = []
    report = run_claimed([ShardJob(out, lambda check: ran.append(1))], new_owner_id(), 5)
    assert ran == [] and report.done == [] and report.finished_elsewhere == 1


def test_owner_that_stalled_past_its_lease_loses_it_and_does_not_write(tmp_path):
    ttl = 1.0
    out = tmp_path / "out-0"
    slow = try_claim(out, "slow", ttl)
    slow._stop_heartbeat()  # a stalled owner: alive, but no heartbeat
    time.sleep(ttl + 0.2)
    fast = try_claim(out, "fast", ttl)
    assert fast is not None and fast.slot == 1 and fast.previous.owner == "slow"
    with pytest.raises(LeaseLost):
        slow.check()
    slow.release(done=False)  # superseded: must leave the new owner's lease alone
    assert read_lease(out, 1, ttl).owner == "fast" and not read_lease(out, 1, ttl).expired()
    write_text_atomic("fast", out)
    fast.release(done=True)
    assert out.read_text() == "fast" and lease_slots(out) == []


def test_a_lease_lost_mid_job_is_reported_and_not_written(tmp_path):
    ttl = 1.0
    out = tmp_path / "out-0"

    def job(check):
        # While this worker is stalled, another takes the shard over.
        lease = current_lease(out, ttl)
        os.utime(lease_path(out, lease.slot))
        lease_path(out, lease.slot + 1).write_text("{}")
        check()
        write_text_atomic("stale", out)

    report = run_claimed([ShardJob(out, job)], "stalled", ttl, wait_for_others=False)
    assert report.lost == ["out-0"] and report.done == [] and not out.exists()


def test_given_up_shard_is_claimable_at_once_and_numbers_are_not_reused(tmp_path):
    out = tmp_path / "out-0"
    first = try_claim(out, "a", 60)
    ran = []
    report = run_claimed([ShardJob(out, ran.append)], "b", 60, wait_for_others=False)
    assert ran == [] and report.done == []  # held by a live lease
    first.release(done=False)
    assert claimable(out, 60)
    with pytest.raises(ZeroDivisionError):  # a failing job gives its lease back at once
        run_claimed([ShardJob(out, lambda check: 1 / 0)], "b", 60)
    assert lease_slots(out) == [0, 1] and read_lease(out, 1, 60).expired()
    again = try_claim(out, "c", 60)
    assert again.slot == 2
    again.release(done=False)


def test_a_lease_caught_mid_write_counts_as_held_until_ttl_after_it(tmp_path):
    out = tmp_path / "out-0"
    lease_path(out, 0).write_text("")  # created, content not written yet
    assert not claimable(out, 60)
    old = time.time() - 120
    os.utime(lease_path(out, 0), (old, old))
    assert claimable(out, 60)
    lease = try_claim(out, "next", 60)
    assert lease.slot == 1
    lease.release(done=False)


def test_a_worker_paused_after_its_claim_leaves_the_new_owners_temp_file(tmp_path,
                                                                         monkeypatch):
    """The temp-file sweep after a claim removes what a killed owner left, but a worker
    paused between its claim and that sweep, whose lease lapsed and was taken over, must
    not delete the new owner's file mid-write; it reports the shard lost."""
    import pipeline.fleet as fleet
    from pipeline.atomic import TMP_MARK

    ttl = 0.5
    out = tmp_path / "out-0"
    dead = tmp_path / f"out-0{TMP_MARK}killed-owner"
    dead.write_text("half")
    os.utime(dead, (time.time() - 60, time.time() - 60))
    report = run_claimed([ShardJob(out, lambda check: write_text_atomic("done", out))],
                         "first", ttl, wait_for_others=False)
    assert report.done == ["out-0"] and out.read_text() == "done" and not dead.exists()

    out = tmp_path / "out-1"
    theirs = tmp_path / f"out-1{TMP_MARK}new-owner"
    real_claim = fleet.try_claim
    takers = []

    def claim_then_pause(output, owner, ttl_s):
        lease = real_claim(output, owner, ttl_s)
        lease._stop_heartbeat()
        time.sleep(ttl_s + 0.2)  # paused past the lease's ttl
        taker = real_claim(output, "new-owner", ttl_s)
        assert taker is not None and taker.slot == lease.slot + 1
        takers.append(taker)
        theirs.write_text("being written")
        return lease

    monkeypatch.setattr(fleet, "try_claim", claim_then_pause)
    ran = []
    report = run_claimed([ShardJob(out, lambda check: ran.append(1))], "paused", ttl,
                         wait_for_others=False)
    assert report.lost == ["out-1"] and ran == []
    assert theirs.read_text() == "being written" and not out.exists()
    assert current_lease(out, ttl).owner == "new-owner"
    takers[0].release(done=False)
    monkeypatch.undo()

    # Held all along: a file stamped after the lease file (someone else's, written while
    # this sweep runs) is left; one from before the claim goes.
    out = tmp_path / "out-2"
    lease = try_claim(out, "holder", 30.0)
    try:
        stamp = lease.path.stat().st_mtime
        old, new = (tmp_path / f"out-2{TMP_MARK}{name}" for name in ("old", "new"))
        for path, at in ((old, stamp - 5), (new, stamp + 5)):
            path.write_text("x")
            os.utime(path, (at, at))
        fleet._sweep_temp_files_of(out, lease)
        assert not old.exists() and new.exists()
    finally:
        lease.release(done=False)
