"""Worker processes (tests/lease_worker.py) started together and released at one moment, so
that they really race for the same leases; none outlives its test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test():
    yield
    while _started:
        p = _started.pop()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def start_worker(*args: str) -> subprocess.Popen:
    """``python -m tests.lease_worker ARGS`` in its own process group (killed whole)."""
    p = subprocess.Popen([sys.executable, "-m", "tests.lease_worker", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    _started.append(p)
    return p


def wait_ready(d: Path, n: int, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    """Until ``n`` workers have written their ``ready-PID`` file in ``d``."""
    deadline = time.time() + timeout
    while len(list(d.glob("ready-*"))) < n:
        for p in procs:
            assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "workers did not start"
        time.sleep(0.02)


def race(d: Path, n: int, *args: str) -> list[str]:
    """Start ``n`` workers with ``ARGS`` (which must include ``d/go``, the file they wait
    for), release them together once all are ready; each one's stdout, in start order."""
    procs = [start_worker(*args) for _ in range(n)]
    wait_ready(d, n, procs)
    (d / "go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    return outs
