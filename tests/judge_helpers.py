"""A small schema-valid round written directly (no vLLM), for judging tests."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import write_parquet_atomic
from pipeline.judging.injection import detect
from pipeline.rounds import mark_stage
from pipeline.schema import CANDIDATES, PROMPTS
from pipeline.store import prompts_path, shard_path


def write_round(workdir: Path, modes: list[str], k: int = 4, per_shard: int = 4,
                texts: dict[int, list[str]] | None = None, seed: int = 0,
                tasks: dict[int, tuple[str, str]] | None = None) -> list[Path]:
    """One group per mode; the mode rides in the prompt (``S 123=<mode>``), unless ``tasks``
    gives the group a real prompt and its reference (for real judges). The round is marked
    fully generated, as `grpo generate` would leave it."""
    rng = random.Random(seed)
    prompts, shards = [], []
    for g, mode in enumerate(modes):
        text, reference = (tasks or {}).get(g) or (f"S {g}={mode}", "123")
        messages = [{"role": "user", "content": text}]
        prompts.append({"round": 0, "prompt_id": f"p{g:03d}", "split": "train",
                        "messages": messages, "prompt": text, "prompt_token_ids": [1, 2, 3],
                        "reference": reference,
                        "row_json": json.dumps({"messages": messages, "reference": reference})})
    write_parquet_atomic(pa.Table.from_pylist(prompts, PROMPTS.arrow_schema),
                         prompts_path(workdir, 0), PROMPTS)
    for s in range(0, len(modes), per_shard):
        rows = []
        for g in range(s, min(s + per_shard, len(modes))):
            # Distinct leading digits, so the fake judge's honest scores are all different.
            digits = rng.sample(range(10), k)
            group_texts = (texts or {}).get(g) or [f"{d}{rng.randint(0, 99)}" for d in digits]
            for i, text in enumerate(group_texts):
                gid = f"r000:p{g:03d}"
                rows.append({"round": 0, "group_id": gid, "prompt_id": f"p{g:03d}",
                             "candidate_idx": i, "candidate_id": f"{gid}:{i}", "text": text,
                             "token_ids": [1], "policy": "m", "n_tokens": 1,
                             "finish_reason": "stop", "stop_token_id": 2, "logprob": -1.0,
                             "seed": 0,
                             "config_hash": "h", "injection": detect(text)})
        path = shard_path(workdir, "candidates", 0, s // per_shard, "h")
        write_parquet_atomic(pa.Table.from_pylist(rows, CANDIDATES.arrow_schema), path,
                             CANDIDATES)
        shards.append(path)
    mark_stage(workdir, 0, "generate", {"key": "h"}, time.perf_counter())
    return shards
