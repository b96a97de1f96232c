"""What `grpo build-demo-model` must (re)build in a workdir, and the record each build leaves.

The embedded default's artifacts (the prompts file, the policy, its reward model and judge)
are ordinary files a later run picks up, so a changed ``[demo_model]`` or ``[demo_judge]``
must not be answered with an artifact built under the old settings. Each build leaves a
record of the settings it used (``demo_build_report.json``: a name the model fingerprint
ignores, so the record never changes a model's identity), and the reward model's and judge's
also the fingerprint of the policy whose samples trained them. An artifact is rebuilt when it
is missing, when its record differs from the config, or when it was trained on another policy
than the one there now (rebuilt in this call, or in an earlier one cut off before the reward
model or judge was rebuilt). ``threads`` is not part of the record: it sets the speed and the
float rounding, not the recipe.

An artifact without a record (built before records existed, or by calling a builder directly,
as the test fixtures do) is kept: delete it, or pass ``--force``, to rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import resolve
from pipeline.atomic import write_text_atomic
from pipeline.config import Config
from pipeline.fingerprints import default_cache, model_fingerprint

RECORD = "demo_build_report.json"
ORDER = ("prompts", "policy", "reward_model", "judge")
TRAINED_ON_POLICY = ("reward_model", "judge")
_SPEED_ONLY = {"threads"}


def artifact_path(workdir: Path, name: str) -> Path:
    return Path(workdir) / {"prompts": resolve.DEMO_PROMPTS, "policy": resolve.DEMO_POLICY_DIR,
                            "reward_model": resolve.DEMO_RM_DIR,
                            "judge": resolve.DEMO_JUDGE_DIR}[name]


def record_path(workdir: Path, name: str) -> Path:
    path = artifact_path(workdir, name)
    # Hidden beside the prompts file: a prompts.path glob over that folder must not read it.
    return path.with_name(f".{path.name}.{RECORD}") if name == "prompts" else path / RECORD


def settings(cfg: Config, name: str) -> dict:
    """The config values the artifact's content depends on."""
    m, j = cfg.demo_model, cfg.demo_judge
    if name == "prompts":
        return {"task": m.task, "prompts_train": m.prompts_train,
                "prompts_heldout": m.prompts_heldout, "prompts.seed": cfg.prompts.seed}
    if name == "policy":
        skip = _SPEED_ONLY | {"prompts_train", "prompts_heldout", "rm_prompts", "rm_steps"}
        return {**{k: v for k, v in m.model_dump().items() if k not in skip},
                "prompts.seed": cfg.prompts.seed}
    if name == "reward_model":
        return {"task": m.task, "seed": m.seed, "rm_prompts": m.rm_prompts,
                "rm_steps": m.rm_steps}
    if name == "judge":
        q = cfg.llm_judge
        return {**{k: v for k, v in j.model_dump().items() if k not in _SPEED_ONLY},
                "task": m.task, "llm_judge.score_low": q.score_low,
                "llm_judge.score_high": q.score_high,
                # the policy's samples it trains on are this long; generation.seed only
                # orders the report's views, so it is left out
                "generation.max_new_tokens": cfg.generation.max_new_tokens}
    raise ValueError(f"unknown demo artifact {name!r}; known: {ORDER}")


def recorded(workdir: Path, name: str) -> dict | None:
    """The settings an artifact was built with, or None when it has no record."""
    record = _record(workdir, name)
    return record["settings"] if record else None


def _record(workdir: Path, name: str) -> dict | None:
    path = record_path(workdir, name)
    return json.loads(path.read_text()) if path.is_file() else None


def _policy_fingerprint(workdir: Path) -> str:
    # Through the workdir's fingerprint cache, as generation and judging read it: the
    # policy's files are hashed once, not once per plan, record and round.
    return model_fingerprint(artifact_path(workdir, "policy"), default_cache(workdir))


def write_record(cfg: Config, workdir: Path, name: str) -> None:
    record: dict = {"settings": settings(cfg, name)}
    if name in TRAINED_ON_POLICY:
        record["policy"] = _policy_fingerprint(workdir)
    write_text_atomic(json.dumps(record, indent=1), record_path(workdir, name))


def _considered(cfg: Config) -> list[str]:
    """The artifacts the config needs, in build order: the reward model and judge only
    where its judging uses them (``resolve.demo_judges_used``)."""
    used = resolve.demo_judges_used(cfg)
    return [n for n in ORDER if n not in TRAINED_ON_POLICY or used[n]]


def unrecorded(cfg: Config, workdir: Path, plan: dict[str, str]) -> list[str]:
    """Artifacts the plan keeps although nothing says what they were built with."""
    return [n for n in _considered(cfg) if n not in plan and _exists(workdir, n)
            and _record(workdir, n) is None]


def _exists(workdir: Path, name: str) -> bool:
    path = artifact_path(workdir, name)
    return path.is_file() if name == "prompts" else (path / "config.json").is_file()


def _changed(old: dict, new: dict) -> list[str]:
    """Settings of ``new`` that ``old`` lacks or holds otherwise (ones since dropped from the
    config do not count)."""
    return sorted(k for k, v in new.items() if old.get(k) != v)


def build_plan(cfg: Config, workdir: Path, force: bool = False) -> dict[str, str]:
    """Artifact name -> why it is built, for those to build, in build order. Only the reward
    model and judge the config's judging uses are considered (``resolve.demo_judges_used``)."""
    plan: dict[str, str] = {}
    for name in _considered(cfg):
        if force:
            plan[name] = "--force"
        elif not _exists(workdir, name):
            plan[name] = "missing"
        elif name in TRAINED_ON_POLICY and "policy" in plan:
            plan[name] = "trained on the policy, which is rebuilt"
        elif (record := _record(workdir, name)) is None:
            continue
        elif keys := _changed(record["settings"], settings(cfg, name)):
            plan[name] = "built with other settings: " + ", ".join(keys)
        elif name in TRAINED_ON_POLICY and record.get("policy") != _policy_fingerprint(workdir):
            plan[name] = "trained on another policy than the one there now"
    return plan
