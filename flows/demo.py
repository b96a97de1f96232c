"""Prefect flow: the embedded default end to end, on whatever stages exist."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.generate import generation_flow
from pipeline.config import load_config
from pipeline.demo_model import build_demo_model
from pipeline.demo_reward_model import build_demo_reward_model


@task(name="build-demo-model", cache_policy=NO_CACHE)
def build_demo_model_task(workdir: str, config_path: str | None, overrides: dict | None) -> str:
    cfg = load_config(config_path, overrides)
    out = cfg.policy_path(Path(workdir))
    if not (out / "config.json").exists():
        build_demo_model(cfg, out)
    rm = Path(workdir) / "models" / "demo-rm"
    if not (rm / "config.json").exists():
        build_demo_reward_model(cfg, out, rm)
    return str(out)


@flow(name="demo", validate_parameters=False)
def demo_flow(workdir: str, config_path: str | None = None, overrides: dict | None = None):
    cfg = load_config(config_path, overrides)
    if cfg.policy.model == "demo":
        build_demo_model_task(workdir, config_path, overrides)
    return generation_flow(workdir, config_path, 0, overrides)
