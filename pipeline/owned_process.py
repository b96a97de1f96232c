"""A server process that does not outlive the process that started it.

A `grpo` run starts the embedded judge's vLLM server as a child in its own session, and stops
it on the way out. A run that is killed (SIGKILL, the OOM killer, or SIGTERM from a job
scheduler, which skips Python's clean-up) never gets there: the server, which holds the
model and its KV cache (on a GPU, the memory the next run needs), would live on with no
owner. So the server runs under this guard:

    python -m pipeline.owned_process OWNER_PID -- CMD ...

The caller starts the guard in a new session; CMD and whatever it starts join the guard's
process group. The guard passes SIGTERM and SIGINT on to CMD, exits with its exit code
(128 + N for signal N, as a shell reports it), and checks every second that OWNER_PID is
still its parent; once it is not, it ends CMD (SIGTERM, then SIGKILL to the whole group
after a grace period) and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_S = 1.0  # how soon an orphaned server is noticed
GRACE_S = 20.0  # how long it gets to shut down before the group is killed


def owned_command(cmd: list[str]) -> list[str]:
    """``cmd`` under the guard, owned by this process. Start it with
    ``start_new_session=True``: the guard, the server and whatever the server starts then
    share one process group that ``os.killpg`` on the guard's pid reaches."""
    return [sys.executable, "-m", "pipeline.owned_process", str(os.getpid()), "--", *cmd]


def run(owner: int, cmd: list[str]) -> int:
    child = subprocess.Popen(cmd)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait(timeout=POLL_S)
            return 128 - code if code < 0 else code
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != owner:  # the owner died: this guard was handed to init
            child.terminate()
            try:
                child.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            # Whatever the server started and left behind goes too (this guard with it).
            os.killpg(os.getpgrp(), signal.SIGKILL)
            return 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m pipeline.owned_process OWNER_PID -- CMD ...", file=sys.stderr)
        return 2
    return run(int(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
