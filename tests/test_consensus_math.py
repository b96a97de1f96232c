"""Cycle detection on hand-made graphs; Bradley-Terry recovers a known ranking."""

import itertools
import math

import pyarrow as pa
import pytest
import torch

from pipeline.consensus.bradley_terry import fit_bradley_terry, fit_bradley_terry_naive
from pipeline.consensus.graph import closure, count_3cycles, on_cycle, scc_labels
from pipeline.consensus.merge import kendall_tau
from pipeline.consensus.preferences import candidate_index, candidate_index_naive


def _adj(k, edges):
    a = torch.zeros(1, k, k, dtype=torch.bool)
    for i, j in edges:
        a[0, i, j] = True
    return a


def test_three_cycle():
    a = _adj(3, [(0, 1), (1, 2), (2, 0)])
    r = closure(a)
    assert on_cycle(r).tolist() == [[True, True, True]]
    assert count_3cycles(a).tolist() == [1]
    assert scc_labels(r).tolist() == [[0, 0, 0]]


def test_longer_cycle_without_triangles():
    # 0 > 1 > 2 > 3 > 0 with 4 unconnected: a 4-cycle, no 3-cycle.
    a = _adj(5, [(0, 1), (1, 2), (2, 3), (3, 0)])
    r = closure(a)
    assert on_cycle(r).tolist() == [[True, True, True, True, False]]
    assert count_3cycles(a).tolist() == [0]
    assert scc_labels(r).tolist() == [[0, 0, 0, 0, 4]]


def test_transitive_tournament_has_no_cycle():
    k = 6
    a = _adj(k, [(i, j) for i in range(k) for j in range(i + 1, k)])
    r = closure(a)
    assert not on_cycle(r).any()
    assert count_3cycles(a).tolist() == [0]
    assert scc_labels(r).tolist() == [list(range(k))]


def test_ties_make_no_edges_and_no_cycles():
    # 0 ~ 1 (tie: no edge either way), both beat 2.
    a = _adj(3, [(0, 2), (1, 2)])
    assert not on_cycle(closure(a)).any()


def test_every_tournament_on_4_is_classified_right():
    """All 2^6 tournaments on 4 nodes: cyclic iff some 3-cycle exists (a tournament fact)."""
    pairs = list(itertools.combinations(range(4), 2))
    graphs = []
    for bits in range(2 ** len(pairs)):
        graphs.append([(i, j) if bits >> n & 1 else (j, i) for n, (i, j) in enumerate(pairs)])
    a = torch.cat([_adj(4, e) for e in graphs])
    cyclic = on_cycle(closure(a)).any(1)
    assert cyclic.tolist() == (count_3cycles(a) > 0).tolist()
    assert 0 < int(cyclic.sum()) < len(graphs)


def test_batched_groups_are_independent():
    a = torch.cat([_adj(3, [(0, 1), (1, 2), (2, 0)]), _adj(3, [(0, 1), (1, 2)])])
    assert on_cycle(closure(a)).any(1).tolist() == [True, False]


def test_bradley_terry_recovers_a_known_ranking_from_noisy_sources():
    g = torch.Generator().manual_seed(0)
    groups, k, sources = 200, 6, 5
    true = torch.randn(groups, k, generator=g) * 1.5
    p = torch.sigmoid(true.unsqueeze(2) - true.unsqueeze(1))
    wins = torch.zeros(groups, k, k)
    for _ in range(sources):  # each source votes once per pair, noisily
        vote = torch.rand(groups, k, k, generator=g) < p
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), 1)
        wins += (vote & upper) + (~vote & upper).transpose(1, 2)
    theta = fit_bradley_terry(wins, torch.ones(groups, k, dtype=torch.bool))
    # Rank correlation with the truth, averaged over groups, is high.
    agree = ((theta.unsqueeze(2) > theta.unsqueeze(1)) == (true.unsqueeze(2) > true.unsqueeze(1)))
    off_diag = ~torch.eye(k, dtype=torch.bool)
    assert agree[:, off_diag].float().mean() > 0.8
    # Invalid candidates stay at zero; a perfectly separated group stays finite.
    valid = torch.tensor([[True, True, False]])
    w = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    t = fit_bradley_terry(w, valid)
    assert torch.isfinite(t).all() and t[0, 2] == 0 and t[0, 0] > t[0, 1]
    # Symmetric evidence gives equal strengths (a tie).
    tie = fit_bradley_terry(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]),
                            torch.ones(1, 2, dtype=torch.bool))
    assert abs(float(tie[0, 0] - tie[0, 1])) < 1e-12


def _random_wins(groups, k, seed):
    g = torch.Generator().manual_seed(seed)
    wins = torch.randint(0, 4, (groups, k, k), generator=g).float() / 2  # ties give halves
    wins[:, torch.arange(k), torch.arange(k)] = 0
    wins[::5, 0, 1:] = 3.0  # perfect separation: candidate 0 wins everything
    wins[::5, 1:, 0] = 0.0
    valid = torch.rand(groups, k, generator=g) > 0.1
    return wins, valid


def test_fast_bradley_terry_agrees_with_its_naive_twin():
    for k in (2, 3, 8):
        wins, valid = _random_wins(500, k, seed=k)
        fast, naive = fit_bradley_terry(wins, valid), fit_bradley_terry_naive(wins, valid)
        assert torch.allclose(fast, naive, atol=1e-9, rtol=0)
        assert (fast[~valid] == 0).all()


def test_a_groups_strengths_do_not_depend_on_the_groups_beside_it():
    wins, valid = _random_wins(300, 8, seed=1)
    whole = fit_bradley_terry(wins, valid)
    pieces = torch.cat([fit_bradley_terry(wins[i:i + 7], valid[i:i + 7])
                        for i in range(0, 300, 7)])
    assert torch.allclose(whole, pieces, atol=1e-12, rtol=0)


def test_kendall_tau_matches_a_pair_by_pair_count():
    g = torch.Generator().manual_seed(0)
    groups, sources, k = 40, 3, 5
    p = torch.randint(0, 3, (groups, sources, k, k), generator=g).float() / 2
    p = torch.where(torch.rand(groups, sources, k, k, generator=g) < 0.2, torch.nan, p)
    p[:, 2] = torch.nan  # a source with no opinion at all
    p[:, :, torch.arange(k), torch.arange(k)] = torch.nan
    tau, pairs, decided, tau_decided = kendall_tau(p)
    for gi in range(groups):
        for a in range(sources):
            for b in range(sources):
                conc = disc = n = both = 0
                for i, j in itertools.combinations(range(k), 2):
                    x, y = float(p[gi, a, i, j]), float(p[gi, b, i, j])
                    if math.isnan(x) or math.isnan(y):
                        continue
                    n += 1
                    sx, sy = (x > 0.5) - (x < 0.5), (y > 0.5) - (y < 0.5)
                    conc += sx * sy > 0
                    disc += sx * sy < 0
                    both += sx != 0 and sy != 0
                assert int(pairs[gi, a, b]) == n
                assert int(decided[gi, a, b]) == both == conc + disc
                if both:
                    assert float(tau_decided[gi, a, b]) == pytest.approx((conc - disc) / both,
                                                                         abs=1e-6)
                else:
                    assert math.isnan(float(tau_decided[gi, a, b]))
                if n:
                    assert float(tau[gi, a, b]) == pytest.approx((conc - disc) / n, abs=1e-6)
                else:
                    assert math.isnan(float(tau[gi, a, b]))


def test_candidate_index_reads_the_digits_after_the_last_colon():
    ids = ["r000:p001:0", "r000:p001:7", "r001:p:12:63", "r000:p001:", "r000:p001:x",
           "noindex", "7", "", None, "r000:p001:1234", "r000:p001:064", "a:b:c:5",
           "r000:ünï:3", "r000:p001:٣"]
    for arr in (pa.array(ids, pa.string()), pa.array(ids, pa.large_string()),
                pa.chunked_array([ids[:5], ids[5:]]), pa.array(ids).slice(3, 9)):
        got = candidate_index(arr)
        assert got.tolist() == candidate_index_naive(arr).tolist()
    assert candidate_index(pa.array(ids)).tolist() == [
        0, 7, 63, -1, -1, -1, -1, -1, -1, -1, 64, 5, 3, -1]
    assert candidate_index(pa.array([None, None], pa.string())).tolist() == [-1, -1]
