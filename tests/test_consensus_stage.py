"""The ranking stage on hand-built rounds: consensus, cycles, ties, agreement, weights."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from pipeline.atomic import write_parquet_atomic
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.schema import JUDGMENTS
from pipeline.store import round_dir
from tests.judge_helpers import write_round


def _judgments(workdir, rows, name="j"):
    full = [{"round": 0, "kind": "score", "view": 0, "opponent_id": None, "status": "scored",
             "error": None, "raw": None, "order_shown": None, **r} for r in rows]
    write_parquet_atomic(pa.Table.from_pylist(full, JUDGMENTS.arrow_schema),
                         round_dir(workdir, 0) / "judgments" / f"{name}.parquet", JUDGMENTS)


def _scores(group, source, values):
    return [{"group_id": f"r000:p{group:03d}", "candidate_id": f"r000:p{group:03d}:{i}",
             "source": source, "value": v} for i, v in enumerate(values)]


def _pair(group, source, i, j, value, view=-1):
    return {"group_id": f"r000:p{group:03d}", "candidate_id": f"r000:p{group:03d}:{i}",
            "opponent_id": f"r000:p{group:03d}:{j}", "source": source, "kind": "pairwise",
            "view": view, "value": value}


def _read(workdir, table):
    return pl.read_parquet(round_dir(workdir, 0) / table / "consensus.parquet")


def _cfg(**rank):
    return load_config(overrides={f"rank.{k}": v for k, v in rank.items()}).rank


def test_consensus_cycles_ties_and_status(tmp_path):
    write_round(tmp_path, ["ok"] * 4, k=3, per_shard=4)
    rows = []
    # Group 0: two score sources agree on 2 > 1 > 0.
    rows += _scores(0, "rm:a", [0.1, 0.5, 0.9]) + _scores(0, "rm:b", [1, 2, 3])
    # Group 1: a judge with a cycle 0 > 1 > 2 > 0, the only weighted source.
    rows += [_pair(1, "llm:j", 0, 1, 1.0), _pair(1, "llm:j", 1, 2, 1.0),
             _pair(1, "llm:j", 0, 2, 0.0)]
    # Group 2: the two models disagree completely.
    rows += _scores(2, "rm:a", [1, 2, 3]) + _scores(2, "rm:b", [3, 2, 1])
    # Group 3: everything tied.
    rows += _scores(3, "rm:a", [5, 5, 5])
    # A zero-weight gold source sees everything but shapes nothing.
    rows += _scores(0, "verifier:t", [9, 0, 0]) + _scores(2, "verifier:t", [9, 0, 0])
    _judgments(tmp_path, rows)
    summary = rank_round(tmp_path, 0, _cfg(weights=["verifier:*=0", "rm:*=1", "llm:*=1"]))
    assert summary.statuses == {"ok": 1, "intransitive": 1, "contested": 1, "unranked": 1}

    ranks = {r["candidate_id"]: r["rank"] for r in _read(tmp_path, "rankings").iter_rows(
        named=True)}
    assert [ranks[f"r000:p000:{i}"] for i in range(3)] == [2, 1, 0]
    # The cycle is reported and not forced into an order: its members tie.
    assert [ranks[f"r000:p001:{i}"] for i in range(3)] == [0, 0, 0]
    assert [ranks[f"r000:p003:{i}"] for i in range(3)] == [0, 0, 0]

    groups = {r["group_id"]: r for r in _read(tmp_path, "groups").iter_rows(named=True)}
    g1 = groups["r000:p001"]
    assert (g1["status"], g1["n_cycles"], g1["n_source_cycles"]) == ("intransitive", 1, 1)
    assert g1["weight"] == 0.5  # downweight policy
    assert groups["r000:p002"]["agreement"] == -1.0
    assert groups["r000:p000"]["agreement"] == 1.0 and groups["r000:p000"]["weight"] == 1.0
    assert groups["r000:p003"]["weight"] == 0.0
    assert groups["r000:p000"]["n_sources"] == 3

    cycles = _read(tmp_path, "cycles").to_dicts()
    assert {(c["group_id"], c["source"]) for c in cycles} == {("r000:p001", "consensus"),
                                                              ("r000:p001", "llm:j")}
    assert all(sorted(c["members"]) == [f"r000:p001:{i}" for i in range(3)] for c in cycles)

    agreement = _read(tmp_path, "agreement").filter(pl.col("group_id") == "r000:p000")
    taus = {(r["source_a"], r["source_b"]): r["tau"] for r in agreement.iter_rows(named=True)}
    assert taus[("rm:a", "rm:b")] == 1.0
    # Two discordant pairs and one the verifier ties: (0 - 2) / 3; ties count in the pairs.
    assert taus[("rm:a", "verifier:t")] == pytest.approx(-2 / 3)
    # Over the pairs both order strictly the tie leaves: (0 - 2) / 2.
    row = agreement.filter((pl.col("source_a") == "rm:a") & (pl.col("source_b") == "verifier:t"))
    assert (row["decided_pairs"].item(), row["tau_decided"].item()) == (2, -1.0)
    same = agreement.filter((pl.col("source_a") == "rm:a") & (pl.col("source_b") == "rm:b"))
    assert same["tau_decided"].item() == 1.0


def test_policies_drop_and_keep(tmp_path):
    write_round(tmp_path, ["ok"], k=3)
    _judgments(tmp_path, [_pair(0, "llm:j", 0, 1, 1.0), _pair(0, "llm:j", 1, 2, 1.0),
                          _pair(0, "llm:j", 0, 2, 0.0)])
    rank_round(tmp_path, 0, _cfg(intransitive="drop"))
    assert _read(tmp_path, "groups")["weight"].to_list() == [0.0]
    rank_round(tmp_path, 0, _cfg(intransitive="keep"))
    assert _read(tmp_path, "groups")["weight"].to_list() == [1.0]


def test_failed_judgments_are_never_read(tmp_path):
    write_round(tmp_path, ["ok"], k=3)
    rows = _scores(0, "rm:a", [1, 2, 3])
    rows += [{**r, "status": "failed", "value": None, "error": "boom"}
             for r in _scores(0, "llm:j", [0, 0, 0])]
    _judgments(tmp_path, rows)
    summary = rank_round(tmp_path, 0, _cfg())
    assert summary.statuses == {"ok": 1}
    assert "llm:j" not in summary.weights


def test_consensus_recovers_truth_and_estimated_weights_find_the_good_source(tmp_path):
    import random

    rng = random.Random(0)
    n, k = 60, 5
    write_round(tmp_path, ["ok"] * n, k=k, per_shard=20)
    rows = []
    truth = {}
    for g in range(n):
        t = list(range(k))
        rng.shuffle(t)
        truth[g] = t
        rows += _scores(g, "human:gold", t)
        rows += _scores(g, "rm:good", [x + rng.gauss(0, 0.8) for x in t])
        rows += _scores(g, "rm:noise", [rng.random() for _ in t])
    _judgments(tmp_path, rows)
    summary = rank_round(tmp_path, 0, _cfg(weights=["human:*=1"], default_weight=1.0,
                                           estimate_weights_from="human:*"))
    report = json.loads((round_dir(tmp_path, 0) / "source_weights.json").read_text())
    est = report["estimates"]
    assert est["rm:good"]["agreement"] > 0.8 and est["rm:noise"]["agreement"] < 0.65
    assert summary.weights["rm:good"] > 3 * summary.weights["rm:noise"]
    ranks = _read(tmp_path, "rankings")
    # With the human weight off, the consensus of the two models still finds the truth.
    rank_round(tmp_path, 0, _cfg(weights=["human:*=0"], estimate_weights_from="human:*"))
    ranks = {r["candidate_id"]: r["rank"] for r in _read(tmp_path, "rankings").iter_rows(
        named=True)}
    hits = total = 0
    for g, t in truth.items():
        for i in range(k):
            for j in range(k):
                if t[i] > t[j]:
                    total += 1
                    hits += ranks[f"r000:p{g:03d}:{i}"] < ranks[f"r000:p{g:03d}:{j}"]
    assert hits / total > 0.8


def _shard_file(workdir, source, shard, rows, fingerprint=""):
    """A judgments file named after its candidates shard, as the judge stage writes them."""
    slug = source.replace(":", "-")
    _judgments(workdir, rows, name=f"{slug}--{fingerprint}{shard.name}".removesuffix(".parquet"))


def _outputs(workdir):
    return {t: _read(workdir, t) for t in ("rankings", "groups", "cycles", "agreement")}


def test_ranking_in_batches_gives_the_result_of_one_batch(tmp_path):
    """Many small shards ranked a few groups at a time, with a human file spanning all of
    them: every output equals the one-batch run (scores up to float rounding)."""
    import random

    rng = random.Random(3)
    n, k = 40, 4
    shards = write_round(tmp_path, ["ok"] * n, k=k, per_shard=3)
    human = []
    for s, shard in enumerate(shards):
        groups = range(3 * s, min(n, 3 * s + 3))
        _shard_file(tmp_path, "rm:a", shard,
                    [r for g in groups for r in _scores(g, "rm:a", rng.sample(range(9), k))])
        verdicts = []
        for g in groups:
            verdicts += [_pair(g, "llm:j", i, j, rng.choice([0.0, 0.5, 1.0]))
                         for i in range(k) for j in range(i + 1, k)]
        _shard_file(tmp_path, "llm:j", shard, verdicts, fingerprint="fp1--")
    for g in range(0, n, 4):
        human += [{**r, "kind": "rank"} for r in _scores(g, "human:ann", [2, 1, 4, 3])]
    _judgments(tmp_path, human, name="human--abc")

    summaries, outputs = [], []
    for chunk in (2, 50_000):
        summaries.append(rank_round(tmp_path, 0, _cfg(chunk_groups=chunk, weights=[
            "rm:*=1", "llm:*=1", "human:*=2"])))
        outputs.append(_outputs(tmp_path))
    assert summaries[0] == summaries[1] and summaries[0].groups == n
    small, one = outputs
    assert small["rankings"].drop("score").equals(one["rankings"].drop("score"))
    assert (small["rankings"]["score"] - one["rankings"]["score"]).abs().max() < 1e-12
    for table in ("groups", "cycles", "agreement"):
        assert small[table].equals(one[table]), table
    # The human file counted in every batch: each group it ranks has its agreement rows.
    humans = one["agreement"].filter(pl.col("source_a") == "human:ann")
    assert sorted(set(humans["group_id"])) == [f"r000:p{g:03d}" for g in range(0, n, 4)]


def test_a_group_split_across_two_shards_is_ranked_once_whole(tmp_path):
    import pyarrow.parquet as pq

    first, second = write_round(tmp_path, ["ok"] * 4, k=3, per_shard=2)
    a, b = pq.read_table(first), pq.read_table(second)
    # Candidate 2 of group 1 lands in the second shard.
    moved = pa.compute.equal(a["candidate_id"], "r000:p001:2")
    from pipeline.schema import CANDIDATES
    write_parquet_atomic(a.filter(pa.compute.invert(moved)), first, CANDIDATES)
    write_parquet_atomic(pa.concat_tables([a.filter(moved), b]), second, CANDIDATES)
    _judgments(tmp_path, [r for g in range(4) for r in _scores(g, "rm:a", [1, 2, 3])])
    summary = rank_round(tmp_path, 0, _cfg(chunk_groups=1))
    assert summary.groups == 4
    ranks = _read(tmp_path, "rankings").filter(pl.col("group_id") == "r000:p001")
    assert ranks.sort("candidate_id")["rank"].to_list() == [2, 1, 0]
    assert _read(tmp_path, "groups")["group_id"].to_list() == [f"r000:p{g:03d}" for g in range(4)]


def test_judgment_files_decide_which_judgments_count(tmp_path):
    (shard,) = write_round(tmp_path, ["ok"], k=3)
    _shard_file(tmp_path, "rm:a", shard, _scores(0, "rm:a", [3, 2, 1]), fingerprint="old--")
    _shard_file(tmp_path, "rm:a", shard, _scores(0, "rm:a", [1, 2, 3]), fingerprint="new--")
    jdir = round_dir(tmp_path, 0) / "judgments"
    rank_round(tmp_path, 0, _cfg(), judgment_files=[jdir / f"rm-a--new--{shard.name}"])
    assert _read(tmp_path, "rankings")["rank"].to_list() == [2, 1, 0]
    rank_round(tmp_path, 0, _cfg(), judgment_files=[jdir / f"rm-a--old--{shard.name}"])
    assert _read(tmp_path, "rankings")["rank"].to_list() == [0, 1, 2]
    with pytest.raises(ValueError, match="no judgments; run `grpo judge`"):
        rank_round(tmp_path, 0, _cfg(), judgment_files=[])


def test_judgment_files_are_read_with_their_shard(tmp_path):
    from pipeline.consensus.inputs import plan_round

    shards = write_round(tmp_path, ["ok"] * 4, k=2, per_shard=2)
    _shard_file(tmp_path, "rm:a", shards[0], _scores(0, "rm:a", [1, 2]))
    _shard_file(tmp_path, "llm:j", shards[1], [_pair(2, "llm:j", 0, 1, 1.0)], fingerprint="f--")
    _judgments(tmp_path, _scores(3, "human:x", [1, 2]), name="human--0123")
    plan = plan_round(tmp_path, 0, batch_groups=1)
    assert [[f.name for f in b.judgments] for b in plan.batches] == [
        [f"rm-a--{shards[0].name}"], [f"llm-j--f--{shards[1].name}"]]
    assert [f.name for f in plan.shared] == ["human--0123.parquet"]
    assert (plan.sources, plan.reconciled, plan.k) == (["human:x", "llm:j", "rm:a"], ["llm:j"], 2)
    assert [(b.first_group, b.last_group) for b in plan.batches] == [
        ("r000:p000", "r000:p001"), ("r000:p002", "r000:p003")]
