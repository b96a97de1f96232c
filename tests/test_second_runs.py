"""Second runs and changed configs (issue: never reuse stale work, never lose any): judgments
keyed by what produced them, a capped judge that leaves a stage unfinished, explicit zero
weights, the judge journal, default rounds and the model directory swap."""

from __future__ import annotations

import json
import threading
import time

import polars as pl
import pytest

from flows.cli import main
from pipeline.atomic import atomic_dir
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.judging import stage
from pipeline.rounds import stage_done
from pipeline.store import round_dir, table_files
from tests.chat_models import build_reward_model
from tests.fake_judge_server import FakeJudge
from tests.judge_helpers import write_round
from tests.test_consensus_stage import _judgments, _scores


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    return build_reward_model(tmp_path_factory.mktemp("rm") / "helpful-rm", "qwen2", seed=1)


def _files(workdir, pattern="*.parquet"):
    return sorted(p.name for p in (round_dir(workdir, 0) / "judgments").glob(pattern))


def test_changed_judges_never_pass_off_old_verdicts(tmp_path, reward_model, prefect_harness,
                                                    capsys):
    from flows.judge import judge_flow
    from flows.rank import rank_flow

    write_round(tmp_path, ["ok"] * 4, k=3, per_shard=2)
    over = {"judging.sources": ["verifier", "reward_model"],
            "judging.reward_models": [str(reward_model)], "loop.gold": "",
            "rank.weights": ["rm:*=1", "verifier:*=1"]}
    first = judge_flow(str(tmp_path), None, 0, over, show_progress=False)
    assert first["complete"] and stage_done(tmp_path, 0, "judge")
    rm_fp = first["sources"]["rm:helpful-rm"]["fingerprint"]
    before = {p: p.stat().st_mtime_ns for p in (round_dir(tmp_path, 0) / "judgments").iterdir()
              if p.name.startswith("rm-helpful-rm")}
    assert len(before) == 2  # one file per candidates shard

    # Retrain the reward model into the same folder: a new model, so new judgments.
    original = {p.name: p.read_bytes() for p in reward_model.iterdir() if p.is_file()}
    build_reward_model(reward_model, "qwen2", seed=7)
    second = judge_flow(str(tmp_path), None, 0, over, show_progress=False)
    new_fp = second["sources"]["rm:helpful-rm"]["fingerprint"]
    assert new_fp != rm_fp
    assert all(new_fp in n for n in _files(tmp_path, "rm-helpful-rm--*"))
    superseded = round_dir(tmp_path, 0) / "judgments" / "superseded"
    assert sorted(p.name for p in superseded.iterdir()) == sorted(p.name for p in before)
    # The catalog (and every audit) sees one judge per source.
    rows = pl.read_parquet(table_files(tmp_path, "judgments"))
    assert rows.filter(pl.col("source") == "rm:helpful-rm").height == 4 * 3
    # Back to the original weights: the set-aside files come back, nothing is recomputed.
    for name, data in original.items():
        (reward_model / name).write_bytes(data)
    third = judge_flow(str(tmp_path), None, 0, over, show_progress=False)
    assert third["sources"]["rm:helpful-rm"]["fingerprint"] == rm_fp
    restored = {p: p.stat().st_mtime_ns for p in before}
    assert restored == before

    # A source dropped from the config does not shape the consensus, and rank says so.
    capsys.readouterr()
    summary = rank_flow(str(tmp_path), None, 0, {**over, "judging.sources": ["verifier"]})
    assert list(summary["weights"]) == ["verifier:sort_digits"]
    assert summary["left_out"] == {"rm-helpful-rm": 2}
    assert "left out judgments of sources not in the config: rm-helpful-rm" in \
        capsys.readouterr().err


def test_a_leftover_journal_of_another_judge_is_not_read(tmp_path):
    from tests.test_judge_faults import _judge

    shards = write_round(tmp_path, ["ok"] * 3, k=3, per_shard=3)
    old = stage.judgment_path(tmp_path, 0, "llm:judge", "oldjudge", shards[0])
    with stage.Journal(stage.journal_path(old)) as leftover:
        leftover.append("r000:p000", [{"fake": "verdict"}])
    with FakeJudge() as server:
        judge = _judge(server)
        stage.retire_other_fingerprints(tmp_path, 0, judge.source, "newjudge")
        res = stage.judge_shard_journaled(tmp_path, 0, shards[0], judge.source, "newjudge",
                                          judge)
        assert res.complete and res.rows == 3 * 3 * 2 + 3 * 3
        asked = {q["prompt"].split('role="user">')[1].split("<")[0] for q in server.requests}
        assert "S 0=ok" in asked  # the other judge's journaled group was judged again
    assert (round_dir(tmp_path, 0) / "judgments" / "superseded" /
            stage.journal_path(old).name).exists()


def test_a_capped_judge_leaves_the_stage_unfinished(tmp_path, prefect_harness, capsys):
    from flows.judge import judge_flow

    write_round(tmp_path, ["ok"] * 6, k=3, per_shard=3)
    with FakeJudge() as server:
        over = {"judging.sources": ["llm"], "llm_judge.base_url": server.url,
                "llm_judge.model": "fake", "llm_judge.structured": "none",
                "llm_judge.max_requests": 5, "loop.gold": "", "rank.weights": ["llm:*=1"]}
        capped = judge_flow(str(tmp_path), None, 0, over, show_progress=False)
        assert not capped["complete"] and 0 < capped["pending_groups"]["llm:judge"] < 6
        finished = 6 - capped["pending_groups"]["llm:judge"]
        assert not stage_done(tmp_path, 0, "judge")
        # rank refuses half a judge, and says what to run.
        assert main(["rank", "--round", "0", "--workdir", str(tmp_path),
                     *sum((["--set", f"{k}={json.dumps(v)}"] for k, v in over.items()),
                          [])]) == 2
        err = capsys.readouterr().err
        assert "llm:judge has judged" in err and "run `grpo judge --round 0`" in err
        server.requests.clear()
        done = judge_flow(str(tmp_path), None, 0, {**over, "llm_judge.max_requests": 1000},
                          show_progress=False)
        assert done["complete"] and stage_done(tmp_path, 0, "judge")
        # Only the groups left pending were sent by the second run (two views each).
        assert len(server.requests) == (6 - finished) * 2


def test_explicit_zero_and_gold_weights_survive_estimation(tmp_path):
    write_round(tmp_path, ["ok"] * 3, k=3, per_shard=3)
    rows = []
    for g in range(3):
        rows += _scores(g, "human:ann", [1, 2, 3]) + _scores(g, "verifier:t", [1, 2, 3])
        rows += _scores(g, "rm:gold", [1, 2, 3]) + _scores(g, "rm:a", [1, 2, 3])
    _judgments(tmp_path, rows)
    cfg = load_config(overrides={"rank.weights": ["verifier:*=0", "rm:*=1", "human:*=2"],
                                 "rank.estimate_weights_from": "human:*"}).rank
    summary = rank_round(tmp_path, 0, cfg, zero_weight=["rm:gold"])
    # All three agree perfectly with the annotator; only rm:a may take an estimated weight.
    assert summary.weights["verifier:t"] == 0.0 and summary.weights["rm:gold"] == 0.0
    assert summary.weights["rm:a"] > 1.0


def test_a_torn_journal_line_loses_only_itself(tmp_path):
    path = tmp_path / "j.journal.jsonl"
    with stage.Journal(path) as journal:
        journal.append("g1", [{"v": 1}])
    with open(path, "a") as fh:
        fh.write('{"group_id": "g2", "rows": [{"v"')  # a crash mid-write
    with stage.Journal(path) as journal:  # the rerun's
        journal.append("g3", [{"v": 3}])
        journal.append("g4", [{"v": 4}])
    assert list(stage.Journal(path).load()) == ["g1", "g3", "g4"]


def test_a_killed_judging_process_keeps_every_group_it_journaled(tmp_path):
    """Lines are flushed to the OS as groups finish, so a SIGKILL between fsyncs loses none
    of them (only a power cut could): a child appends, never closes, and is killed."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "j.journal.jsonl"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipeline.judging import stage\n"
        "j = stage.Journal(Path(sys.argv[1]))\n"
        "for i in range(50):\n"
        "    j.append(f'g{i}', [{'v': i}])\n"
        "print('appended', flush=True)\n"
        "time.sleep(60)\n"), str(path)], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent)
    try:
        assert child.stdout.readline().strip() == "appended"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert list(stage.Journal(path).load()) == [f"g{i}" for i in range(50)]


def test_commands_default_to_the_newest_round_and_say_which(tmp_path, prefect_harness,
                                                            capsys):
    write_round(tmp_path, ["ok"] * 2, k=3, per_shard=2)
    base = ["--workdir", str(tmp_path), "--set", 'loop.gold=""',
            "--set", 'rank.weights=["verifier:*=1"]']
    assert main(["judge", "--sources", "verifier", *base]) == 0
    assert "grpo judge: round 0" in capsys.readouterr().err
    assert main(["rank", "--set", 'judging.sources=["verifier"]', *base]) == 0
    assert "grpo rank: round 0" in capsys.readouterr().err
    assert (round_dir(tmp_path, 0) / "rankings" / "consensus.parquet").exists()


def test_a_replaced_model_directory_is_never_missing(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v0")
    seen_missing = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            if not (target / "weights").exists():
                seen_missing.append(time.monotonic())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in range(1, 200):
            with atomic_dir(target) as tmp:
                (tmp / "weights").write_text(f"v{v}")
    finally:
        stop.set()
        t.join()
    assert not seen_missing
    assert (target / "weights").read_text() == "v199"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_crash_between_the_fallback_renames_is_recovered(tmp_path, monkeypatch):
    import pipeline.atomic as atomic

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("old")
    # The fallback path (no renameat2): old moved aside, then a crash before the new one
    # is renamed in.
    target.rename(tmp_path / "model.old")
    (tmp_path / "model.tmp").mkdir()
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    with atomic_dir(target) as tmp:
        assert (target / "weights").read_text() == "old"  # restored before anything else
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
