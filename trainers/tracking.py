"""Experiment tracking through accelerate's trackers (``train.report_to``): TensorBoard,
MLflow or Weights & Biases, on local files unless the user points them at a server.

Per-step training metrics go to a run named after the output model (``policy-r001``); the
loop's per-round held-out evaluations go to a run named ``loop-evals`` through
``log_round_evaluation``. Nothing here makes a network call by default: wandb runs offline
(``WANDB_MODE=offline`` unless set), MLflow writes a file store under the tracking directory
(unless ``MLFLOW_TRACKING_URI`` is set); ``metrics.jsonl`` stays the record either way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.config import Config, TrainConfig

EVAL_RUN = "loop-evals"


def tracking_dir(t: TrainConfig, workdir: Path) -> Path:
    return Path(t.tracking_dir) if t.tracking_dir else Path(workdir) / "tracking"


def _offline_defaults(kind: str, directory: Path) -> None:
    """Local files unless the user configured a server through the tools' own variables."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(directory))
    elif kind == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", (directory / "mlruns").resolve().as_uri())


def accelerator_kwargs(t: TrainConfig, workdir: Path) -> dict:
    """``Accelerator(**...)`` arguments that turn tracking on (none when it is off)."""
    if not t.report_to:
        return {}
    directory = tracking_dir(t, workdir)
    _offline_defaults(t.report_to, directory)
    return {"log_with": t.report_to, "project_dir": str(directory)}


def start_run(accelerator, t: TrainConfig, run_name: str, cfg: Config) -> None:
    if t.report_to:
        flat = {f"{section}.{k}": v if isinstance(v, int | float | str | bool) else str(v)
                for section, values in cfg.model_dump().items() for k, v in values.items()}
        accelerator.init_trackers(run_name, config=flat)


def log_step(accelerator, t: TrainConfig, row: dict) -> None:
    """One metrics.jsonl row (``step`` is the x-axis; None and NaN values are left out)."""
    if t.report_to:
        accelerator.log(_scalars(row), step=row["step"])


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, int | float) and not math.isnan(float(v))}


def log_round_evaluation(cfg: Config, workdir: Path, round_: int, metrics: dict) -> None:
    """The loop's held-out evaluation of policy ``round_`` (x-axis = round) to the
    configured tracker; nothing when ``train.report_to`` is empty."""
    t = cfg.train
    if not t.report_to:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    directory = tracking_dir(t, workdir)
    _offline_defaults(t.report_to, directory)
    cls = LOGGER_TYPE_TO_CLASS[t.report_to]
    if t.report_to == "tensorboard":
        tracker = cls(EVAL_RUN, str(directory))
    elif t.report_to == "mlflow":
        tracker = cls(EVAL_RUN, str(directory), run_name=f"round-{round_}")
    else:
        tracker = cls(EVAL_RUN, dir=str(directory))
    tracker.start()
    tracker.log(_scalars(metrics), step=round_)
    tracker.finish()
