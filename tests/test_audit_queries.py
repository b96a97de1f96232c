"""Every query in sql/ runs on a catalog with every table filled, and says what it should."""

from __future__ import annotations

import csv

from flows.cli import main
from pipeline.audit import list_queries, run_query
from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.humans import import_human_file
from tests.judge_helpers import write_round
from tests.test_consensus_stage import _judgments, _pair, _scores


def _catalog(tmp_path):
    write_round(tmp_path, ["ok", "ok", "ok"], k=3, per_shard=3)
    rows = _scores(0, "rm:a", [1, 2, 3]) + _scores(1, "rm:a", [3, 2, 1])
    rows += _scores(0, "verifier:t", [3, 2, 1]) + _scores(1, "verifier:t", [3, 2, 1])
    rows += _scores(2, "rm:a", [1, 1, 1])
    rows += [_pair(1, "llm:j", 0, 1, 1.0), _pair(1, "llm:j", 1, 2, 1.0),
             _pair(1, "llm:j", 0, 2, 0.0)]
    _judgments(tmp_path, rows)
    path = tmp_path / "h.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["group_id", "candidate_id", "rank", "annotator"])
        w.writerows([["r000:p000", "r000:p000:0", 1, "ann"], ["r000:p000", "r000:p000:1", 2, "ann"],
                     ["r000:p000", "r000:p000:2", 3, "ann"], ["r000:p000", "bad", 1, "ann"]])
    import_human_file(tmp_path, path)
    rank_round(tmp_path, 0, load_config(overrides={
        "rank.weights": ["verifier:*=0", "rm:*=1", "llm:*=3", "human:*=0.5"]}).rank)
    rebuild(tmp_path)


def test_every_query_runs_and_answers(tmp_path):
    _catalog(tmp_path)
    results = {q.name: run_query(tmp_path, q.name).to_pylist() for q in list_queries()}
    assert len(results) >= 14
    intransitive = results["intransitive_groups"]
    assert {(r["group_id"], r["source"]) for r in intransitive} == {
        ("r000:p001", "consensus"), ("r000:p001", "llm:j")}
    assert all(r["n_members"] == 3 and r["status"] == "intransitive" for r in intransitive)
    hm = {(r["annotator"], r["other_source"]): r for r in results["human_machine_agreement"]}
    assert hm[("human:ann", "verifier:t")]["mean_tau"] == 1.0
    assert hm[("human:ann", "rm:a")]["mean_tau"] == -1.0
    assert results["quarantine_reasons"][0]["reason"] == "unknown candidate_id for this group"
    status = {r["status"]: r["groups"] for r in results["group_status"]}
    assert status == {"intransitive": 1, "contested": 1, "unranked": 1}
    failures = {r["source"]: r for r in results["judge_failures"]}
    assert failures["rm:a"]["items"] == 9 and failures["rm:a"]["failed"] == 0
    ties = results["ties"][0]
    assert ties["groups"] == 3 and ties["all_tied"] >= 2
    differ = {r["source"]: r["differ_rate"] for r in results["winner_disagreement"]}
    assert differ["verifier:t"] > 0


def test_cli_lists_every_query(tmp_path, capsys):
    _catalog(tmp_path)
    assert main(["audit", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for q in list_queries():
        assert q.name in out
