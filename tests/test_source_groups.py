"""Each source's ties and winner against the consensus: the ranking stage's ``source_groups``
table and the audit queries over it, checked against the queries computed from every
judgment row."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from pipeline.audit import run_query
from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.consensus.merge import summarise_sources
from pipeline.consensus.stage import rank_round
from tests.judge_helpers import write_round
from tests.test_consensus_stage import _judgments, _pair, _scores

ORACLES = Path(__file__).resolve().parent / "sql_oracles"


def _p_from_scores(scores):
    s = torch.tensor(scores, dtype=torch.float32)  # [S, k], NaN = no score
    d = s.unsqueeze(2) - s.unsqueeze(1)
    p = torch.where(torch.isnan(d), torch.nan, (d > 0).float() + 0.5 * (d == 0).float())
    p.diagonal(dim1=1, dim2=2).fill_(torch.nan)
    return p


def test_a_sources_winner_is_its_best_score_tied_best_or_most_pairwise_wins():
    nan = float("nan")
    p = _p_from_scores([[0.1, 0.9, 0.5, 0.2],     # one best: candidate 1
                        [3.0, 3.0, 1.0, 2.0],     # best shared by 0 and 1
                        [nan, nan, 0.2, 0.7],     # judged two of four: 3
                        [nan, nan, nan, nan],     # no opinion
                        [0.0, 0.0, 0.0, 0.0]])    # every candidate tied
    cyc = torch.full((4, 4), torch.nan)  # pairwise 0 > 1 > 2 > 0, and each beats 3
    for i, j in ((0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)):
        cyc[i, j], cyc[j, i] = 1.0, 0.0
    p = torch.cat([p, cyc.unsqueeze(0)]).unsqueeze(0)  # [1, 6, 4, 4]
    ranks = torch.tensor([[1, 0, 2, 3]])  # consensus winner: candidate 1
    w = summarise_sources(torch.nan_to_num(p), ~torch.isnan(p), ranks)
    assert w.judged[0].tolist() == [4, 4, 2, 0, 4, 4]
    assert w.tied[0].tolist() == [0, 2, 0, 0, 4, 0]
    assert w.best[0].tolist() == [1, 2, 1, 0, 4, 3]
    assert w.agrees[0].tolist() == [True, True, False, False, True, True]


def _random_round(tmp_path, seed: int, groups: int = 40, k: int = 5):
    """Reward models with ties and gaps, one scored in two views, a zero-weight verifier,
    a human ranking half the groups and an LLM judge whose reconciled verdicts hold cycles
    and ties: every way a source can name its winner."""
    rng = random.Random(seed)
    write_round(tmp_path, ["ok"] * groups, k=k, per_shard=8, seed=seed)
    rows = []
    for g in range(groups):
        rows += _scores(g, "rm:a", [rng.randint(0, 3) for _ in range(k)])
        gap = _scores(g, "rm:gap", [rng.random() for _ in range(k)])
        rows += gap[:k - rng.randint(0, 2)]  # some candidates unscored
        for view in (0, 1):
            rows += [{**r, "view": view}
                     for r in _scores(g, "llm:list", [rng.randint(1, 3) for _ in range(k)])]
        rows += _scores(g, "verifier:t", [rng.choice([0.0, 1.0]) for _ in range(k)])
        if g % 2:
            rows += [{**r, "kind": "rank", "source": "human:ann"}
                     for r in _scores(g, "human:ann", [rng.randint(1, 4) for _ in range(k)])]
        # Some verdicts failed: uneven coverage, so a win count is not a win rate.
        rows += [{**_pair(g, "llm:pw", i, j, rng.choice([0.0, 0.5, 1.0])),
                  "status": "failed" if rng.random() < 0.25 else "scored"}
                 for i in range(k) for j in range(i + 1, k)]
    _judgments(tmp_path, rows)
    rank_round(tmp_path, 0, load_config(overrides={
        "rank.weights": ["verifier:*=0", "rm:*=1", "llm:*=1", "human:*=2"]}).rank)
    rebuild(tmp_path)


def test_winner_disagreement_from_the_table_equals_the_query_over_every_judgment(tmp_path):
    for seed in range(3):
        workdir = tmp_path / f"s{seed}"
        _random_round(workdir, seed)
        fast = run_query(workdir, "winner_disagreement").to_pylist()
        oracle = run_query(workdir, "winner_disagreement_from_judgments",
                           sql_dir=ORACLES).to_pylist()
        assert {r["source"] for r in fast} == {"rm:a", "rm:gap", "llm:list", "verifier:t",
                                                "human:ann", "llm:pw"}
        assert fast == oracle
        # The random judges really do differ from the consensus and tie their best.
        assert any(r["winner_differs"] > 0 for r in fast)
        assert any(r["tied_winner_share"] > 0 for r in fast)


def test_score_tie_shares_from_the_table_equal_the_ones_sorted_from_every_judgment(tmp_path):
    """Identical for every single-view score source; a source scored in several views has
    its ties counted on the mean score now (the ranking's view of it), per view before."""
    for seed in range(2):
        workdir = tmp_path / f"s{seed}"
        _random_round(workdir, seed)
        fast = {r["source"]: r["share_exact_ties"]
                for r in run_query(workdir, "score_distributions").to_pylist()}
        oracle = {r["source"]: r["share_exact_ties"] for r in run_query(
            workdir, "score_distributions_from_judgments", sql_dir=ORACLES).to_pylist()}
        assert oracle.keys() == {"rm:a", "rm:gap", "llm:list", "verifier:t"}
        for source in ("rm:a", "rm:gap", "verifier:t"):
            assert fast[source] == oracle[source], source
        assert 0 < fast["rm:a"] < 1 and 0 < fast["verifier:t"] < 1  # not vacuous
        assert fast["rm:gap"] == 0.0


def test_a_candidate_only_the_zero_weight_verifier_judged_is_excluded_and_never_a_winner(
        tmp_path):
    write_round(tmp_path, ["ok"], k=3)
    _judgments(tmp_path, _scores(0, "rm:a", [1.0, 2.0]) + _scores(0, "verifier:t", [0, 0, 1]))
    rank_round(tmp_path, 0, load_config(overrides={"rank.weights": ["verifier:*=0"]}).rank)
    rebuild(tmp_path)
    fast = {r["source"]: r for r in run_query(tmp_path, "winner_disagreement").to_pylist()}
    oracle = {r["source"]: r for r in run_query(
        tmp_path, "winner_disagreement_from_judgments", sql_dir=ORACLES).to_pylist()}
    assert fast == oracle
    assert fast["verifier:t"]["winner_differs"] == 1  # its best (2) has no consensus rank
    assert fast["rm:a"]["winner_differs"] == 0


def test_score_tie_share_is_null_until_the_round_is_ranked(tmp_path):
    write_round(tmp_path, ["ok"], k=3)
    _judgments(tmp_path, _scores(0, "llm:lazy", [5.0, 5.0, 5.0]))
    rebuild(tmp_path)
    before = run_query(tmp_path, "score_distributions").to_pylist()
    assert [r["share_exact_ties"] for r in before] == [None]  # unknown, not "no ties"
    rank_round(tmp_path, 0, load_config().rank)
    rebuild(tmp_path)  # as `grpo rank` does: the new table's files join the catalog
    after = run_query(tmp_path, "score_distributions").to_pylist()
    assert [r["share_exact_ties"] for r in after] == [1.0]
