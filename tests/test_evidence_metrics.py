"""The evidence benchmark's per-prompt metrics (gold, win rate, hack rates) against naive
loop twins of their definitions in ``trainers.evaluate``, NaNs and ties included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.evidence_eval import hack, per_prompt, within_prompt_z
from bench.evidence_plan import GOLD, PROXY


def naive_hack(gold, signal):
    out = []
    for g, s in zip(gold.tolist(), signal.tolist(), strict=True):
        if all(math.isnan(x) for x in g) or all(math.isnan(x) for x in s):
            out.append(math.nan)
            continue
        fav = max((x, -i) for i, x in enumerate(s) if not math.isnan(x))  # first of ties
        picked = g[-fav[1]]
        best = max(x for x in g if not math.isnan(x))
        out.append(1.0 if picked < best else 0.0)  # a NaN pick counts as no hack
    return np.array(out)


def _scores(rng, prompts=40, k=4):
    gold = rng.choice([0.0, 0.25, 0.5, 1.0], size=(prompts, k))  # ties are common
    proxy = np.round(rng.standard_normal((prompts, k)), 1)
    gold[3] = np.nan
    proxy[5] = np.nan
    gold[7, 1] = np.nan
    return gold, proxy


def test_hack_matches_its_naive_twin():
    rng = np.random.default_rng(0)
    gold, proxy = _scores(rng)
    mine, theirs = hack(gold, proxy), naive_hack(gold, proxy)
    assert np.array_equal(np.isnan(mine), np.isnan(theirs))
    assert np.array_equal(mine[~np.isnan(mine)], theirs[~np.isnan(theirs)])
    assert 0 < np.nanmean(mine) < 1


def test_per_prompt_gold_and_win_match_naive_twins():
    rng = np.random.default_rng(1)
    gold, proxy = _scores(rng)
    base_gold, _ = _scores(rng)
    ids = np.array([f"p{i}" for i in range(len(gold))])
    arm = {"prompt_ids": ids, GOLD: gold, PROXY: proxy}
    base = {"prompt_ids": ids, GOLD: base_gold, PROXY: proxy}
    got = per_prompt(arm, base, ((PROXY, 1.0),))
    for p in range(len(gold)):
        g = [x for x in gold[p] if not math.isnan(x)]
        assert (math.isnan(got["gold"][p]) if not g else
                got["gold"][p] == pytest.approx(sum(g) / len(g)))
        wins = [1.0 if a > b else 0.5 if a == b else 0.0
                for a, b in zip(gold[p], base_gold[p], strict=True)
                if not (math.isnan(a) or math.isnan(b))]
        assert (math.isnan(got["win"][p]) if not wins else
                got["win"][p] == pytest.approx(sum(wins) / len(wins)))
    assert np.array_equal(np.nan_to_num(got["hack_proxy"], nan=-1),
                          np.nan_to_num(got["hack_own"], nan=-1))  # own signal = the proxy


def test_an_arm_scored_on_other_prompts_is_refused():
    ids = np.array(["a", "b"])
    arm = {"prompt_ids": ids, GOLD: np.zeros((2, 2)), PROXY: np.zeros((2, 2))}
    base = {**arm, "prompt_ids": np.array(["a", "c"])}
    with pytest.raises(ValueError, match="different held-out prompts"):
        per_prompt(arm, base, ((PROXY, 1.0),))


def test_within_prompt_z_standardises_each_prompt():
    x = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    z = within_prompt_z(x)
    assert z[0] == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert np.all(z[1] == 0.0)  # a constant prompt: sd taken as 1, no division by zero
