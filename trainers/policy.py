"""The policy being trained: loading it (full, LoRA, or QLoRA on a 4-bit base) and saving
what the next round serves.

Full fine-tuning saves a Hugging Face model directory at OUTPUT. LoRA saves the adapter at
``OUTPUT.adapter/`` and, at OUTPUT, the base with the adapter merged in, cast to the base's
saved dtype, with the tokenizer (and its chat template) and generation config: a plain model
directory vLLM loads for the next round. The merge is done from the saved adapter onto a
fresh float32 copy of the base (never onto quantized or bf16 weights, where the sum would be
rounded) after the training model is freed, so it works the same after DDP, FSDP or
DeepSpeed training.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from pipeline.atomic import atomic_dir
from pipeline.chat import copy_tokenizer_files
from pipeline.config import Config, TrainConfig


def adapter_dir(output_dir: Path) -> Path:
    return Path(output_dir).with_name(Path(output_dir).name + ".adapter")


def saved_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the model's weights were saved in (config.json), float32 if unsaid."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def load_policy(policy_dir: Path, t: TrainConfig, device_index: int = 0):
    """The trainable model: float32 weights (mixed precision is accelerate's autocast), or a
    4-bit NF4 base for QLoRA; LoRA adapters on top when ``lora_rank`` > 0."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": torch.float32}
    if t.load_in_4bit:
        if not torch.cuda.is_available():
            raise ValueError("train.load_in_4bit: QLoRA loads the base through bitsandbytes, "
                             "which needs a CUDA GPU; none is visible here: set "
                             "train.load_in_4bit = false (plain LoRA runs on the CPU)")
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs = {"dtype": compute, "device_map": {"": device_index},
                  "quantization_config": BitsAndBytesConfig(
                      load_in_4bit=True, bnb_4bit_quant_type="nf4",
                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)}
    model = AutoModelForCausalLM.from_pretrained(policy_dir, **kwargs)
    checkpointing = {"use_reentrant": False}  # reentrant checkpointing loses LoRA gradients
    if t.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=t.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing)
    elif t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    if t.lora_rank:
        from peft import LoraConfig, get_peft_model

        targets = t.lora_target_modules
        model = get_peft_model(model, LoraConfig(
            r=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else list(targets),
            task_type="CAUSAL_LM"))
    return model


def save_trained(accelerator, model, tokenizer, cfg: Config, policy_dir: Path,
                 output_dir: Path) -> None:
    """Full fine-tuning: the model at OUTPUT. LoRA: the adapter at OUTPUT.adapter (the merge
    is ``save_merged``, run after the training model is freed). Either way with the policy's
    tokenizer files as they were (``copy_tokenizer_files``). Called on every process:
    ``get_state_dict`` gathers sharded weights (FSDP, DeepSpeed ZeRO-3)."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        target = adapter_dir(output_dir) if cfg.train.lora_rank else output_dir
        with atomic_dir(target) as tmp:
            if cfg.train.lora_rank:  # peft keeps only the adapter's tensors of ``state``
                unwrapped.save_pretrained(tmp, state_dict=state)
            else:
                unwrapped.save_pretrained(tmp, state_dict=state, save_function=accelerator.save)
            if not copy_tokenizer_files(policy_dir, tmp):  # not a plain vocabulary file
                tokenizer.save_pretrained(tmp)
            (tmp / "train.config.toml").write_text(cfg.to_toml())
    accelerator.wait_for_everyone()


def save_merged(policy_dir: Path, output_dir: Path, cfg: Config) -> None:
    """The base with the adapter merged in, in the base's dtype, as a model directory
    (main process only, after the training model is freed)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gc.collect()
    base = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir(output_dir)).merge_and_unload()
    merged = merged.to(saved_dtype(policy_dir))
    with atomic_dir(output_dir) as tmp:
        merged.save_pretrained(tmp)  # generation_config.json comes along with the model
        if not copy_tokenizer_files(policy_dir, tmp):
            AutoTokenizer.from_pretrained(policy_dir).save_pretrained(tmp)
        (tmp / "train.config.toml").write_text(cfg.to_toml())
