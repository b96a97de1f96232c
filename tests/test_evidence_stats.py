"""The evidence benchmark's intervals cover the truth about 95% of the time on data laid out
as the benchmark lays it out (seeds x held-out prompts, crossed), whether training noise
(seeds) or held-out noise (prompts) dominates; and the t quantiles they use are right."""

from __future__ import annotations

import numpy as np
import pytest

from bench.evidence_stats import Intervals, heldout_size, t_quantile


@pytest.mark.parametrize(("p", "df", "expected"), [(0.975, 4, 2.7764), (0.975, 10, 2.2281),
                                                   (0.975, 1e9, 1.9600), (0.80, 4, 0.9410)])
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize(("seed_sd", "prompt_sd", "noise_sd"),
                         [(0.03, 0.0, 0.1),     # training noise dominates (5 seeds)
                          (0.0, 0.05, 0.15),    # held-out prompts dominate
                          (0.02, 0.05, 0.15)])  # both
def test_intervals_cover_about_95_percent(seed_sd, prompt_sd, noise_sd):
    rng = np.random.default_rng(0)
    seeds, prompts, truth, trials = 5, 256, 0.01, 600
    ci = Intervals(prompts, 300, seed=1)
    covered = 0
    for _ in range(trials):
        d = (truth + seed_sd * rng.standard_normal((seeds, 1))
             + prompt_sd * rng.standard_normal((1, prompts))
             + noise_sd * rng.standard_normal((seeds, prompts)))
        e = ci.estimate(d)
        covered += e.lo <= truth <= e.hi
    # 600 trials: a calibrated interval lands in [0.93, 0.97] with ~98% probability; the
    # construction is conservative by design (sampling noise counted twice), never liberal.
    assert 0.93 <= covered / trials <= 0.995


def test_a_clear_difference_excludes_zero_and_nans_drop_out():
    rng = np.random.default_rng(3)
    d = 0.05 + 0.01 * rng.standard_normal((5, 512))
    d[2, :10] = np.nan  # e.g. prompts a hack rate cannot score in one seed
    e = Intervals(512, 500).estimate(d)
    assert not e.includes_zero and e.lo > 0.04 and e.hi < 0.06
    assert 0 < e.seed_share < 1 and e.mde > 0


def test_heldout_size_doubles_until_noise_is_small_enough():
    # need = (2.8 * 0.2 / 0.01)^2 / 5 = 627 -> 1024 (from 128 by doubling), capped at 800
    assert heldout_size(0.2, 5, 0.01, 128, 4096) == 1024
    assert heldout_size(0.2, 5, 0.01, 128, 800) == 800
    assert heldout_size(0.01, 5, 0.01, 128, 4096) == 128
