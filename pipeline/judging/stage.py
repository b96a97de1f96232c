"""Judging a round, one (candidates shard, source) at a time, resumably.

Output names are fixed by source and shard (``judgments/SOURCE--SHARD.parquet``), so a
finished pair is skipped on rerun. LLM judging is slow and costs money, so inside a shard
every finished group is appended to a journal (JSON lines, fsynced) before the next one:
a crash or the request cap loses at most the groups in flight, and a rerun sends only the
groups not in the journal. The journal is folded into the Parquet file when the shard is
complete and then removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import write_parquet_atomic
from pipeline.judging.groups import JudgeGroup, read_shard_groups
from pipeline.schema import JUDGMENTS
from pipeline.store import round_dir


def candidate_shards(workdir: Path, round_: int) -> list[Path]:
    return sorted((round_dir(workdir, round_) / "candidates").glob("shard-*.parquet"))


def judgment_path(workdir: Path, round_: int, source: str, shard: Path) -> Path:
    slug = source.replace(":", "-").replace("/", "_")
    return round_dir(workdir, round_) / "judgments" / f"{slug}--{shard.name}"


@dataclass
class ShardJudgeResult:
    source: str
    shard: str
    groups: int
    groups_done: int
    rows: int
    skipped: bool

    @property
    def complete(self) -> bool:
        return self.groups_done == self.groups


class Journal:
    """Append-only record of finished groups; a torn last line (crash mid-write) is ignored,
    so that group is simply judged again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, list[dict]]:
        done: dict[str, list[dict]] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[entry["group_id"]] = entry["rows"]
        return done

    def append(self, group_id: str, rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"group_id": group_id, "rows": rows}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _write(path: Path, groups: list[JudgeGroup], rows_by_group: dict[str, list[dict]]) -> int:
    rows = [r for g in groups for r in rows_by_group[g.group_id]]
    write_parquet_atomic(pa.Table.from_pylist(rows, JUDGMENTS.arrow_schema), path, JUDGMENTS)
    return len(rows)


def judge_shard_at_once(workdir: Path, round_: int, shard: Path, source: str,
                        judge: Callable[[list[JudgeGroup]], list[dict]]) -> ShardJudgeResult:
    """Fast local sources (verifier, reward models): the whole shard in one go."""
    target = judgment_path(workdir, round_, source, shard)
    groups = read_shard_groups(workdir, round_, shard)
    if target.exists():
        return ShardJudgeResult(source, shard.name, len(groups), len(groups), 0, True)
    rows_by_group: dict[str, list[dict]] = {}
    for r in judge(groups):
        rows_by_group.setdefault(r["group_id"], []).append(r)
    n = _write(target, groups, rows_by_group)
    return ShardJudgeResult(source, shard.name, len(groups), len(groups), n, False)


def judge_shard_journaled(workdir: Path, round_: int, shard: Path, source: str, judge,
                          on_group: Callable[[], None] | None = None) -> ShardJudgeResult:
    """LLM judges: ``judge.judge_groups`` yields (group, rows) as groups finish."""
    target = judgment_path(workdir, round_, source, shard)
    groups = read_shard_groups(workdir, round_, shard)
    if target.exists():
        return ShardJudgeResult(source, shard.name, len(groups), len(groups), 0, True)
    journal = Journal(target.with_name(target.stem + ".journal.jsonl"))
    done = journal.load()
    todo = [g for g in groups if g.group_id not in done]
    for group, rows in judge.judge_groups(todo):
        journal.append(group.group_id, rows)
        done[group.group_id] = rows
        if on_group:
            on_group()
    n = 0
    if len(done) == len(groups):
        n = _write(target, groups, done)
        journal.remove()
    return ShardJudgeResult(source, shard.name, len(groups), len(done), n, False)
