"""Models unlike the demo, built in seconds, for tests of the path a user's models take.

A ChatML tokenizer (``<|im_start|>role\\n...<|im_end|>``, special tokens), a Qwen2 policy
with grouped-query attention and tied embeddings whose generation config lists two stop ids
(``<|im_end|>`` and ``<|endoftext|>``; it is trained for a few steps to end its answers with
either, so samples really stop on both), and two sequence-classification reward models of
different architectures (Qwen2, Llama) that carry the same chat template.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

IM_START, IM_END, EOT, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|pad|>"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "delta", "maple", "quiet",
         "orbit", "sugar", "flame"]


def chatml_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(random.Random(i).choices(WORDS, k=6)) for i in range(500)]
    corpus += ["system user assistant You are helpful. Repeat the last word."] * 20
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=[PAD, EOT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD,
                                   additional_special_tokens=[IM_START, EOT],
                                   model_max_length=512)
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def _sft_examples(tok, n: int, seed: int) -> list[list[int]]:
    """'Repeat the last word' chats answered and ended alternately by each stop id."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(2, 5))
        messages = [{"role": "user", "content": " ".join(words)}]
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
        answer = tok(words[-1], add_special_tokens=False)["input_ids"]
        stop = tok.convert_tokens_to_ids(IM_END if i % 2 else EOT)
        out.append(list(prompt) + answer + [stop])
    return out


def build_chat_policy(out: Path, steps: int = 60) -> Path:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = chatml_tokenizer(out)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = _sft_examples(tok, 512, 0)
    for step in range(steps):
        batch = data[(step * 16) % len(data):][:16]
        width = max(map(len, batch))
        ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(EOT)],
        pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    return out


def build_reward_model(out: Path, arch: str, seed: int) -> Path:
    from transformers import (
        LlamaConfig,
        LlamaForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    torch.manual_seed(seed)
    tok = chatml_tokenizer(out)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  max_position_embeddings=128, num_labels=1, pad_token_id=tok.pad_token_id)
    model = (Qwen2ForSequenceClassification(Qwen2Config(**common)) if arch == "qwen2" else
             LlamaForSequenceClassification(LlamaConfig(**common)))
    model.save_pretrained(out)
    return out
