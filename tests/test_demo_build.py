"""`grpo build-demo-model` builds the demo's reward model and judge only where the config's
judging uses them, and never leaves one trained for an older policy beside a rebuilt one; and
the flows package gives Prefect's temporary server time to start on a busy machine."""

from __future__ import annotations

import shutil

from pipeline.config import load_config
from pipeline.resolve import DEMO_JUDGE_DIR, DEMO_POLICY_DIR, DEMO_RM_DIR, demo_judges_used

VERIFIER_ONLY = {"judging.sources": ["verifier"], "loop.gold": ""}


def test_the_demo_config_uses_both_demo_judges_and_others_need_neither():
    assert demo_judges_used(load_config()) == {"reward_model": True, "judge": True}
    assert demo_judges_used(load_config(overrides=VERIFIER_ONLY)) == \
        {"reward_model": False, "judge": False}
    remote = load_config(overrides={"llm_judge.base_url": "http://127.0.0.1:9/v1",
                                    "judging.reward_models": ["/models/my-rm"]})
    assert demo_judges_used(remote) == {"reward_model": False, "judge": False}


def test_a_verifier_only_build_trains_no_judge_and_drops_stale_ones(tmp_path, demo_model_dir,
                                                                     prefect_harness):
    from flows.demo import build_demo_models

    # Present models are kept, and nothing the config does not use is built.
    kept = tmp_path / "kept"
    shutil.copytree(demo_model_dir, kept / DEMO_POLICY_DIR)
    built = build_demo_models(str(kept), None, {**VERIFIER_ONLY, "demo_model.max_steps": 5})
    assert set(built) == {"prompts", "not_built"}
    assert set(built["not_built"]) == {"reward_model", "judge"}
    assert not (kept / DEMO_RM_DIR).exists() and not (kept / DEMO_JUDGE_DIR).exists()

    # A rebuilt policy makes the reward model and judge trained on the old one's samples
    # stale: unused ones are removed rather than left to be picked up by a later run.
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(demo_model_dir, rebuilt / DEMO_POLICY_DIR)
    for stale in (DEMO_RM_DIR, DEMO_JUDGE_DIR):
        (rebuilt / stale).mkdir(parents=True)
        (rebuilt / stale / "config.json").write_text("{}")
    built = build_demo_models(str(rebuilt), None, {**VERIFIER_ONLY, "demo_model.max_steps": 5},
                              force=True)
    assert "policy" in built and "reward_model" not in built and "judge" not in built
    assert "removed" in built["not_built"]["reward_model"]
    assert not (rebuilt / DEMO_RM_DIR).exists() and not (rebuilt / DEMO_JUDGE_DIR).exists()
    assert (rebuilt / DEMO_POLICY_DIR / "config.json").is_file()


def test_flows_give_the_temporary_prefect_server_time_to_start_unless_the_user_says():
    import os
    import subprocess
    import sys

    probe = ("import flows; from prefect.settings import "
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; print(s.value())")
    env = {k: v for k, v in os.environ.items()
           if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    for extra, expected in (({}, "120"), ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS":
                                           "45"}, "45")):
        out = subprocess.run([sys.executable, "-c", probe], env={**env, **extra},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] in (expected, expected + ".0")
