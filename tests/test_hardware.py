"""policy.dtype = "auto" resolves by what the hardware computes natively, and the embedded
judge server gets more requests in flight than a remote API."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import hardware
from pipeline.config import EMBEDDED_JUDGE_CONCURRENCY, ConfigError, load_config
from pipeline.generation import engine_kwargs


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "float32"),  # bf16 emulated: 1.7-6.9x slower in vLLM (README)
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "bfloat16"),
    (set(), "float32"),  # no /proc/cpuinfo
])
def test_auto_dtype_on_a_cpu_follows_native_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "has_cuda", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert hardware.engine_dtype("auto") == expected
    # An explicit dtype is passed through whatever the hardware.
    for explicit in ("bfloat16", "float16", "float32"):
        assert hardware.engine_dtype(explicit) == explicit


def test_this_machines_flags_and_the_engine_gets_a_resolved_dtype():
    flags = hardware.cpu_flags()
    if Path("/proc/cpuinfo").is_file():
        assert flags  # every x86 or ARM Linux lists some
    cfg = load_config()
    assert cfg.policy.dtype == "auto"  # the demo config leaves it to the hardware
    dtype = engine_kwargs(Path("MODEL"), cfg)["dtype"]
    assert dtype == hardware.engine_dtype("auto") and dtype in {"bfloat16", "float16",
                                                                  "float32"}
    with pytest.raises(ConfigError, match="policy.dtype"):
        load_config(overrides={"policy.dtype": "int8"})


def test_embedded_judge_concurrency_unless_set():
    assert load_config().llm_judge.base_url == "embedded"
    assert load_config().llm_judge.concurrency == EMBEDDED_JUDGE_CONCURRENCY
    assert load_config(overrides={"llm_judge.concurrency": 4}).llm_judge.concurrency == 4
    remote = load_config(overrides={"llm_judge.base_url": "http://127.0.0.1:9/v1"})
    assert remote.llm_judge.concurrency == 4


def test_enforce_eager_auto_is_eager_on_a_cpu_and_compiled_on_a_gpu(monkeypatch):
    cfg = load_config()
    assert cfg.generation.enforce_eager == "auto"
    monkeypatch.setattr(hardware, "has_cuda", lambda: False)
    assert hardware.engine_eager("auto") is True
    assert engine_kwargs(Path("MODEL"), cfg)["enforce_eager"] is True
    monkeypatch.setattr(hardware, "has_cuda", lambda: True)
    assert hardware.engine_eager("auto") is False  # CUDA graphs on a GPU
    for explicit in (True, False):
        assert hardware.engine_eager(explicit) is explicit
        set_cfg = load_config(overrides={"generation.enforce_eager": explicit})
        assert set_cfg.generation.enforce_eager is explicit
    with pytest.raises(ConfigError, match="enforce_eager"):
        load_config(overrides={"generation.enforce_eager": "sometimes"})
    with pytest.raises(ValueError, match="enforce_eager"):
        hardware.engine_eager("false")  # unvalidated text is refused, not read as truthy
