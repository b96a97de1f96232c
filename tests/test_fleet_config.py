"""Fleet and vLLM-parallelism settings: what reaches LLM(...), and what names the shards."""

from __future__ import annotations

import pytest

from flows.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.generation import engine_kwargs, samples_identity

PARALLEL = {"generation.tensor_parallel_size": 4, "generation.pipeline_parallel_size": 2,
            "generation.data_parallel_size": 3}


def test_engine_kwargs_pass_tensor_and_pipeline_parallelism_through():
    cfg = load_config(overrides=PARALLEL)
    kw = engine_kwargs("/models/m", cfg)
    assert kw["tensor_parallel_size"] == 4 and kw["pipeline_parallel_size"] == 2
    assert kw["model"] == "/models/m" and kw["enable_prefix_caching"] is True
    # Data parallelism is the fleet's: one engine per worker run, not an LLM() argument.
    assert "data_parallel_size" not in kw
    default = engine_kwargs("/models/m", load_config())
    assert default["tensor_parallel_size"] == 1 and default["pipeline_parallel_size"] == 1


def test_fleet_and_parallel_settings_do_not_rename_shards():
    """Workers with other TTLs or GPU layouts write the same shard names: these settings
    do not change what is sampled, so they stay out of the config hash."""
    train = [{"prompt_id": "p0", "prompt_token_ids": [1, 2, 3]}]

    def identity(cfg):
        return samples_identity(cfg, "model-fp", [2], train)

    base = identity(load_config())
    other = load_config(overrides={**PARALLEL, "generation.lease_ttl_s": 7.0,
                                   "generation.max_num_seqs": 32,
                                   "generation.kv_cache_gib": 4.0})
    assert identity(other) == base
    assert identity(load_config(overrides={"generation.k": 4})) != base


@pytest.mark.parametrize(("override", "field"), [
    ({"generation.lease_ttl_s": 0.5}, "generation.lease_ttl_s"),
    ({"generation.tensor_parallel_size": 0}, "generation.tensor_parallel_size"),
    ({"generation.pipeline_parallel_size": 0}, "generation.pipeline_parallel_size"),
    ({"generation.data_parallel_size": 0}, "generation.data_parallel_size"),
])
def test_bad_fleet_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=override)


def test_fleet_submit_needs_an_explicit_round(capsys):
    assert main(["fleet", "submit", "--round", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grpo fleet: error: --round: workers of a fleet share one round")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_vllm_refuses_in_process_data_parallelism():
    """Why data_parallel_size is not passed to LLM(): vLLM refuses it before starting."""
    from vllm import LLM

    with pytest.raises(ValueError, match="data_parallel_size=2"):
        LLM(**engine_kwargs("/no/model/needed", load_config()), data_parallel_size=2)
