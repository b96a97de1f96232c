"""What every benchmark shares: the machine it ran on, repeated measurements with their
spread, peak memory of one job in a fresh process, and the closing JSON line.

Conventions (README, Performance): a benchmark runs both as ``python -m bench.NAME`` and as
``python bench/NAME.py`` (each script puts its checkout first on ``sys.path``), prints the date
and the machine first, reports a speed as the median of at least 3 interleaved repetitions
with the range, ends with one JSON line, and has a ``--quick`` mode that runs it end to end
on tiny settings in seconds (run by ``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import statistics
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# CPU features that decide which kernels torch (oneDNN) and vLLM use on x86.
TORCH_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
                   "amx_tile", "amx_bf16", "amx_int8")


def machine(packages: tuple[str, ...] = ("torch",)) -> dict[str, Any]:
    """Date, cores, CPU model and flags, memory, Python and package versions."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor() or "unknown")
    flags_line = next((ln.split(":", 1)[1] for ln in cpuinfo.splitlines()
                       if ln.startswith("flags")), "")
    flags = set(flags_line.split())
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                   if ln.startswith("MemTotal:")), 0)
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": model, "cpu_flags": [f for f in TORCH_CPU_FLAGS if f in flags],
        "memory_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2), **versions}


def print_machine(info: dict[str, Any]) -> None:
    others = ", ".join(f"{k} {v}" for k, v in info.items() if k not in {
        "date", "cores", "cores_usable", "cpu", "cpu_flags", "memory_gib", "load_average_1min"})
    print(f"date: {info['date']}")
    print(f"machine: {info['cores']} cores ({info['cores_usable']} usable), {info['cpu']}, "
          f"{info['memory_gib']} GiB; flags: {' '.join(info['cpu_flags']) or 'none of note'}; "
          f"load average {info['load_average_1min']} at start")
    print(f"software: {others}")


def spread(values: list[float]) -> dict[str, float]:
    """Median with the range of the repetitions (min, max) and their number."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt(stat: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max, n=3) unit``."""
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(stat['median'])} ({f.format(stat['min'])}-{f.format(stat['max'])}, "
            f"n={stat['n']}){' ' + unit if unit else ''}")


def run_isolated(job: Callable[..., dict], *args: Any,
                 preload: tuple[str, ...] = ("torch", "polars", "pyarrow", "numpy")) -> dict:
    """Run ``job(*args)`` in a fresh process and return its result with ``peak_rss_mib``.

    Peak memory of one stage can only be read in a process that did nothing else: each job
    is forked from a server process that has only imported the modules (so there is no
    import cost per job and every job starts from the same baseline). ``job`` must be a
    module-level function returning a picklable dict; ``preload`` (modules the server
    imports, fixed by the first call) belongs to every job's baseline.
    """
    ctx = _context(preload)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, job, args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = {"error": "the job's process died without a result"}
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{getattr(job, '__name__', job)} failed: {result['error']}")
    return result


def _child(conn, job, args) -> None:
    try:
        result = dict(job(*args))
        result["peak_rss_mib"] = _peak_rss_mib()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        import traceback

        result = {"error": "".join(traceback.format_exception(exc))}
    conn.send(result)
    conn.close()


_CTX: list = []


def _context(preload: tuple[str, ...]):
    """The forkserver context, started once per benchmark process."""
    if not _CTX:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        _CTX.append(ctx)
    return _CTX[0]


def _peak_rss_mib() -> float:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit_json(record: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps(record, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
