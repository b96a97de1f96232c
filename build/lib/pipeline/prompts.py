"""The user's prompt dataset: read, checked row by row, rendered, and drawn round by round.

Reading. ``prompts.path`` is a .jsonl/.json/.csv/.parquet file, a glob of them, or a
``datasets.save_to_disk`` directory. Parquet and CSV are read with pyarrow and polars, a
saved dataset with ``datasets``; JSON lines are decoded one line at a time with the standard
``json`` module, because a whole-file reader rejects the whole file for one bad line (and
for a column mixing strings and message lists), where a line-level reader can quarantine
just that line.

Checking. Every row is accepted or quarantined with its reason (accepted + quarantined =
rows read): unreadable line, missing column, empty content, wrong type, unknown role, last
turn not from the user, duplicate id or content, and too long for the policy after the chat
template (never truncated, never left for vLLM to drop).

The accepted set is cached under ``WORKDIR/prompts/set-FP.parquet`` with FP a hash of the
files' content, the ``[prompts]`` settings and the renderer, so a second run reads it back.

Drawing. Round r's train prompts are the next ``n_train_per_round`` of an endless sequence of
seeded shuffles of the train split: no prompt repeats until the split is used up, and the
same config gives the same rounds. Held-out prompts are a fixed seeded sample.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import read_parquet_checked, write_parquet_atomic, write_text_atomic
from pipeline.chat import PromptRenderer, last_user_text
from pipeline.config import ConfigError, PromptsConfig, stable_hash
from pipeline.fingerprints import file_sha256
from pipeline.schema import PROMPT_SET, QUARANTINE
from pipeline.store import supersede

ROLES = ("system", "user", "assistant")


@dataclass
class RawRow:
    source_file: str
    file_sha256: str
    line: int  # the line (JSONL, CSV incl. header) or record number a user would look at
    data: dict | None
    error: str | None = None


@dataclass
class PromptSet:
    fingerprint: str
    rows: list[dict]  # PROMPT_SET rows, in file order
    read: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["split"] == name]

    def summary(self) -> dict:
        return {"rows_read": self.read, "accepted": len(self.rows),
                "quarantined": self.quarantined, "reasons": self.reasons,
                "train": len(self.split("train")), "heldout": len(self.split("heldout"))}


# --- reading -------------------------------------------------------------------------------

def read_rows(paths: list[Path]) -> Iterator[RawRow]:
    for path in paths:
        if path.is_dir():
            yield from _read_saved_dataset(path)
            continue
        sha = file_sha256(path)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _read_json_lines(path, sha)
        elif suffix == ".json":
            yield from _read_json(path, sha)
        elif suffix == ".csv":
            yield from _read_csv(path, sha)
        elif suffix == ".parquet":
            yield from _read_parquet(path, sha)
        else:
            raise ConfigError(f"prompts.path: {path} has an unsupported extension; use .jsonl, "
                              ".json, .csv, .parquet or a datasets.save_to_disk directory")


def _read_json_lines(path: Path, sha: str) -> Iterator[RawRow]:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield RawRow(str(path), sha, n, {"__line__": line.rstrip("\n")},
                             f"unreadable line: {err.msg}")
                continue
            if not isinstance(obj, dict):
                yield RawRow(str(path), sha, n, {"__line__": line.rstrip("\n")},
                             "not a JSON object")
                continue
            yield RawRow(str(path), sha, n, obj)


def _read_json(path: Path, sha: str) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError:
        yield from _read_json_lines(path, sha)  # a .json file holding JSON lines
        return
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ConfigError(f"prompts.path: {path} holds a JSON {type(data).__name__}; expected "
                          "a list of objects or JSON lines")
    for n, obj in enumerate(data, 1):
        if isinstance(obj, dict):
            yield RawRow(str(path), sha, n, obj)
        else:
            yield RawRow(str(path), sha, n, {"__value__": obj}, "not a JSON object")


def _read_csv(path: Path, sha: str) -> Iterator[RawRow]:
    import polars as pl

    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    except pl.exceptions.PolarsError as err:
        raise ConfigError(f"prompts.path: {path} is not a readable CSV file ({err})") from err
    # Line numbers as a spreadsheet shows them: the header is line 1.
    for n, row in enumerate(frame.iter_rows(named=True), 2):
        yield RawRow(str(path), sha, n, row)


def _read_parquet(path: Path, sha: str) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield RawRow(str(path), sha, n, row)


def _read_saved_dataset(path: Path) -> Iterator[RawRow]:
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"prompts.path: {path} is a directory but not a datasets."
                          f"save_to_disk dataset ({err})") from err
    if not isinstance(ds, Dataset):
        raise ConfigError(f"prompts.path: {path} holds several splits {list(ds)}; point it at "
                          f"one split's directory (e.g. {path}/{next(iter(ds))}) or use "
                          "prompts.split_column")
    sha = _content_key(path)
    for n, row in enumerate(ds, 1):
        yield RawRow(str(path), sha, n, row)


# --- checking one row ----------------------------------------------------------------------

def _messages(value, system_prompt: str) -> tuple[list[dict] | None, str | None]:
    if isinstance(value, str):
        if not value.strip():
            return None, "empty prompt"
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list):
        if not value:
            return None, "empty conversation"
        messages = []
        for turn in value:
            if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
                return None, "wrong type: a message must be an object with role and content"
            role, content = turn["role"], turn["content"]
            if role not in ROLES:
                return None, f"unknown role {role!r} (use system, user or assistant)"
            if not isinstance(content, str):
                return None, f"wrong type: {role} content is {type(content).__name__}, " \
                             "not a string"
            if not content.strip():
                return None, f"empty content in a {role} turn"
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            return None, f"last turn is from the {messages[-1]['role']}, not the user"
    elif value is None:
        return None, "empty prompt"
    else:
        return None, (f"wrong type: expected a string or a list of {{role, content}} "
                      f"messages, got {type(value).__name__}")
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages, None


def content_id(messages: list[dict]) -> str:
    return "p" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def check_row(raw: RawRow, cfg: PromptsConfig) -> tuple[dict | None, str | None]:
    """A PROMPT_SET row without token ids, or the reason to quarantine."""
    if raw.error:
        return None, raw.error
    row = raw.data
    if cfg.column not in row:
        return None, f"missing column {cfg.column!r}"
    messages, reason = _messages(row[cfg.column], cfg.system_prompt)
    if reason:
        return None, reason
    if cfg.id_column:
        pid = row.get(cfg.id_column)
        if pid is None or str(pid).strip() == "":
            return None, f"missing id in column {cfg.id_column!r}"
        pid = str(pid).strip()
    else:
        pid = content_id(messages)
    reference = None
    if cfg.reference_column:
        if cfg.reference_column not in row:
            return None, f"missing column {cfg.reference_column!r}"
        ref = row[cfg.reference_column]
        reference = None if ref is None else ref if isinstance(ref, str) else json.dumps(ref)
    if cfg.split_column:
        split = str(row.get(cfg.split_column) or "").strip().lower()
        if split not in ("train", "heldout"):
            return None, f"split must be train or heldout, got {row.get(cfg.split_column)!r}"
    else:
        split = "heldout" if _unit_hash(pid) < cfg.heldout_fraction else "train"
    return {"prompt_id": pid, "split": split, "messages": messages,
            "prompt": last_user_text(messages), "prompt_token_ids": None,
            "reference": reference, "row_json": json.dumps(row, ensure_ascii=False,
                                                           default=str)}, None


# --- the prompt set ------------------------------------------------------------------------

def prompt_set_fingerprint(paths: list[Path], cfg: PromptsConfig, renderer: PromptRenderer,
                           max_tokens: int) -> str:
    files = [[str(p.name), _content_key(p)] for p in paths]
    settings = cfg.model_dump(exclude={"n_train_per_round", "n_heldout", "seed", "path"})
    return stable_hash({"files": files, "settings": settings, "renderer": renderer.fingerprint(),
                        "max_tokens": max_tokens}, 16)


def _content_key(path: Path) -> str:
    if path.is_dir():  # a saved dataset: its arrow files
        return stable_hash([file_sha256(f) for f in sorted(path.rglob("*.arrow"))], 64)
    return file_sha256(path)


def token_limit(cfg: PromptsConfig, model_max_len: int | None, max_new_tokens: int) -> tuple[
        int, str]:
    """Longest prompt accepted, and the setting that sets it."""
    limit, why = cfg.max_prompt_tokens, "prompts.max_prompt_tokens"
    if model_max_len and model_max_len - max_new_tokens < limit:
        limit = model_max_len - max_new_tokens
        why = (f"the model's context of {model_max_len} tokens minus "
               f"generation.max_new_tokens {max_new_tokens}")
    return limit, why


def load_prompt_set(workdir: Path, paths: list[Path], cfg: PromptsConfig,
                    renderer: PromptRenderer, model_max_len: int | None = None,
                    max_new_tokens: int = 0) -> PromptSet:
    """Read, check and render every row once; cached by content fingerprint."""
    limit, why = token_limit(cfg, model_max_len, max_new_tokens)
    fp = prompt_set_fingerprint(paths, cfg, renderer, limit)
    base = Path(workdir) / "prompts"
    cached, report = base / f"set-{fp}.parquet", base / f"set-{fp}.json"
    if cached.exists() and report.exists():
        info = json.loads(report.read_text())
        return PromptSet(fp, read_parquet_checked(cached, PROMPT_SET).to_pylist(),
                         info["rows_read"], info["quarantined"], info["reasons"])

    accepted, quarantined = [], []
    seen_id: dict[str, int] = {}
    seen_content: dict[str, int] = {}
    read = 0
    for raw in read_rows(paths):
        read += 1
        row, reason = check_row(raw, cfg)
        if row is not None:
            key = json.dumps(row["messages"], sort_keys=True)
            if row["prompt_id"] in seen_id:
                reason = f"duplicate id (first at line {seen_id[row['prompt_id']]})"
            elif key in seen_content:
                reason = f"duplicate content (first at line {seen_content[key]})"
            else:
                ids = renderer.token_ids(row["messages"])
                if len(ids) > limit:
                    reason = f"too long: {len(ids)} tokens after the chat template, over " \
                             f"{limit} ({why})"
                else:
                    row["prompt_token_ids"] = ids
                    seen_id[row["prompt_id"]] = raw.line
                    seen_content[key] = raw.line
        if reason:
            quarantined.append({"source_file": raw.source_file, "file_sha256": raw.file_sha256,
                                "row_number": raw.line, "reason": reason,
                                "raw": json.dumps(raw.data, ensure_ascii=False, default=str)})
        else:
            accepted.append(row)
    assert len(accepted) + len(quarantined) == read
    if not accepted:
        raise ConfigError(f"prompts.path: none of the {read} rows of {paths[0]} was accepted "
                          f"(first reason: {quarantined[0]['reason'] if quarantined else 'empty'}"
                          f"); check prompts.column ({cfg.column!r}) and the file")
    reasons: dict[str, int] = {}
    for q in quarantined:
        label = q["reason"].split(" (")[0].split(":")[0]
        reasons[label] = reasons.get(label, 0) + 1
    qdir = Path(workdir) / "quarantine"
    supersede(qdir, "prompts-*.parquet", keep=f"prompts-{fp}.parquet")
    write_parquet_atomic(pa.Table.from_pylist(quarantined, QUARANTINE.arrow_schema),
                         qdir / f"prompts-{fp}.parquet", QUARANTINE)
    write_parquet_atomic(pa.Table.from_pylist(accepted, PROMPT_SET.arrow_schema), cached,
                         PROMPT_SET)
    out = PromptSet(fp, accepted, read, len(quarantined), reasons)
    write_text_atomic(json.dumps(out.summary() | {"files": [str(p) for p in paths]}, indent=2),
                      report)
    return out


# --- drawing rounds ------------------------------------------------------------------------

def _shuffled(ids: list[str], seed: int, epoch: int) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.blake2b(f"{seed}:{epoch}:{i}".encode(),
                                                     digest_size=8).digest())


def train_ids_for_round(train_ids: list[str], n: int, seed: int, round_: int) -> list[str]:
    """Round r's slice of the endless sequence of seeded shuffles. A round never holds a
    prompt twice: where a slice crosses into the next shuffle, a prompt it already holds is
    deferred to the next round, so every prompt is still drawn once per pass."""
    if not train_ids:
        raise ConfigError("prompts: no train prompts (every accepted prompt is held out); "
                          "lower prompts.heldout_fraction or check prompts.split_column")
    n = min(n, len(train_ids))
    stream = _stream(sorted(train_ids), seed)
    deferred: list[str] = []
    for _ in range(round_ + 1):
        out: list[str] = []
        held: set[str] = set()
        waiting, deferred = deferred, []
        for pid in waiting:
            if len(out) < n and pid not in held:
                out.append(pid)
                held.add(pid)
            else:
                deferred.append(pid)
        while len(out) < n:
            pid = next(stream)
            if pid in held:
                deferred.append(pid)
            else:
                out.append(pid)
                held.add(pid)
    return out


def _stream(ids: list[str], seed: int) -> Iterator[str]:
    epoch = 0
    while True:
        yield from _shuffled(ids, seed, epoch)
        epoch += 1


def heldout_ids(heldout: list[str], n: int, seed: int) -> list[str]:
    chosen = _shuffled(sorted(heldout), seed, -1)
    return chosen[:n] if n else chosen


def round_rows(prompt_set: PromptSet, cfg: PromptsConfig, round_: int) -> list[dict]:
    """PROMPTS rows of a round: its train draw, then the fixed held-out sample."""
    by_id = {r["prompt_id"]: r for r in prompt_set.rows}
    train = train_ids_for_round([r["prompt_id"] for r in prompt_set.split("train")],
                                cfg.n_train_per_round, cfg.seed, round_)
    held = heldout_ids([r["prompt_id"] for r in prompt_set.split("heldout")], cfg.n_heldout,
                       cfg.seed)
    return [{"round": round_, **by_id[pid]} for pid in train + held]


def rounds_until_reuse(prompt_set: PromptSet, cfg: PromptsConfig) -> int:
    return math.floor(len(prompt_set.split("train")) / cfg.n_train_per_round)
