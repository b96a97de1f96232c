"""Which judgments a ranking merges: the configured sources (with their current
fingerprints) plus human imports; anything else in the round is left out, and said so.

A source that has not judged every group of the round stops the ranking with a message that
says how many groups are pending and what to run: a consensus over half a judge is not one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Config
from pipeline.judging import stage
from pipeline.judging.sources import configured_sources


@dataclass
class RankInputs:
    files: list[Path]
    sources: list[str]  # configured machine sources, in config order
    human_files: list[Path]
    left_out: dict[str, int] = field(default_factory=dict)  # source slug -> files not used


def rank_inputs(cfg: Config, workdir: Path, round_: int) -> RankInputs:
    shards = stage.candidate_shards(workdir, round_)
    if not shards:
        raise ValueError(f"round {round_} has no candidates; run `grpo generate --round "
                         f"{round_}` first")
    files: list[Path] = []
    sources = []
    for spec in configured_sources(cfg, workdir):
        cov = stage.coverage(workdir, round_, spec.source, spec.fingerprint)
        if cov.pending:
            raise ValueError(f"round {round_}: {spec.source} has judged {cov.done} of "
                             f"{cov.groups} groups with the current settings; run `grpo judge "
                             f"--round {round_}` first")
        files += [stage.judgment_path(workdir, round_, spec.source, spec.fingerprint, s)
                  for s in shards]
        sources.append(spec.source)
    humans = stage.human_files(workdir, round_)
    used = set(files) | set(humans)
    return RankInputs(files + humans, sources, humans, stage.other_files(workdir, round_, used))
