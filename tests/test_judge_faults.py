"""The LLM judge against a real misbehaving HTTP server on 127.0.0.1: every item ends
scored or failed, failures keep their reason and raw text, answers map back to the right
candidates, and a resumed run sends nothing that already finished."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.judging import stage
from pipeline.judging.llm import JudgeClient, LLMJudge, RequestBudget
from tests.fake_judge_server import FakeJudge, honest_scores
from tests.judge_helpers import write_round

MODES = ["ok", "ratelimited", "error500", "flaky500", "reset", "hang", "prose", "truncated",
         "refusal", "wrongcount", "outofrange", "ok"]
EXPECTED_ERROR = {"error500": "HTTP 500", "reset": "connection error", "hang": "timeout",
                  "prose": "no complete JSON", "truncated": "no complete JSON",
                  "refusal": "refusal", "wrongcount": "wrong number of scores",
                  "outofrange": "out of range"}


FP = "fp0"
USER_TURN = re.compile(r'<turn role="user">S (\d+)=')


def _judge(server: FakeJudge, cap: int = 10_000, mode: str = "listwise", api="completions"):
    cfg = load_config(overrides={
        "llm_judge.base_url": server.url, "llm_judge.model": "fake", "llm_judge.mode": mode,
        "llm_judge.api": api, "llm_judge.max_attempts": 3, "llm_judge.timeout_s": 1.0,
        "llm_judge.max_backoff_s": 1.0, "llm_judge.concurrency": 4,
        "llm_judge.structured": "none", "llm_judge.max_requests": cap}).llm_judge
    return LLMJudge(cfg, JudgeClient(cfg, server.url, "fake", RequestBudget(cap)))


def _rows(paths):
    return [r for p in paths for r in pq.read_table(p).to_pylist()]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_every_fault_ends_scored_or_failed(tmp_path, api):
    shards = write_round(tmp_path, MODES, k=4, per_shard=4)
    with FakeJudge() as server:
        judge = _judge(server, api=api)
        results = [stage.judge_shard_journaled(tmp_path, 0, s, judge.source, FP, judge)
                   for s in shards]
        assert all(r.complete for r in results)
        rows = _rows(stage.judgment_path(tmp_path, 0, judge.source, FP, s) for s in shards)
        items = [r for r in rows if r["view"] >= 0]
        assert len(items) == len(MODES) * 4 * 2  # k candidates x 2 views
        assert {r["status"] for r in items} == {"scored", "failed"}
        by_mode = {}
        for r in items:
            mode = MODES[int(r["group_id"].split(":p")[1])]
            by_mode.setdefault(mode, []).append(r)
        candidates = {r["candidate_id"]: r["text"] for r in _rows(shards)}
        for mode, rs in by_mode.items():
            if mode in EXPECTED_ERROR:
                assert all(r["status"] == "failed" and r["value"] is None for r in rs), mode
                assert all(EXPECTED_ERROR[mode] in r["error"] for r in rs), (mode, rs[0])
            else:  # ok, rate limited once, failed once: scored, mapped to the right candidate
                assert all(r["status"] == "scored" for r in rs), (mode, rs[0]["error"])
                for r in rs:
                    assert r["value"] == honest_scores([candidates[r["candidate_id"]]])[0]
        # Parse failures keep the raw text for the audit.
        assert all(r["raw"] for r in by_mode["prose"] + by_mode["refusal"])
        # Reconciled verdicts: failed groups have no usable view; good ones follow the truth.
        reconciled = [r for r in rows if r["view"] == -1]
        assert all(r["status"] == "failed" for r in reconciled
                   if MODES[int(r["group_id"].split(":p")[1])] in EXPECTED_ERROR)
        # Retry-After was honoured: the retry came no sooner than the server asked.
        times = [q["t"] for q in server.requests if q["mode"] == "ratelimited"]
        first_retry_gap = min(b - a for a, b in zip(sorted(times), sorted(times)[1:],
                                                    strict=False) if b - a > 0.01)
        assert first_retry_gap >= 0.25
        # Client errors are not retried forever; server errors get max_attempts tries.
        assert sum(q["mode"] == "error500" for q in server.requests) == 2 * 3


def test_request_cap_then_resume_sends_nothing_twice(tmp_path):
    modes = ["ok"] * 10
    shards = write_round(tmp_path, modes, k=3, per_shard=10)
    target = stage.judgment_path(tmp_path, 0, "llm:judge", FP, shards[0])
    journal = stage.Journal(target.with_name(target.stem + ".journal.jsonl"))
    with FakeJudge() as server:
        capped = _judge(server, cap=7)  # 2 views per group: at most 3 groups finish
        res = stage.judge_shard_journaled(tmp_path, 0, shards[0], capped.source, FP, capped)
        assert not res.complete and 1 <= res.groups_done < 10
        assert not target.exists()
        finished = set(journal.load())
        assert len(finished) == res.groups_done
        server.requests.clear()
        judge = _judge(server)
        assert stage.judge_shard_journaled(tmp_path, 0, shards[0], judge.source, FP,
                                           judge).complete
        # Groups in the journal were not sent again; every other group was.
        asked = {f"r000:p{int(USER_TURN.search(q['prompt']).group(1)):03d}"
                 for q in server.requests}
        assert not asked & finished
        assert asked | finished == {f"r000:p{g:03d}" for g in range(10)}
        assert not journal.path.exists()  # folded into the Parquet file
        rows = _rows([target])
        keys = [(r["candidate_id"], r["view"], r["opponent_id"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert len([r for r in rows if r["view"] >= 0]) == 10 * 3 * 2
        # A third run does nothing at all.
        server.requests.clear()
        again = stage.judge_shard_journaled(tmp_path, 0, shards[0], judge.source, FP, judge)
        assert again.skipped and not server.requests


def test_pairwise_mode_asks_both_orders_and_maps_back(tmp_path):
    shards = write_round(tmp_path, ["ok", "ok"], k=3, per_shard=2)
    with FakeJudge() as server:
        judge = _judge(server, mode="pairwise")
        stage.judge_shard_journaled(tmp_path, 0, shards[0], judge.source, FP, judge)
        assert len(server.requests) == 2 * 3 * 2  # groups x pairs x orders
        rows = _rows([stage.judgment_path(tmp_path, 0, judge.source, FP, shards[0])])
        text = {r["candidate_id"]: r["text"] for r in _rows(shards)}
        for r in rows:
            a, b = honest_scores([text[r["candidate_id"]], text[r["opponent_id"]]])
            assert r["value"] == (1.0 if a > b else 0.0 if a < b else 0.5), r


def test_inconsistent_views_become_ties(tmp_path):
    """A judge that always prefers whatever is shown first is reconciled into ties."""
    from pipeline.judging.groups import JudgeGroup

    class FirstShownWins:
        def __init__(self):
            self.budget = RequestBudget(100)

        def ask(self, prompt, constraint, seed):
            from pipeline.judging.llm import Reply

            n = prompt.count("<candidate id=")
            return Reply('{"scores": [' + ", ".join(str(9 - i) for i in range(n)) + "]}",
                         None, 1)

    cfg = load_config(overrides={"llm_judge.structured": "none"}).llm_judge
    judge = LLMJudge(cfg, FirstShownWins())
    group = JudgeGroup(0, "r000:g", "g", [{"role": "user", "content": "S 12="}], "12", {},
                       ["a", "b", "c"], ["1", "2", "3"])
    (_, rows), = list(judge.judge_groups([group]))
    reconciled = [r for r in rows if r["view"] == -1]
    assert len(reconciled) == 3 and all(r["value"] == 0.5 for r in reconciled)
