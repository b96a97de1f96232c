from pathlib import Path

import pytest

from flows.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.resolve import preflight, resolve_policy


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"generation.k": 1}, "generation.k: got 1; a group needs at least 2"),
        ({"generation.temperature": -0.5}, "generation.temperature"),
        ({"judging.verifier": "no_such_task"}, "judging.verifier: unknown built-in"),
        ({"generation.top_p": 0.0}, "generation.top_p"),
        ({"generation.kk": 3}, "--set generation.kk: unknown key"),
        ({"generation.k": "eight"}, "generation.k: got 'eight'"),
        ({"policy.dtype": "int3"}, "policy.dtype"),
        ({"loop.gold": "rm:nope"}, "loop.gold: 'rm:nope' is not a configured source"),
        ({"judging.reward_models": []}, "judging.reward_models: judging.sources has"),
        ({"llm_judge.views": 1}, "llm_judge.views: got 1"),
        ({"foo.bar": 1}, "--set foo.bar: unknown section 'foo'"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    assert field in str(err.value)


def test_unknown_section_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[genration]\nk = 4\n")
    with pytest.raises(ConfigError, match=f"unknown section.*genration.*{path.name}"):
        load_config(path)


def test_demo_config_is_valid_and_fingerprint_tracks_changes():
    cfg = load_config()
    assert cfg.generation.k == 8 and cfg.loop.gold == "verifier:sort_digits"
    other = load_config(overrides={"generation.k": 4})
    assert cfg.fingerprint("generation") != other.fingerprint("generation")
    assert cfg.fingerprint("generation") == load_config().fingerprint("generation")
    assert cfg.fingerprint("generation") == load_config(
        overrides={"prompts.seed": 9}).fingerprint("generation")


def test_missing_model_fails_before_work(tmp_path):
    cfg = load_config(overrides={"policy.model": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="policy.model: no model at"):
        resolve_policy(cfg, tmp_path)
    with pytest.raises(ConfigError, match="build-demo-model"):
        resolve_policy(load_config(), tmp_path)
    with pytest.raises(ConfigError, match="prompts.path: no demo prompts"):
        preflight(load_config(), tmp_path, prompts=True)
    with pytest.raises(ConfigError, match="judging.reward_models: no model at"):
        preflight(load_config(overrides={"judging.reward_models": [str(tmp_path / "rm")]}),
                  tmp_path, judges=True)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides={"generation.k": 5, "prompts.n_train_per_round": 7})
    path = tmp_path / "resolved.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_class_defaults_need_a_model_and_prompts(tmp_path):
    """A user's config starts from generic defaults, not the demo's."""
    path = tmp_path / "mine.toml"
    path.write_text("[judging]\nreward_models = ['/models/rm']\n")
    cfg = load_config(path)
    assert cfg.loop.gold == "" and cfg.judging.sources == ["reward_model"]
    with pytest.raises(ConfigError, match="policy.model: not set"):
        resolve_policy(cfg, tmp_path)
    with pytest.raises(ConfigError, match="prompts.path: not set"):
        preflight(cfg, tmp_path, prompts=True)


def test_config_schema_lists_every_field(capsys):
    assert main(["config-schema"]) == 0
    out = capsys.readouterr().out
    assert "n_train_per_round" in out and "no prompt repeats until the dataset" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--set", "generation.k=1"], "generation.k"),
        (["generate", "--set", "generation.temperature=-1"], "generation.temperature"),
        (["generate", "--set", "judging.verifier=zzz"], "judging.verifier"),
        (["generate", "--set", "policy.model=/does/not/exist"], "policy.model"),
        (["generate", "--set", "foo.bar=1"], "--set foo.bar: unknown section"),
        (["generate", "--config", "/no/such.toml"], "--config"),
        (["judge", "--set", "judging.reward_models=['/no/rm']"], "judging.reward_models: no model"),
        (["iterate", "--set", "llm_judge.model=/no/judge"], "llm_judge.model: no model at"),
    ],
)
def test_cli_rejects_bad_config_with_exit_2(argv, message, tmp_path, capsys):
    if argv[0] == "iterate":  # everything else in place: the judge is what is missing
        for name in ("demo-policy", "demo-rm"):
            (tmp_path / "models" / name).mkdir(parents=True)
            (tmp_path / "models" / name / "config.json").write_text("{}")
        (tmp_path / "prompts").mkdir()
        (tmp_path / "prompts" / "demo-prompts.jsonl").write_text("")
    rc = main([*argv, "--workdir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Nothing was started: no round directory, no catalog.
    assert not (tmp_path / "rounds").exists() and not (tmp_path / "logs").exists()
    assert not Path(tmp_path / "catalog.duckdb").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["rank"], "is fully judged yet"),
    (["judge", "--sources", "verifier"], "is fully generated yet"),
    (["train"], "is ranked yet"),
    (["rank", "--round", "2"], "round 2 has no candidates"),
    (["export-annotation", "--round", "7"], "round 7 of"),
    (["audit", "generation_coverage"], "no workdir"),
])
def test_stages_out_of_order_say_what_to_run(argv, message, tmp_path, capsys):
    workdir = tmp_path / "w"
    if argv[0] != "audit":
        workdir.mkdir()
    assert main([*argv, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_own_model_with_demo_judges_names_the_settings_to_change(tmp_path):
    """A user's model with the demo's judges: each error names the setting, not a build."""
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = load_config(overrides={"policy.model": str(model)})
    with pytest.raises(ConfigError) as err:
        preflight(cfg, tmp_path, judges=True)
    assert str(err.value).startswith("judging.reward_models: no model at")
    assert "set judging.reward_models to your own" in str(err.value)
    cfg = load_config(overrides={"policy.model": str(model), "judging.sources": ["llm"],
                                 "loop.gold": ""})
    with pytest.raises(ConfigError, match="set llm_judge.model to your own"):
        preflight(cfg, tmp_path, judges=True)


def test_sigterm_during_a_command_exits_and_the_callers_handler_comes_back(capsys):
    """While a command runs, SIGTERM raises SystemExit(143) (so clean-up runs); before and
    after, the caller's own handler is in place (a test or program calling main
    in-process)."""
    import os
    import signal
    import time

    from flows.cli import _sigterm_exits

    def callers(signum, frame):
        raise AssertionError("the caller's handler ran inside the command")

    before = signal.signal(signal.SIGTERM, callers)
    try:
        with pytest.raises(SystemExit) as stopped, _sigterm_exits():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; never reached
        assert stopped.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is callers
        assert main(["schema"]) == 0
        assert signal.getsignal(signal.SIGTERM) is callers
    finally:
        signal.signal(signal.SIGTERM, before)
    capsys.readouterr()
