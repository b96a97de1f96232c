from pathlib import Path

import pytest

from flows.cli import main
from pipeline.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"generation.k": 1}, "generation.k"),
        ({"generation.temperature": -0.5}, "generation.temperature"),
        ({"task.name": "no_such_task"}, "task.name"),
        ({"generation.top_p": 0.0}, "generation.top_p"),
        ({"generation.kk": 3}, "generation: unknown key"),
        ({"generation.k": "eight"}, "generation.k: expected int"),
        ({"policy.dtype": "int3"}, "policy.dtype"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=override)


def test_demo_config_is_valid_and_fingerprint_tracks_changes():
    cfg = load_config()
    assert cfg.generation.k == 8
    other = load_config(overrides={"generation.k": 4})
    assert cfg.fingerprint("generation") != other.fingerprint("generation")
    assert cfg.fingerprint("generation") == load_config().fingerprint("generation")
    # The task section does not feed a generation-only fingerprint.
    assert cfg.fingerprint("generation") == load_config(
        overrides={"task.seed": 9}).fingerprint("generation")


def test_missing_model_fails_before_work(tmp_path):
    cfg = load_config(overrides={"policy.model": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="policy.model: no model at"):
        cfg.require_policy(tmp_path)
    demo = load_config()
    with pytest.raises(ConfigError, match="build-demo-model"):
        demo.require_policy(tmp_path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides={"generation.k": 5, "task.n_train_prompts": 7})
    path = tmp_path / "resolved.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--set", "generation.k=1"], "generation.k"),
        (["generate", "--set", "generation.temperature=-1"], "generation.temperature"),
        (["generate", "--set", "task.name=zzz"], "task.name"),
        (["generate", "--set", "policy.model=/does/not/exist"], "policy.model"),
        (["generate", "--config", "/no/such.toml"], "--config"),
    ],
)
def test_cli_rejects_bad_config_with_exit_2(argv, message, tmp_path, capsys):
    rc = main([*argv, "--workdir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    # Nothing was started: no round directory, no catalog.
    assert not (tmp_path / "rounds").exists()
    assert not Path(tmp_path / "catalog.duckdb").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["rank"], "has no candidates in"),
    (["train", "--set", "policy.model='{model}'"], "has no candidates yet; run `grpo generate`"),
])
def test_stages_out_of_order_say_what_to_run(argv, message, tmp_path, capsys, prefect_harness,
                                             demo_model_dir):
    argv = [a.replace("{model}", str(demo_model_dir)) for a in argv]
    assert main([*argv, "--workdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
