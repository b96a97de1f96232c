"""Source names from the config: verifier:NAME, rm:NAME, rm-ensemble:HOW, llm:NAME.

Pure functions of the config (no file access), so the config can check that ``loop.gold``
names a configured source before anything runs.
"""

from __future__ import annotations

from pathlib import Path

DEMO = "demo"


def verifier_name(spec: str) -> str:
    """'sort_digits' -> sort_digits; 'pkg.module:function' -> function."""
    return spec.rpartition(":")[2] if ":" in spec else spec


def reward_model_name(spec: str) -> str:
    return DEMO if spec == DEMO else Path(spec.rstrip("/")).name


def source_names(cfg) -> list[str]:
    j = cfg.judging
    out = []
    if "verifier" in j.sources and j.verifier:
        out.append(f"verifier:{verifier_name(j.verifier)}")
    if "reward_model" in j.sources:
        out += [f"rm:{reward_model_name(s)}" for s in j.reward_models]
    if "llm" in j.sources:
        out.append(f"llm:{cfg.llm_judge.name}")
    return out


def ensemble_members(cfg) -> list[str]:
    """The reward-model sources an ensemble combines: every configured one except the gold
    (a held-out judge must not reach the consensus through the ensemble either)."""
    j = cfg.judging
    if "reward_model" not in j.sources:
        return []
    return [s for s in (f"rm:{reward_model_name(x)}" for x in j.reward_models)
            if s != cfg.loop.gold]


def ensemble_name(cfg) -> str | None:
    """rm-ensemble:HOW when two or more reward models can be combined."""
    return f"rm-ensemble:{cfg.judging.combine}" if len(ensemble_members(cfg)) > 1 else None
