"""Judging a round, one (candidates shard, source) at a time, resumably.

Output names carry the source, a fingerprint of what judged (the judge's settings and its
model's content) and the candidates shard: ``judgments/SOURCE--FP--SHARD.parquet``. A
finished file is skipped on rerun; a changed judge (another model, template, score range,
views, a retrained reward model in the same folder) has another FP, so it judges anew, and
the old files are moved to ``judgments/superseded/`` (kept for the audit, brought back if the
config changes back). A leftover journal of another judge is never read.

LLM judging is slow and costs money, so inside a shard every finished group is appended to a
journal (JSON lines, flushed to the OS as each group finishes; fsynced when a group finishes
FSYNC_EVERY_S or more after the last fsync, and on close): a killed process or the request cap
loses at most the groups in flight (a power cut, also those journaled since the last fsync),
and a rerun sends only the groups not in the journal. The journal is
folded into the Parquet file when the shard is complete and then removed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import write_parquet_atomic
from pipeline.judging.groups import JudgeGroup, read_shard_groups
from pipeline.schema import JUDGMENTS
from pipeline.store import SUPERSEDED, round_dir, supersede, unsupersede

HUMAN_PREFIX = "human--"


def candidate_shards(workdir: Path, round_: int) -> list[Path]:
    return sorted((round_dir(workdir, round_) / "candidates").glob("shard-*.parquet"))


def judgments_dir(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "judgments"


def source_slug(source: str) -> str:
    return source.replace(":", "-").replace("/", "_")


def judgment_path(workdir: Path, round_: int, source: str, fingerprint: str,
                  shard: Path) -> Path:
    return judgments_dir(workdir, round_) / f"{source_slug(source)}--{fingerprint}--{shard.name}"


def journal_path(target: Path) -> Path:
    return target.with_name(target.stem + ".journal.jsonl")


def parse_name(name: str) -> tuple[str, str | None]:
    """(source slug, fingerprint) of a judgment file name; humans have no fingerprint."""
    if name.startswith(HUMAN_PREFIX):
        return "human", None
    parts = name.split("--")
    return parts[0], parts[1] if len(parts) >= 3 else None


def retire_other_fingerprints(workdir: Path, round_: int, source: str,
                              fingerprint: str) -> list[Path]:
    """Set aside this source's files (and journals) made by another judge fingerprint."""
    folder = judgments_dir(workdir, round_)
    slug = source_slug(source)
    moved = []
    for p in sorted(folder.glob(f"{slug}--*")):
        s, fp = parse_name(p.name)
        if s == slug and fp != fingerprint:
            moved += supersede(folder, p.name)
    return moved


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


# How often, at most, the journal is fsynced while groups arrive (on the append of a group that
# finishes this long after the last fsync; and always on close). Every line is flushed to the OS as
# its group finishes, so a killed process loses nothing; only a power cut or kernel crash can
# take the lines since the last fsync, whose groups are then judged again. An fsync per group
# held up the loop that hands the judge its next group: 27% of the judging thread's busy
# samples in a demo loop were in it (py-spy, 2026-12-06).
FSYNC_EVERY_S = 0.5


class Journal:
    """Append-only record of finished groups. A torn last line (a crash mid-write) is skipped
    on load, and the first append starts on a fresh line so it is not lost with it. Use it
    as a context manager: the file stays open across appends and is fsynced on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None
        self._synced_at = float("-inf")

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
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+b")  # noqa: SIM115 (closed by close())
            if self._fh.tell() > 0 and not _ends_with_newline(self._fh):
                self._fh.write(b"\n")
        self._fh.write((json.dumps({"group_id": group_id, "rows": rows}) + "\n").encode())
        self._fh.flush()
        if time.monotonic() - self._synced_at >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            self._synced_at = time.monotonic()

    def close(self, sync: bool = True) -> None:
        fh, self._fh = self._fh, None  # closed once, even if the fsync or the close raises
        if fh is not None:
            try:
                if sync:
                    os.fsync(fh.fileno())
            finally:
                fh.close()

    def remove(self) -> None:
        self.close(sync=False)  # about to be unlinked: nothing to make durable
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(fh) -> bool:
    fh.seek(-1, os.SEEK_END)
    last = fh.read(1)
    fh.seek(0, os.SEEK_END)
    return last == b"\n"


def _write(path: Path, groups: list[JudgeGroup], rows_by_group: dict[str, list[dict]]) -> int:
    rows = [r for g in groups for r in rows_by_group[g.group_id]]
    write_parquet_atomic(pa.Table.from_pylist(rows, JUDGMENTS.arrow_schema), path, JUDGMENTS)
    return len(rows)


def _reuse(target: Path) -> bool:
    """The target exists, or an identical judge's file was set aside and is brought back."""
    return target.exists() or unsupersede(target.parent, target.name)


def judge_shard_at_once(workdir: Path, round_: int, shard: Path, source: str, fingerprint: str,
                        judge: Callable[[list[JudgeGroup]], list[dict]]) -> ShardJudgeResult:
    """Fast local sources (verifier, reward models): the whole shard in one go."""
    target = judgment_path(workdir, round_, source, fingerprint, shard)
    if _reuse(target):
        n = _groups_in(shard)
        return ShardJudgeResult(source, shard.name, n, n, 0, True)
    groups = read_shard_groups(workdir, round_, shard)
    rows_by_group: dict[str, list[dict]] = {}
    for r in judge(groups):
        rows_by_group.setdefault(r["group_id"], []).append(r)
    n = _write(target, groups, rows_by_group)
    return ShardJudgeResult(source, shard.name, len(groups), len(groups), n, False)


def judge_shard_journaled(workdir: Path, round_: int, shard: Path, source: str,
                          fingerprint: str, judge,
                          on_group: Callable[[], None] | None = None) -> ShardJudgeResult:
    """LLM judges: ``judge.judge_groups`` yields (group, rows) as groups finish."""
    target = judgment_path(workdir, round_, source, fingerprint, shard)
    if _reuse(target):
        n = _groups_in(shard)
        return ShardJudgeResult(source, shard.name, n, n, 0, True)
    groups = read_shard_groups(workdir, round_, shard)
    with Journal(journal_path(target)) as journal:
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


def _groups_in(shard: Path) -> int:
    import pyarrow.parquet as pq

    table = pq.read_table(shard, columns=["group_id"])
    return len(set(table.column("group_id").to_pylist()))


@dataclass
class Coverage:
    source: str
    groups: int
    done: int  # scored or failed, in a finished file or a journal

    @property
    def pending(self) -> int:
        return self.groups - self.done


def coverage(workdir: Path, round_: int, source: str, fingerprint: str) -> Coverage:
    """How many of the round's groups this source (with this fingerprint) has judged."""
    groups = done = 0
    for shard in candidate_shards(workdir, round_):
        n = _groups_in(shard)
        groups += n
        target = judgment_path(workdir, round_, source, fingerprint, shard)
        if target.exists():
            done += n
        else:
            done += len(Journal(journal_path(target)).load())
    return Coverage(source, groups, done)


def human_files(workdir: Path, round_: int) -> list[Path]:
    return sorted(judgments_dir(workdir, round_).glob(f"{HUMAN_PREFIX}*.parquet"))


def other_files(workdir: Path, round_: int, used: set[Path]) -> dict[str, int]:
    """Judgment files in the round that a ranking would not use, counted by source slug."""
    out: dict[str, int] = {}
    for p in sorted(judgments_dir(workdir, round_).glob("*.parquet")):
        if p not in used and SUPERSEDED not in p.parts:
            slug, _ = parse_name(p.name)
            out[slug] = out.get(slug, 0) + 1
    return out
