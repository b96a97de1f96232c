"""Live processes by session, read from /proc: what a test checks a command left running, or
which processes a server runs."""

from __future__ import annotations

import os


def session_processes(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid`` (zombies are gone already)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found
