"""The benchmarks' shared helper: a job's peak memory is its own, figures carry a spread."""

from __future__ import annotations

import numpy as np
import pytest

from bench._common import fmt, machine, run_isolated, spread


def allocate(mib: int) -> dict:
    block = np.ones(mib * 2**20, np.uint8)  # touched, so resident
    return {"sum": int(block[:: 2**20].sum())}


@pytest.mark.slow
def test_each_job_reports_its_own_peak_memory():
    big = run_isolated(allocate, 400, preload=("numpy",))
    small = run_isolated(allocate, 8, preload=("numpy",))
    assert big["sum"] == 400 and small["sum"] == 8
    # A fresh process per job: the small one does not inherit the big one's peak.
    assert big["peak_rss_mib"] - small["peak_rss_mib"] > 350


def test_spread_and_machine():
    stat = spread([3.0, 1.0, 2.0])
    assert stat == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert fmt(stat, 1, "s") == "2.0 (1.0-3.0, n=3) s"
    info = machine(("numpy",))
    assert info["cores"] >= 1 and info["numpy"] == np.__version__
    assert isinstance(info["cpu_flags"], list) and info["date"]
