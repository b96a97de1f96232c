"""What this machine offers the engines: a GPU, and whether its CPU computes bfloat16
natively. ``policy.dtype = "auto"`` is resolved here, once, for the policy engine and the
embedded judge server alike."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# x86 flags of native bfloat16 arithmetic: without one, bf16 matrix products are emulated
# (converted to float32 and back), which costs more than it saves.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken torch simply means "no GPU here"
        return False


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def engine_dtype(setting: str) -> str:
    """``policy.dtype`` as vLLM gets it. ``auto``: bfloat16 on a GPU that has it (float16 on
    older ones) and on a CPU with native bfloat16 (AVX-512 BF16 or AMX); float32 on any other
    CPU. Measured with bare vLLM calls on a 2-core AVX2 EPYC (bench/generation.py's sweep,
    2026-12-04): float32 generated 1.70x the tokens/s of bfloat16 at the demo's size and
    6.85x at 113M parameters."""
    if setting != "auto":
        return setting
    if has_cuda():
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if NATIVE_BF16_FLAGS & cpu_flags() else "float32"


def engine_eager(setting: bool | str) -> bool:
    """``generation.enforce_eager`` as vLLM gets it. ``auto``: eager on a CPU, compiled
    (CUDA graphs) on a GPU. Measured with bare vLLM calls at 113M parameters on a 2-core
    AMX Xeon (bench/generation.py's sweep, 2026-12-05): compiled generated 1.23x
    (1.15-1.25) the tokens/s of eager, but started in 49.6 s against 14-18 s; a loop that
    keeps one engine and generates a few seconds a round, as the demo does, loses by it.
    On a GPU, eager mode gives up CUDA graphs, which small-batch decoding relies on."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"generation.enforce_eager: true, false or 'auto', got {setting!r}")
    return not has_cuda()
