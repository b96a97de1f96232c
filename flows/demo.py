"""Building the embedded default: its prompts file, the demo policy, reward model and judge.

Everything lands where the demo config's ``demo`` values resolve (``pipeline.resolve``), as
ordinary files a user could have brought: a JSONL prompts file and Hugging Face model
directories. From there the demo walks the same path as a user's run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow

from pipeline import resolve
from pipeline.config import load_config
from pipeline.demo_judge import build_demo_judge
from pipeline.demo_model import build_demo_model
from pipeline.demo_reward_model import build_demo_reward_model
from pipeline.tasks import get_task
from pipeline.tasks.base import write_prompts_file


@flow(name="build-demo-models", validate_parameters=False)
def build_demo_models(workdir: str, config_path: str | None = None,
                      overrides: dict | None = None, force: bool = False) -> dict:
    """Build whatever is missing (everything with ``force``); a rebuilt policy always gets
    a rebuilt reward model and judge, since both are trained on the policy's samples. The
    reward model and the judge are built only when the config's judging uses them
    (``resolve.demo_judges_used``): a run judged by the verifier alone needs neither."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    d = cfg.demo_model
    prompts = wd / resolve.DEMO_PROMPTS
    policy = wd / resolve.DEMO_POLICY_DIR
    rm = wd / resolve.DEMO_RM_DIR
    judge = wd / resolve.DEMO_JUDGE_DIR
    used = resolve.demo_judges_used(cfg)
    built: dict = {}
    if force or not prompts.exists():
        n = write_prompts_file(get_task(d.task), prompts, d.prompts_train, d.prompts_heldout,
                               seed=cfg.prompts.seed)
        built["prompts"] = {"path": str(prompts), "rows": n}
    if force or not (policy / "config.json").exists():
        built["policy"] = build_demo_model(cfg, policy).__dict__
    if used["reward_model"] and ("policy" in built or not (rm / "config.json").exists()):
        built["reward_model"] = build_demo_reward_model(cfg, policy, rm).__dict__
    if used["judge"] and ("policy" in built or not (judge / "config.json").exists()):
        built["judge"] = build_demo_judge(cfg, policy, judge).__dict__
    for name, path in (("reward_model", rm), ("judge", judge)):
        if used[name]:
            continue
        built.setdefault("not_built", {})[name] = "the config's judging does not use it"
        if "policy" in built and path.exists():
            # trained on the old policy's samples: stale for the new one
            shutil.rmtree(path)
            built["not_built"][name] += "; the one trained for the old policy was removed"
    return built
