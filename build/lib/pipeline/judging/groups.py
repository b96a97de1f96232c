"""Candidate groups as judges see them, read from one candidates shard."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.schema import CANDIDATES, PROMPTS, validate
from pipeline.store import prompts_path


@dataclass(frozen=True)
class JudgeGroup:
    round: int
    group_id: str
    prompt_id: str
    messages: list[dict]  # the whole conversation; judges see every turn
    reference: str | None
    row: dict  # the prompt's input row (verifiers may read any column)
    candidate_ids: list[str]
    texts: list[str]

    @property
    def k(self) -> int:
        return len(self.candidate_ids)

    @property
    def prompt(self) -> str:
        """The last user turn."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


def read_prompt_rows(workdir: Path, round_: int) -> dict[str, dict]:
    rows = validate(pq.read_table(prompts_path(workdir, round_)), PROMPTS).to_pylist()
    return {p["prompt_id"]: p for p in rows}


def groups_from_rows(candidates: list[dict], prompts: dict[str, dict]) -> list[JudgeGroup]:
    """Group candidate rows (any order) by group, candidates by index."""
    rows = sorted(candidates, key=lambda r: (r["group_id"], r["candidate_idx"]))
    groups: dict[str, JudgeGroup] = {}
    for r in rows:
        g = groups.get(r["group_id"])
        if g is None:
            p = prompts[r["prompt_id"]]
            row = json.loads(p["row_json"]) if p.get("row_json") else {}
            g = groups[r["group_id"]] = JudgeGroup(r["round"], r["group_id"], r["prompt_id"],
                                                   p["messages"], p["reference"], row, [], [])
        g.candidate_ids.append(r["candidate_id"])
        g.texts.append(r["text"])
    return list(groups.values())


def read_shard_groups(workdir: Path, round_: int, shard: Path) -> list[JudgeGroup]:
    candidates = validate(pq.read_table(shard), CANDIDATES).to_pylist()
    return groups_from_rows(candidates, read_prompt_rows(workdir, round_))


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
