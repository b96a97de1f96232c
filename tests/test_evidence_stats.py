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


# --- naive twins: the same statistics written as plain loops, to check the vectorised code --

def naive_estimate(d: np.ndarray, idx: np.ndarray) -> tuple[float, float, float, float]:
    """(point, se, df, half width) of ``Intervals.estimate`` with one loop per step."""
    seeds, prompts = d.shape
    cells = [d[s, p] for s in range(seeds) for p in range(prompts) if not np.isnan(d[s, p])]
    point = sum(cells) / len(cells)
    seed_means = []
    for s in range(seeds):
        row = [d[s, p] for p in range(prompts) if not np.isnan(d[s, p])]
        if row:
            seed_means.append(sum(row) / len(row))
    m = sum(seed_means) / len(seed_means)
    se_s2 = sum((x - m) ** 2 for x in seed_means) / (len(seed_means) - 1) / len(seed_means)
    prompt_means = []
    for p in range(prompts):
        col = [d[s, p] for s in range(seeds) if not np.isnan(d[s, p])]
        prompt_means.append(sum(col) / len(col) if col else None)
    reps = []
    for row in idx:  # one bootstrap replicate: prompts drawn with replacement
        drawn = [prompt_means[p] for p in row if prompt_means[p] is not None]
        reps.append(sum(drawn) / max(len(drawn), 1))
    r = sum(reps) / len(reps)
    se_p2 = sum((x - r) ** 2 for x in reps) / (len(reps) - 1)
    used = sum(x is not None for x in prompt_means)
    se2 = se_s2 + se_p2
    df = se2 ** 2 / (se_s2 ** 2 / (len(seed_means) - 1) + se_p2 ** 2 / (used - 1))
    return point, se2 ** 0.5, df, t_quantile(0.975, df) * se2 ** 0.5


@pytest.mark.parametrize("nan_share", [0.0, 0.1])
def test_estimate_matches_its_naive_twin(nan_share):
    rng = np.random.default_rng(7)
    d = 0.02 + 0.05 * rng.standard_normal((5, 1)) + 0.2 * rng.standard_normal((5, 60))
    d[rng.random(d.shape) < nan_share] = np.nan
    d[:, 3] = np.nan  # a prompt no seed could score drops out of every replicate
    ci = Intervals(60, 200, seed=2)
    e = ci.estimate(d)
    point, se, df, half = naive_estimate(d, ci.idx)
    assert e.value == pytest.approx(point, abs=1e-12)
    assert e.se == pytest.approx(se, rel=1e-9)
    assert e.df == pytest.approx(df, rel=1e-9)
    assert (e.lo, e.hi) == pytest.approx((point - half, point + half), abs=1e-9)
    assert e.lo <= e.value <= e.hi


def test_pairing_cancels_what_two_arms_share():
    """Two arms on the same prompts and seeds share each prompt's difficulty and each seed's
    luck; the paired difference's interval is then far narrower than the arms' intervals
    combined as if independent, and it still covers the true difference."""
    rng = np.random.default_rng(11)
    shared = 0.3 * rng.standard_normal((1, 400)) + 0.05 * rng.standard_normal((5, 1))
    a = 0.70 + shared + 0.05 * rng.standard_normal((5, 400))
    b = 0.68 + shared + 0.05 * rng.standard_normal((5, 400))
    ci = Intervals(400, 500)
    paired, ea, eb = ci.estimate(a - b), ci.estimate(a), ci.estimate(b)
    assert paired.se < 0.2 * (ea.se ** 2 + eb.se ** 2) ** 0.5
    assert paired.lo <= 0.02 <= paired.hi and not paired.includes_zero


def _mde_formula(se: float, df: float) -> float:
    return (t_quantile(0.975, df) + t_quantile(0.80, df)) * se


def test_mde_is_the_power_formula_and_has_80_percent_power():
    """A true difference equal to the MDE is found (interval excludes 0) about 80% of the
    time: checked by simulation where held-out prompts dominate (df large)."""
    rng = np.random.default_rng(5)
    seeds, prompts, noise = 5, 300, 0.25
    ci = Intervals(prompts, 300, seed=3)

    def draw(truth):
        return truth + noise * rng.standard_normal((seeds, prompts))

    pilot = [ci.estimate(draw(0.0)) for _ in range(50)]
    for e in pilot[:5]:
        assert e.mde == pytest.approx(_mde_formula(e.se, e.df), rel=1e-12)
    mde = float(np.median([e.mde for e in pilot]))
    # The naive twin of the MDE: the known SE of a mean of seeds x prompts i.i.d. values,
    # counted twice (seed and prompt parts both see the same noise), times z's.
    expected_se = (2 * noise ** 2 / (seeds * prompts)) ** 0.5
    assert mde == pytest.approx((1.959964 + 0.841621) * expected_se, rel=0.08)
    found = [not ci.estimate(draw(mde)).includes_zero for _ in range(400)]
    # Counting within-seed noise in both parts makes the test conservative: power a bit
    # under 80% against its own MDE, never far above it.
    assert 0.70 <= float(np.mean(found)) <= 0.88


def naive_heldout_size(sd_diff, seeds, target, smallest, available):
    """Smallest P in smallest, 2 x smallest, ... (capped at available) whose evaluation-noise
    MDE, 2.8016 x sd / sqrt(seeds x P), is at most the target."""
    p = smallest
    while True:
        if 2.801585 * sd_diff / (seeds * min(p, available)) ** 0.5 <= target or p >= available:
            return min(p, available)
        p *= 2


@pytest.mark.parametrize("sd_diff", [0.01, 0.05, 0.1, 0.136, 0.2, 0.3, 0.5])
@pytest.mark.parametrize("seeds", [2, 3, 5, 8])
def test_heldout_size_matches_its_naive_twin(sd_diff, seeds):
    for target, smallest, available in ((0.01, 128, 1024), (0.05, 48, 48), (0.02, 64, 5000)):
        assert heldout_size(sd_diff, seeds, target, smallest, available) == \
            naive_heldout_size(sd_diff, seeds, target, smallest, available)
