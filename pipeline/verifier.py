"""Rule-based verifier judgments: the task's gold verifier scores every candidate.

In the demo the gold verifier is the held-out measure of quality, so the loop must not
train on it; tests and users with a trustworthy verifier may (issue: judging adds reward
models and LLM judges beside it).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import write_parquet_atomic
from pipeline.schema import CANDIDATES, JUDGMENTS, PROMPTS, validate
from pipeline.store import prompts_path, round_dir
from pipeline.tasks import get_task


def verifier_source(task_name: str) -> str:
    return f"verifier:{task_name}"


def judge_with_verifier(workdir: Path, round_: int, task_name: str) -> Path:
    """Score every candidate file of the round; one judgments file per candidates shard."""
    task = get_task(task_name)
    prompts = validate(pq.read_table(prompts_path(workdir, round_)), PROMPTS)
    reference = dict(zip(prompts.column("prompt_id").to_pylist(),
                         prompts.column("reference").to_pylist(), strict=True))
    source = verifier_source(task_name)
    out_dir = round_dir(workdir, round_) / "judgments"
    for shard in sorted((round_dir(workdir, round_) / "candidates").glob("shard-*.parquet")):
        target = out_dir / f"{source.replace(':', '-')}-{shard.name}"
        if target.exists():
            continue
        cands = validate(pq.read_table(shard), CANDIDATES).to_pylist()
        rows = [{"round": c["round"], "group_id": c["group_id"],
                 "candidate_id": c["candidate_id"], "source": source, "kind": "score",
                 "value": task.gold_score(reference[c["prompt_id"]], c["text"]),
                 "status": "scored", "raw": None, "order_shown": None} for c in cands]
        write_parquet_atomic(pa.Table.from_pylist(rows, JUDGMENTS.arrow_schema), target,
                             JUDGMENTS)
    return out_dir
