"""LoRA training on a real ranked round: the reference is the base with the adapter disabled
(cached or per step, the same numbers), the output is the adapter plus a merged model in the
base's dtype that vLLM serves; QLoRA where CUDA exists."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import load_config
from tests.conftest import copy_store, small_overrides
from trainers.data import collate, load_ranked_groups, tokenize_groups
from trainers.logprobs import group_logps
from trainers.loop import train
from trainers.policy import adapter_dir

pytestmark = pytest.mark.slow

LORA = {"train.lora_rank": 8, "train.lora_alpha": 16.0, "train.epochs": 2,
        "train.learning_rate": 2e-3}


def _bf16_copy(model_dir, out):
    """The demo policy saved in bfloat16, so 'the base's dtype' is not float32 by chance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def _metrics(out):
    path = out.with_name(out.name + ".checkpoints") / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_lora_adapter_and_merged_model_served_by_vllm(ranked_store, tmp_path, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    workdir = copy_store(ranked_store, tmp_path / "w")
    base = _bf16_copy(demo_model_dir, tmp_path / "base-bf16")
    cfg = load_config(overrides=small_overrides(demo_model_dir, **LORA))
    out = workdir / "models" / "lora"
    cached = train(cfg, workdir, [0], base, base, out, show_progress=False)
    assert cached.reference == "cached" and cached.adapter_dir == str(adapter_dir(out))

    # The adapter: peft's files, only the adapter's tensors (far fewer than the model's).
    adapter = adapter_dir(out)
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    # The merged model: a plain HF directory in the base's dtype, tokenizer, chat template
    # and generation config beside it.
    assert AutoConfig.from_pretrained(out).dtype == torch.bfloat16
    assert (out / "generation_config.json").read_text() == \
        (base / "generation_config.json").read_text()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(base).chat_template
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as they were, not re-saved
        assert (out / name).read_bytes() == (base / name).read_bytes()
    assert not (out / "adapter_config.json").exists()

    # Merged weights compute what base + adapter computes (to bf16 rounding), and training
    # moved them away from the base.
    groups = tokenize_groups(load_ranked_groups(workdir, [0]), tok.eos_token_id)[:8]
    batch, _, _ = collate(groups, tok.pad_token_id)
    with torch.no_grad():
        fp32_base = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        before = group_logps(fp32_base, batch)
        adapted = group_logps(PeftModel.from_pretrained(fp32_base, adapter).eval(), batch)
        merged = group_logps(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32),
                             batch)
    assert (adapted - before).abs().max() > 0.05
    torch.testing.assert_close(merged, adapted, rtol=0.02, atol=0.15)

    # Reference = adapter disabled, per step instead of cached: the same loss curve.
    per_step = train(load_config(overrides=small_overrides(
        demo_model_dir, **LORA, **{"train.reference_cache": False})), workdir, [0], base, base,
        workdir / "models" / "lora-nocache", show_progress=False)
    assert per_step.reference == "adapter_disabled" and per_step.reference_cache is None
    for a, b in zip(_metrics(out), _metrics(workdir / "models" / "lora-nocache"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), a["step"]

    # vLLM's offline engine serves the merged model for the next round.
    from flows.generate import generation_flow

    summary = generation_flow(str(workdir), None, 1,
                              small_overrides(demo_model_dir, **{"policy.model": str(out)}),
                              show_progress=False)
    assert summary["candidates_in_round"] == 24 * 4


def test_qlora_trains_on_a_4bit_base_or_says_what_it_needs(ranked_store, tmp_path,
                                                          demo_model_dir):
    """One test for both kinds of machine, so neither skips it: with CUDA, QLoRA trains
    (bitsandbytes' 4-bit base); without, the error says what to do."""
    cfg = load_config(overrides=small_overrides(demo_model_dir, **LORA,
                                                **{"train.load_in_4bit": True}))
    workdir = copy_store(ranked_store, tmp_path / "w")
    out = workdir / "models" / "qlora"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.load_in_4bit: .*needs a CUDA GPU"):
            train(cfg, workdir, [0], demo_model_dir, demo_model_dir, out, show_progress=False)
        assert not out.exists()
        return
    from transformers import AutoConfig

    result = train(cfg, workdir, [0], demo_model_dir, demo_model_dir, out, show_progress=False)
    assert result.steps > 0 and (adapter_dir(out) / "adapter_config.json").is_file()
    assert AutoConfig.from_pretrained(out).dtype == torch.float32  # the base's, not 4-bit
    losses = [m["loss"] for m in _metrics(out)]
    assert min(losses[-3:]) < losses[0]
