"""The policy's view of a prompt: chat template, token ids and stop ids.

One token stream runs from generation to training: the prompt is rendered here once, with the
policy tokenizer's chat template and ``add_generation_prompt``; vLLM receives these ids, they
are stored with the round's prompts, and training and evaluation score exactly them. Nothing
downstream re-tokenises text.

``policy.chat_template``: ``auto`` uses the tokenizer's template when it has one, ``none``
joins the turns' contents with blank lines (for base models), anything else is the path of
a Jinja template file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.config import ConfigError, stable_hash
from pipeline.fingerprints import file_sha256

Messages = list[dict[str, str]]

# A tokenizer's files, as Hugging Face tokenizers of every kind save them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                   "chat_template.jinja", "chat_template.json")


# Files that hold a vocabulary: without one of them the copied files are not a tokenizer.
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")


def copy_tokenizer_files(src: Path, dst: Path) -> bool:
    """Copy ``src``'s tokenizer files into ``dst`` byte for byte; whether they include a
    vocabulary (if not, the caller saves the loaded tokenizer instead: a tiktoken or
    remote-code tokenizer, or one that lives elsewhere).

    A trained policy keeps its base's tokenizer exactly. Loading and re-saving it through
    transformers does not: transformers 5 rebuilds a tokenizer from its model type's class
    (a Qwen2 model's BPE file comes back with an NFC normalizer and an unk token), so the
    next round would tokenise with another tokenizer than the one the round began with."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return any(name in VOCABULARY_FILES for name in copied)


class PromptRenderer:
    def __init__(self, model_dir: Path, chat_template: str = "auto") -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if chat_template == "none":
            self.template = None
        elif chat_template == "auto":
            self.template = getattr(self.tokenizer, "chat_template", None) or None
        else:
            path = Path(chat_template).expanduser()
            if not path.is_file():
                raise ConfigError(f"policy.chat_template: no template file at {path}; use "
                                  "auto, none, or the path of a Jinja file")
            self.template = path.read_text()
        self.stop_ids = stop_token_ids(model_dir, self.tokenizer)

    def token_ids(self, messages: Messages) -> list[int]:
        if self.template is None:
            return list(self.tokenizer("\n\n".join(m["content"] for m in messages))["input_ids"])
        # transformers 5 returns a BatchEncoding unless return_dict=False.
        return list(self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, add_generation_prompt=True, tokenize=True,
            return_dict=False))

    def fingerprint(self) -> str:
        """What decides the token ids: the tokenizer's files and the template."""
        files = sorted(p for p in self.model_dir.iterdir() if p.is_file() and (
            "token" in p.name or p.name in ("special_tokens_map.json", "vocab.json",
                                            "merges.txt")))
        return stable_hash({"files": {p.name: file_sha256(p) for p in files},
                            "template": self.template, "stop": self.stop_ids}, 16)


def stop_token_ids(model_dir: Path, tokenizer=None) -> list[int]:
    """Every id the model ends a turn with: ``generation_config.json``'s eos_token_id (a list
    in most instruct models) plus the tokenizer's EOS."""
    ids: list[int] = []
    gen = Path(model_dir) / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted({int(i) for i in ids})


def last_user_text(messages: Messages) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")
