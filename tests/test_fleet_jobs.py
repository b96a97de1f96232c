"""Judging shards shared by two worker processes, and a lease lost mid-shard."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from pipeline.fleet import Lazy, read_fleet_logs, run_claimed
from pipeline.fleet_jobs import JudgeJob, judging_jobs
from pipeline.judging import stage
from pipeline.judging.sources import SourceSpec
from pipeline.leases import current_lease, lease_path
from pipeline.store import round_dir, table_files
from tests.judge_helpers import write_round
from tests.lease_worker import SlowJournaledJudge
from tests.racing import no_worker_outlives_its_test, race  # noqa: F401


def test_two_processes_judge_a_round_each_judgment_once(tmp_path):
    shards = write_round(tmp_path, ["ok"] * 24, k=3, per_shard=2)
    done = [int(out) for out in race(tmp_path, 2, "judge", str(tmp_path),
                                     str(tmp_path / "go"))]
    assert sum(done) == 2 * len(shards) and min(done) > 0, done
    rows = pq.read_table(table_files(tmp_path, "judgments")).to_pylist()
    per_source = Counter((r["source"], r["candidate_id"]) for r in rows)
    assert len(per_source) == 2 * 24 * 3 and set(per_source.values()) == {1}
    logged = Counter(e["output"] for e in read_fleet_logs(tmp_path, 0, "judge")
                     if e["event"] == "done")
    assert len(logged) == 2 * len(shards) and set(logged.values()) == {1}
    judgments = round_dir(tmp_path, 0) / "judgments"
    assert not list(judgments.glob("*.journal.jsonl")) and not list(judgments.glob("*.lease-*"))


class _TakenOverAfterOneGroup(SlowJournaledJudge):
    """While this worker judges, another takes its shard over after the first group."""

    def __init__(self, target):
        self.target = target

    def judge_groups(self, groups):
        for n, item in enumerate(super().judge_groups(groups)):
            if n == 1:
                lease = current_lease(self.target, 5.0)
                lease_path(self.target, lease.slot + 1).write_text("{}")
            yield item


def test_a_journaled_shard_lost_mid_way_stops_journaling(tmp_path):
    [shard] = write_round(tmp_path, ["ok"] * 4, k=3, per_shard=4)
    target = stage.judgment_path(tmp_path, 0, SlowJournaledJudge.source, "j1", shard)
    spec = JudgeJob(SourceSpec(SlowJournaledJudge.source, "llm", "j1"),
                    Lazy(lambda: _TakenOverAfterOneGroup(target)), journaled=True)
    report = run_claimed(judging_jobs(tmp_path, 0, [spec]), "me", 5.0, wait_for_others=False)
    assert report.lost == [target.name] and report.done == [] and not target.exists()
    journal = stage.Journal(target.with_name(target.stem + ".journal.jsonl")).load()
    assert len(journal) == 1, "only the group finished before the takeover is journaled"
