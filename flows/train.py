"""Prefect flow: train the policy on ranked groups of the given rounds."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow

from pipeline.config import load_config
from trainers.loop import train


@flow(name="train", validate_parameters=False)
def train_flow(workdir: str, config_path: str | None = None, rounds: list[int] | None = None,
               overrides: dict | None = None, output_dir: str | None = None,
               reference_dir: str | None = None, resume: bool = False,
               show_progress: bool = True) -> dict:
    """Train from ``policy.model``; the reference defaults to that same starting policy."""
    cfg = load_config(config_path, overrides)
    workdir_p = Path(workdir)
    policy = cfg.require_policy(workdir_p)
    rounds = rounds or [0]
    out = Path(output_dir) if output_dir else \
        workdir_p / "models" / f"policy-r{max(rounds) + 1:03d}"
    result = train(cfg, workdir_p, rounds, policy, Path(reference_dir or policy), out,
                   resume=resume, show_progress=show_progress)
    return asdict(result)
