"""Candidate groups as judges see them, read from one candidates shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.schema import CANDIDATES, PROMPTS, validate
from pipeline.store import prompts_path


@dataclass(frozen=True)
class JudgeGroup:
    round: int
    group_id: str
    prompt: str
    reference: str | None
    candidate_ids: list[str]
    texts: list[str]

    @property
    def k(self) -> int:
        return len(self.candidate_ids)


def read_shard_groups(workdir: Path, round_: int, shard: Path) -> list[JudgeGroup]:
    prompts = validate(pq.read_table(prompts_path(workdir, round_)), PROMPTS).to_pylist()
    by_id = {p["prompt_id"]: p for p in prompts}
    rows = sorted(validate(pq.read_table(shard), CANDIDATES).to_pylist(),
                  key=lambda r: (r["group_id"], r["candidate_idx"]))
    groups: dict[str, JudgeGroup] = {}
    for r in rows:
        g = groups.get(r["group_id"])
        if g is None:
            p = by_id[r["prompt_id"]]
            g = groups[r["group_id"]] = JudgeGroup(r["round"], r["group_id"], p["prompt"],
                                                   p["reference"], [], [])
        g.candidate_ids.append(r["candidate_id"])
        g.texts.append(r["text"])
    return list(groups.values())


def judgment_row(group: JudgeGroup, idx: int, source: str, kind: str, view: int,
                 value: float | None, error: str | None = None, raw: str | None = None,
                 order_shown: int | None = None, opponent: int | None = None) -> dict:
    """One row of the judgments table; status follows from whether there is an error."""
    return {"round": group.round, "group_id": group.group_id,
            "candidate_id": group.candidate_ids[idx], "source": source, "kind": kind,
            "view": view,
            "opponent_id": None if opponent is None else group.candidate_ids[opponent],
            "value": None if error else value, "status": "failed" if error else "scored",
            "error": error, "raw": raw, "order_shown": order_shown}
