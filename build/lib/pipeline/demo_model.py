"""Build the embedded default's policy: a chat tokenizer and a tiny Llama trained on a task.

The result is an ordinary Hugging Face chat model directory (config.json, safetensors,
tokenizer files with a chat template, a generation config with two stop ids) that vLLM and
transformers load like any other, and that the pipeline drives exactly as it drives a user's
instruct model: prompts are rendered through its chat template. Training stops on purpose
once the held-out greedy exact-match reaches ``stop_at_exact``: the base policy must stay
imperfect so that preference training has room to show a gain. Everything is seeded, so a
rebuild with the same config and thread count gives the same weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.atomic import atomic_dir
from pipeline.config import Config
from pipeline.progress import progress_bar
from pipeline.tasks import get_task

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# A turn is <|role|>content; an assistant turn ends with EOS. A model that starts a new user
# turn has also finished its answer, so <|user|> is its second stop id (as instruct models
# list several ids in generation_config.eos_token_id).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@dataclass
class DemoModelReport:
    path: str
    steps: int
    seconds: float
    heldout_exact: float
    heldout_gold: float
    parameters: int


def train_tokenizer(corpus: list[str], vocab_size: int):
    """Byte-level BPE with every digit its own token, BOS added on plain encode, and a chat
    template over role tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
    )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        padding_side="left", model_max_length=1024,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    out.chat_template = CHAT_TEMPLATE
    return out


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """A one-turn conversation rendered for generation, as the pipeline renders prompts."""
    return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                              add_generation_prompt=True, tokenize=True,
                                              return_dict=False))


def stop_ids(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|user|>")]


def _encode_examples(tokenizer, prompts, device="cpu"):
    """Token ids of prompt + answer + EOS, and a mask over the answer (the trained part)."""
    ids, masks = [], []
    for p in prompts:
        prompt_ids = chat_prompt_ids(tokenizer, p.prompt)
        answer_ids = tokenizer(p.reference, add_special_tokens=False)["input_ids"]
        seq = prompt_ids + answer_ids + [tokenizer.eos_token_id]
        ids.append(seq)
        masks.append([0] * len(prompt_ids) + [1] * (len(answer_ids) + 1))
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids], device=device)
    loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], device=device)
    return input_ids, attn, loss_mask


def left_padded(tokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Chat-rendered prompts as a left-padded batch for ``generate``."""
    ids = [chat_prompt_ids(tokenizer, p) for p in prompts]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([[pad] * (width - len(x)) + x for x in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])}


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 12) -> list[str]:
    """Greedy completions with plain transformers (used only for the early-stopping check)."""
    enc = left_padded(tokenizer, prompts)
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=stop_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def build_demo_model(cfg: Config, out_dir: Path, show_progress: bool = True) -> DemoModelReport:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    d = cfg.demo_model
    task = get_task(d.task)
    torch.manual_seed(d.seed)
    torch.set_num_threads(d.threads)
    started = time.perf_counter()

    # Training prompts come from a seed stream disjoint from the pipeline's own prompts, so
    # that the supervised model has not memorised the exact items preference rounds use.
    train = task.prompts("train", 20_000, seed=d.seed + 10_000)
    heldout = task.prompts("heldout", d.eval_prompts, seed=cfg.prompts.seed)
    tokenizer = train_tokenizer([p.prompt + p.reference for p in train[:5000]], d.vocab_size)

    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d.hidden_size,
        intermediate_size=d.intermediate_size, num_hidden_layers=d.num_layers,
        num_attention_heads=d.num_heads, num_key_value_heads=d.num_heads,
        # Long enough for judge prompts when the demo policy serves as the embedded judge.
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(model_cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=d.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(d.seed)

    exact = gold = 0.0
    step = 0
    with progress_bar(show_progress) as bar:
        job = bar.add_task("training demo policy", total=d.max_steps)
        while step < d.max_steps:
            idx = torch.randint(len(train), (d.batch_size,), generator=generator).tolist()
            input_ids, attn, loss_mask = _encode_examples(tokenizer, [train[i] for i in idx])
            logits = model(input_ids=input_ids, attention_mask=attn).logits[:, :-1]
            target, mask = input_ids[:, 1:], loss_mask[:, 1:].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
            ).view_as(mask)
            loss = (nll * mask).sum() / mask.sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            step += 1
            bar.update(job, advance=1, description=f"training demo policy loss={loss.item():.3f}")
            if step % d.eval_every == 0:
                model.eval()
                answers = greedy_answers(model, tokenizer, [p.prompt for p in heldout])
                model.train()
                scores = [task.gold_score(p.reference, a)
                          for p, a in zip(heldout, answers, strict=True)]
                exact = sum(s == 1.0 for s in scores) / len(scores)
                gold = sum(scores) / len(scores)
                bar.update(job, description=f"training demo policy exact={exact:.2f}")
                if exact >= d.stop_at_exact:
                    break

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stop_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    report = DemoModelReport(
        path=str(out_dir), steps=step, seconds=round(time.perf_counter() - started, 1),
        heldout_exact=exact, heldout_gold=round(gold, 4),
        parameters=sum(p.numel() for p in model.parameters()),
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "demo_model_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report
