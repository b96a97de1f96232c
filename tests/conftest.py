"""Session fixtures: the tiny demo policy is built once, Prefect's test server starts once.

Nothing is downloaded: the model and tokenizer are trained here, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Config, load_config

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def demo_cfg() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory, demo_cfg) -> Path:
    from pipeline.demo_model import build_demo_model

    out = tmp_path_factory.mktemp("models") / "demo-policy"
    build_demo_model(demo_cfg, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def small_overrides(model_dir: Path, **extra) -> dict:
    """A quick generation config against the session's demo model."""
    base = {
        "policy.model": str(model_dir),
        "task.n_train_prompts": 24,
        "task.n_heldout_prompts": 8,
        "generation.k": 4,
        "generation.shard_size": 8,
    }
    base.update(extra)
    return base
