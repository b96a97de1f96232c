"""Building the embedded default's models: the demo policy and its reward model."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipeline.config import load_config
from pipeline.demo_model import build_demo_model
from pipeline.demo_reward_model import build_demo_reward_model


@flow(name="build-demo-models", validate_parameters=False)
def build_demo_models(workdir: str, config_path: str | None = None,
                      overrides: dict | None = None, force: bool = False) -> dict:
    """Build whatever is missing (everything with ``force``); a rebuilt policy always gets
    a rebuilt reward model, since the reward model is trained on the policy's samples."""
    cfg = load_config(config_path, overrides)
    policy = cfg.policy_path(Path(workdir))
    rm = Path(workdir) / "models" / "demo-rm"
    built = {}
    if force or not (policy / "config.json").exists():
        built["policy"] = build_demo_model(cfg, policy).__dict__
    if built or not (rm / "config.json").exists():
        built["reward_model"] = build_demo_reward_model(cfg, policy, rm).__dict__
    return built
