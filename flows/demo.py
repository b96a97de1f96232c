"""Building the embedded default: its prompts file, the demo policy, reward model and judge.

Everything lands where the demo config's ``demo`` values resolve (``pipeline.resolve``), as
ordinary files a user could have brought: a JSONL prompts file and Hugging Face model
directories. From there the demo walks the same path as a user's run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow

from pipeline import demo_builds, resolve
from pipeline.config import load_config
from pipeline.demo_judge import build_demo_judge
from pipeline.demo_model import build_demo_model
from pipeline.demo_reward_model import build_demo_reward_model
from pipeline.tasks import get_task
from pipeline.tasks.base import write_prompts_file


@flow(name="build-demo-models", validate_parameters=False)
def build_demo_models(workdir: str, config_path: str | None = None,
                      overrides: dict | None = None, force: bool = False) -> dict:
    """Build what ``demo_builds.build_plan`` says is missing or stale (everything with
    ``force``), each followed by its record of settings. The reward model and the judge are
    built only when the config's judging uses them: a run judged by the verifier alone needs
    neither, and one trained for a policy that was just rebuilt is removed."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    d = cfg.demo_model
    plan = demo_builds.build_plan(cfg, wd, force)
    policy = demo_builds.artifact_path(wd, "policy")
    built: dict = {}
    for name, why in plan.items():
        path = demo_builds.artifact_path(wd, name)
        if name == "prompts":
            n = write_prompts_file(get_task(d.task), path, d.prompts_train, d.prompts_heldout,
                                   seed=cfg.prompts.seed)
            report = {"path": str(path), "rows": n}
        elif name == "policy":
            report = build_demo_model(cfg, path).__dict__
        elif name == "reward_model":
            report = build_demo_reward_model(cfg, policy, path).__dict__
        else:
            report = build_demo_judge(cfg, policy, path).__dict__
        demo_builds.write_record(cfg, wd, name)
        built[name] = {**report, "why": why}
    if kept := demo_builds.unrecorded(cfg, wd, plan):
        built["kept_without_record"] = {
            name: "built before build records (or outside build-demo-model): its settings are "
                  "unknown; --force rebuilds it" for name in kept}
    used = resolve.demo_judges_used(cfg)
    for name in demo_builds.TRAINED_ON_POLICY:
        if used[name]:
            continue
        built.setdefault("not_built", {})[name] = "the config's judging does not use it"
        path = demo_builds.artifact_path(wd, name)
        if "policy" in built and path.exists():
            # trained on the old policy's samples: stale for the new one
            shutil.rmtree(path)
            built["not_built"][name] += "; the one trained for the old policy was removed"
    return built
