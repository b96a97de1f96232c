"""Prefect flow: train a policy on ranked groups of the given rounds."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow

from pipeline.config import ConfigError, load_config
from pipeline.rounds import round_policy, trained_policy_dir
from trainers.loop import train


def training_policy(workdir: Path, rounds: list[int]) -> Path:
    """The model the newest of the rounds was generated with: training continues from it."""
    policy = round_policy(workdir, max(rounds))
    if policy is None:
        raise ConfigError(f"round {max(rounds)} of {workdir} was never generated; run "
                          f"`grpo generate --round {max(rounds)}` first")
    if not (policy / "config.json").is_file():
        raise ConfigError(f"round {max(rounds)} was generated with {policy}, which is gone; "
                          "restore it or train another round")
    return policy


@flow(name="train", validate_parameters=False)
def train_flow(workdir: str, config_path: str | None = None, rounds: list[int] | None = None,
               overrides: dict | None = None, output_dir: str | None = None,
               reference_dir: str | None = None, resume: bool = False, force: bool = False,
               show_progress: bool = True) -> dict:
    """Train from the policy that generated the rounds; the reference defaults to it too.
    The output defaults to the loop's model for the next round and is never overwritten
    without ``force``."""
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    rounds = rounds or [0]
    policy = training_policy(wd, rounds)
    out = Path(output_dir) if output_dir else trained_policy_dir(wd, max(rounds) + 1)
    result = train(cfg, wd, rounds, policy, Path(reference_dir or policy), out,
                   resume=resume, show_progress=show_progress, overwrite=force)
    return asdict(result)
