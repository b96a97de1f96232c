"""A server started under pipeline.owned_process never outlives the process that started
it: killed (SIGKILL) or terminated (SIGTERM, no clean-up) owner, the server goes within a
few seconds; a normal stop is passed on and its exit code comes back; the embedded judge's
vLLM server is started under the guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.owned_process import owned_command

ROOT = Path(__file__).resolve().parent.parent

# An owner that starts a long sleep under the guard, prints the guard's pid, then waits.
OWNER = """
import subprocess, sys, time
from pipeline.owned_process import owned_command
guard = subprocess.Popen(owned_command(["sleep", "600"]), start_new_session=True)
print(guard.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _start_owner() -> tuple[subprocess.Popen, int, int]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    guard = int(owner.stdout.readline())
    deadline = time.monotonic() + 30
    while not _children(guard):
        assert time.monotonic() < deadline, "the guard did not start its command"
        time.sleep(0.1)
    (server,) = _children(guard)
    return owner, guard, server


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_server_ends_when_its_owner_is_killed(how):
    owner, guard, server = _start_owner()
    try:
        assert _alive(server) and Path(f"/proc/{server}/cmdline").read_bytes().startswith(b"sleep")
        owner.send_signal(how)
        owner.wait(timeout=10)
        assert _wait_gone([guard, server], 15) == []
    finally:
        for pid in (guard, server):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_stop_is_passed_on_and_the_exit_code_comes_back():
    guard = subprocess.Popen(owned_command([sys.executable, "-c", "import sys, time; "
                                           "time.sleep(600)"]), start_new_session=True)
    deadline = time.monotonic() + 30
    while not _children(guard.pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (server,) = _children(guard.pid)
    guard.terminate()
    assert guard.wait(timeout=15) == 128 + signal.SIGTERM
    assert _wait_gone([server], 5) == []
    done = subprocess.run(owned_command([sys.executable, "-c", "raise SystemExit(3)"]),
                          timeout=30)
    assert done.returncode == 3


def test_the_judge_server_runs_under_the_guard(tmp_path):
    from pipeline.judging.server import VllmServer

    server = VllmServer(tmp_path / "no-model", "judge", log_path=tmp_path / "log")
    server.start()
    try:
        cmdline = [b""]
        deadline = time.monotonic() + 10
        while cmdline == [b""] and time.monotonic() < deadline:  # empty until the exec lands
            cmdline = Path(f"/proc/{server._proc.pid}/cmdline").read_bytes().split(b"\0")
            time.sleep(0.05)
        assert cmdline[1:4] == [b"-m", b"pipeline.owned_process", str(os.getpid()).encode()]
        assert b"vllm.entrypoints.openai.api_server" in cmdline
    finally:
        server.stop()
