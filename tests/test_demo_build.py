"""`grpo build-demo-model` builds the demo's reward model and judge only where the config's
judging uses them, never leaves one trained for an older policy beside a rebuilt one, and
rebuilds what was built under other settings; and the flows package gives Prefect's
temporary server time to start on a busy machine."""

from __future__ import annotations

import shutil

import pytest

from pipeline import demo_builds
from pipeline.config import load_config
from pipeline.resolve import (
    DEMO_JUDGE_DIR,
    DEMO_POLICY_DIR,
    DEMO_RM_DIR,
    demo_judges_used,
    prompt_files,
)

VERIFIER_ONLY = {"judging.sources": ["verifier"], "loop.gold": ""}


def test_the_demo_config_uses_both_demo_judges_and_others_need_neither():
    assert demo_judges_used(load_config()) == {"reward_model": True, "judge": True}
    assert demo_judges_used(load_config(overrides=VERIFIER_ONLY)) == \
        {"reward_model": False, "judge": False}
    remote = load_config(overrides={"llm_judge.base_url": "http://127.0.0.1:9/v1",
                                    "judging.reward_models": ["/models/my-rm"]})
    assert demo_judges_used(remote) == {"reward_model": False, "judge": False}


def _fake_build(cfg, workdir, names=demo_builds.ORDER, record=True):
    """Artifacts where the builders put them (content is not what the plan reads), each
    with its record of settings unless ``record`` is false."""
    for name in names:
        path = demo_builds.artifact_path(workdir, name)
        if name == "prompts":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")
        if record:
            demo_builds.write_record(cfg, workdir, name)


def test_the_plan_rebuilds_what_is_missing_or_built_under_other_settings(tmp_path):
    cfg = load_config()
    assert demo_builds.build_plan(cfg, tmp_path) == dict.fromkeys(demo_builds.ORDER, "missing")
    _fake_build(cfg, tmp_path)
    assert demo_builds.build_plan(cfg, tmp_path) == {}
    assert demo_builds.build_plan(cfg, tmp_path, force=True) == \
        dict.fromkeys(demo_builds.ORDER, "--force")

    def plan(**sets):
        return demo_builds.build_plan(load_config(overrides=sets), tmp_path)

    # Each setting rebuilds what depends on it, and only that.
    assert plan(**{"demo_judge.steps": 10}) == {"judge": "built with other settings: steps"}
    assert plan(**{"llm_judge.score_high": 5}) == \
        {"judge": "built with other settings: llm_judge.score_high"}
    assert plan(**{"demo_model.rm_steps": 10}) == \
        {"reward_model": "built with other settings: rm_steps"}
    assert plan(**{"demo_model.prompts_train": 10}) == \
        {"prompts": "built with other settings: prompts_train"}
    assert plan(**{"generation.max_new_tokens": 7}) == \
        {"judge": "built with other settings: generation.max_new_tokens"}
    assert plan(**{"generation.seed": 7}) == {}  # orders the judge report's views only
    assert set(plan(**{"prompts.seed": 7})) == {"prompts", "policy", "reward_model", "judge"}
    rebuilt = plan(**{"demo_model.hidden_size": 64})
    assert rebuilt == {"policy": "built with other settings: hidden_size",
                       "reward_model": "trained on the policy, which is rebuilt",
                       "judge": "trained on the policy, which is rebuilt"}
    assert list(rebuilt) == ["policy", "reward_model", "judge"]  # build order
    # Speed alone is no reason; a judge the judging does not use is not considered.
    assert plan(**{"demo_model.threads": 1, "demo_judge.threads": 1}) == {}
    assert plan(**{**VERIFIER_ONLY, "demo_model.hidden_size": 64}) == \
        {"policy": "built with other settings: hidden_size"}


def test_a_judge_trained_on_another_policy_is_rebuilt_after_a_cut_off_build(tmp_path):
    cfg = load_config()
    _fake_build(cfg, tmp_path)
    # A build rebuilt the policy and was killed before the judge and reward model: their
    # records still match the config, but not the policy now there.
    policy = demo_builds.artifact_path(tmp_path, "policy")
    (policy / "model.safetensors").write_bytes(b"new weights")
    demo_builds.write_record(cfg, tmp_path, "policy")
    stale = "trained on another policy than the one there now"
    assert demo_builds.build_plan(cfg, tmp_path) == {"reward_model": stale, "judge": stale}
    # The record names only what the fingerprint ignores: writing it changes nothing.
    demo_builds.write_record(cfg, tmp_path, "judge")
    demo_builds.write_record(cfg, tmp_path, "reward_model")
    assert demo_builds.build_plan(cfg, tmp_path) == {}


def test_an_artifact_without_a_record_is_kept_and_named(tmp_path):
    cfg = load_config()
    _fake_build(cfg, tmp_path, record=False)
    assert demo_builds.recorded(tmp_path, "judge") is None
    changed = load_config(overrides={"demo_judge.steps": 10})
    assert demo_builds.build_plan(changed, tmp_path) == {}
    assert demo_builds.unrecorded(changed, tmp_path, {}) == list(demo_builds.ORDER)
    assert demo_builds.unrecorded(load_config(overrides=VERIFIER_ONLY), tmp_path,
                                  {"prompts": "missing"}) == ["policy"]
    # The prompts record is hidden, so a prompts.path glob over the folder finds prompts only.
    demo_builds.write_record(cfg, tmp_path, "prompts")
    folder = demo_builds.artifact_path(tmp_path, "prompts").parent
    globbed = load_config(overrides={"prompts.path": str(folder / "*")})
    assert [p.name for p in prompt_files(globbed, tmp_path)] == ["demo-prompts.jsonl"]
    with pytest.raises(ValueError, match="unknown demo artifact 'critic'"):
        demo_builds.settings(cfg, "critic")


def test_a_verifier_only_build_trains_no_judge_and_drops_stale_ones(tmp_path, demo_model_dir,
                                                                     prefect_harness):
    from flows.demo import build_demo_models

    # Present models are kept, and nothing the config does not use is built.
    kept = tmp_path / "kept"
    shutil.copytree(demo_model_dir, kept / DEMO_POLICY_DIR)
    built = build_demo_models(str(kept), None, {**VERIFIER_ONLY, "demo_model.max_steps": 5})
    assert set(built) == {"prompts", "not_built", "kept_without_record"}
    assert set(built["kept_without_record"]) == {"policy"}  # copied in, so no record
    assert set(built["not_built"]) == {"reward_model", "judge"}
    assert not (kept / DEMO_RM_DIR).exists() and not (kept / DEMO_JUDGE_DIR).exists()
    # What was built left its record: a second call builds nothing; other settings rebuild it.
    cfg = load_config(overrides={**VERIFIER_ONLY, "demo_model.max_steps": 5})
    assert demo_builds.recorded(kept, "prompts") == demo_builds.settings(cfg, "prompts")
    assert set(build_demo_models(str(kept), None, {**VERIFIER_ONLY, "demo_model.max_steps": 5})) \
        == {"not_built", "kept_without_record"}
    again = build_demo_models(str(kept), None, {**VERIFIER_ONLY, "demo_model.max_steps": 5,
                                                "demo_model.prompts_heldout": 32})
    assert again["prompts"]["why"] == "built with other settings: prompts_heldout"
    assert again["prompts"]["rows"] == load_config().demo_model.prompts_train + 32

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
    assert demo_builds.recorded(rebuilt, "policy")["max_steps"] == 5


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
