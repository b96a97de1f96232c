"""What a workdir's rounds hold, and which round a command works on.

Each round records how it was generated (``rounds/rNNN/generation.json``: the policy, its
content fingerprint, the samples' identity hash, the planned shards), and every finished stage
leaves ``rounds/rNNN/_stages/STAGE.json``. Commands read these files, never Prefect's run
history, to decide what is done: the files are the record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.store import round_dir, rounds_with_candidates

STAGES = ("evaluate", "generate", "judge", "annotate", "rank", "train")


def manifest_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "generation.json"


def read_manifest(workdir: Path, round_: int) -> dict | None:
    path = manifest_path(workdir, round_)
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(workdir: Path, round_: int, manifest: dict) -> None:
    write_text_atomic(json.dumps(manifest, indent=2), manifest_path(workdir, round_))


def relative_to_workdir(path: Path, workdir: Path) -> str:
    """Inside the workdir: relative (the workdir may be moved or copied); else absolute."""
    path, workdir = Path(path).resolve(), Path(workdir).resolve()
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)


def from_workdir(value: str, workdir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else Path(workdir) / path


def round_policy(workdir: Path, round_: int) -> Path | None:
    """The model that generated the round (None if the round was never planned)."""
    manifest = read_manifest(workdir, round_)
    return from_workdir(manifest["policy"], workdir) if manifest else None


def stage_marker(workdir: Path, round_: int, stage: str) -> Path:
    return round_dir(workdir, round_) / "_stages" / f"{stage}.json"


def stage_done(workdir: Path, round_: int, stage: str) -> bool:
    return stage_marker(workdir, round_, stage).exists()


def mark_stage(workdir: Path, round_: int, stage: str, info: dict, started: float) -> None:
    write_text_atomic(json.dumps({"seconds": round(time.perf_counter() - started, 1), **info},
                                 indent=2, default=str), stage_marker(workdir, round_, stage))


def rounds_with_stage(workdir: Path, stage: str) -> list[int]:
    rounds = sorted(int(p.name[1:]) for p in (Path(workdir) / "rounds").glob("r[0-9]*"))
    return [r for r in rounds if stage_done(workdir, r, stage)]


def newest_round(workdir: Path, stage: str, command: str, needs: str) -> int:
    """The newest round whose ``stage`` finished: where judge, rank and export work by
    default. The message says what to run when there is none."""
    done = rounds_with_stage(workdir, stage)
    if not done:
        have = rounds_with_candidates(workdir)
        extra = f" (rounds with candidates: {have})" if have else ""
        flag = "--rounds" if command == "train" else "--round"
        raise FileNotFoundError(f"no round in {workdir} {needs} yet{extra}; run `grpo {stage}` "
                                f"before `grpo {command}`, or pass {flag}")
    return done[-1]


def next_round_to_generate(workdir: Path) -> int:
    """The first round that is not fully generated: a scheduled generation continues it, or
    starts the next one."""
    r = 0
    while stage_done(workdir, r, "generate"):
        r += 1
    return r


def trained_policy_dir(workdir: Path, round_: int) -> Path:
    """Where the loop saves the policy trained on round ``round_ - 1``."""
    return Path(workdir) / "models" / f"policy-r{round_:03d}"


def policy_for_round(workdir: Path, base: Path, round_: int) -> Path:
    """The policy that samples round r: the newest policy the loop trained on an earlier
    round (``models/policy-rNNN`` with NNN <= r), else the base policy. Manual, scheduled
    and looped generation all follow this one rule."""
    for r in range(round_, 0, -1):
        path = trained_policy_dir(workdir, r)
        if (path / "config.json").is_file():
            return path
    return Path(base)
