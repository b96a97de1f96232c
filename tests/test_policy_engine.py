"""One vLLM engine across a loop's policies: weights reloaded in place must sample exactly
what a fresh engine on the new policy samples (the prefix cache of the old weights dropped);
a policy of another shape gets a new engine."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from pipeline.chat import copy_tokenizer_files
from pipeline.config import load_config
from pipeline.policy_engine import PolicyEngine, engine_shape, shape_difference


def _write_model_files(d, **config):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                               "transformers_version": "5.0.0", **config}))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 4]}))
    (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}}}))
    (d / "model.safetensors").write_bytes(b"weights")
    return d


def test_engine_shape_ignores_weights_and_resave_noise(tmp_path):
    a = _write_model_files(tmp_path / "a")
    b = _write_model_files(tmp_path / "b", transformers_version="5.9.1", use_cache=False,
                           _name_or_path="/elsewhere")
    (b / "model.safetensors").write_bytes(b"other weights")
    # A re-save reorders keys: the same JSON is the same shape.
    (b / "tokenizer.json").write_text('{"model": {"vocab": {"b": 1, "a": 0}}}')
    assert engine_shape(a) == engine_shape(b)
    assert set(engine_shape(a)) == {"config.json", "generation_config.json", "tokenizer.json"}


@pytest.mark.parametrize("change, file", [
    (lambda d: (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 128}'),
     "config.json"),
    (lambda d: (d / "generation_config.json").write_text('{"eos_token_id": [2]}'),
     "generation_config.json"),
    (lambda d: (d / "tokenizer.json").write_text('{"model": {"vocab": {"a": 1, "b": 0}}}'),
     "tokenizer.json"),
    (lambda d: (d / "vocab.txt").write_text("a\nb\n"), "vocab.txt"),
    (lambda d: (d / "generation_config.json").unlink(), "generation_config.json"),
])
def test_engine_shape_names_what_an_engine_cannot_take_in_place(tmp_path, change, file):
    a = _write_model_files(tmp_path / "a")
    b = _write_model_files(tmp_path / "b")
    change(b)
    assert shape_difference(engine_shape(a), engine_shape(b)) == [file]


def test_keep_engine_setting():
    assert PolicyEngine(load_config(overrides={"generation.keep_engine": "never"})).keep is False
    assert PolicyEngine(load_config(overrides={"generation.keep_engine": "always"})).keep
    # These machines have no GPU: auto keeps the engine up through training.
    assert PolicyEngine(load_config()).keep


def _perturbed_copy(src, dst, seed: int):
    """``src`` with every weight moved, saved the way the trainer saves a policy (the model
    by transformers, the tokenizer's files copied)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp_min(1e-3) * 0.5)
    model.save_pretrained(dst)
    copy_tokenizer_files(src, dst)
    return dst


def _prompts(n: int, length: int, vocab: int):
    # Long enough to fill whole KV blocks, so that a prefix cache left over from the old
    # weights would be hit by the same prompts after the reload.
    rng = random.Random(0)
    return [{"prompt_id": f"p{i}", "prompt_token_ids": [rng.randrange(8, vocab)
                                                        for _ in range(length)]}
            for i in range(n)]


def _sample(sampler, prompts, stop_ids):
    table = sampler.sample(prompts, 0, "test", stop_ids, k=4)
    return table.select(["candidate_id", "token_ids", "text", "stop_token_id"]).to_pylist(), \
        table.column("logprob").to_pylist()


@pytest.mark.slow
def test_reloaded_engine_samples_what_a_fresh_engine_samples(tmp_path, chat_models):
    from transformers import AutoTokenizer

    base = chat_models["policy"]
    trained = _perturbed_copy(base, tmp_path / "policy-r001", seed=1)
    tok = AutoTokenizer.from_pretrained(base)
    stop_ids = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    prompts = _prompts(6, 300, len(tok))
    cfg = load_config(overrides={"generation.temperature": 1.0,
                                 "generation.max_new_tokens": 12})

    with PolicyEngine(cfg, tmp_path) as engines:
        sampler = engines.sampler(base)
        before, _ = _sample(sampler, prompts, stop_ids)
        assert engines.sampler(trained) is sampler
        assert (engines.starts, engines.reloads) == (1, 1)
        assert sampler.policy_label == "policy-r001"
        after, after_logprobs = _sample(sampler, prompts, stop_ids)
        assert [r["token_ids"] for r in after] != [r["token_ids"] for r in before], \
            "the reload did not change what the engine samples"
        # Asking again for the policy it holds changes nothing.
        engines.sampler(trained)
        assert (engines.starts, engines.reloads) == (1, 1)

        # A copy of the trained policy whose tokenizer config differs cannot be loaded in
        # place: a new engine starts, on the very weights the reloaded engine sampled with.
        other = tmp_path / "other-shape"
        shutil.copytree(trained, other)
        tok_cfg = json.loads((other / "tokenizer_config.json").read_text())
        (other / "tokenizer_config.json").write_text(json.dumps(
            {**tok_cfg, "padding_side": "left"}))
        fresh_sampler = engines.sampler(other)
        assert fresh_sampler is not sampler
        assert (engines.starts, engines.reloads) == (2, 1)
        assert "tokenizer_config.json" in engines.restart_reasons[0]
        fresh, fresh_logprobs = _sample(fresh_sampler, prompts, stop_ids)
    assert fresh == after
    assert fresh_logprobs == pytest.approx(after_logprobs, abs=1e-3)
    assert engines.summary()["starts"] == 2
