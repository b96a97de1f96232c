"""``grpo export-annotation``: groups out to people, in the tool they rank with.

Every export gets its own id ``rNNN-eNNNN`` (numbered across the workdir) and its own file
names, so an export never replaces a file an annotator may be filling in; as a second guard
nothing is ever written over an existing file. Groups someone already ranked are left out
unless asked (``include_annotated``). How the groups were chosen is recorded twice: a
``.manifest.json`` beside the files, and rows in the ``annotation_exports`` table (one per
group, with the selection and its score) that the audit queries.

Formats: ``csv`` (one row per candidate, ``rank`` and ``annotator`` blank, texts that look
like spreadsheet formulas prefixed with ``'``) with a JSON lines twin (one group per line,
``annotator`` and each candidate's ``rank`` to fill in; importable as it is once filled);
``label-studio`` (tasks JSON and labeling config XML); ``argilla`` (a ``Dataset.to_disk``
directory). Candidates appear in a seeded shuffled order, never in sampling order.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.annotation import argilla, history, label_studio
from pipeline.annotation.entries import is_formula
from pipeline.annotation.selection import select
from pipeline.atomic import write_parquet_atomic, write_text_atomic
from pipeline.judging.views import views_for
from pipeline.schema import ANNOTATION_EXPORTS
from pipeline.store import round_dir

FORMATS = ("csv", "label-studio", "argilla")
EXPORT_NAME = re.compile(r"r\d{3,}-e(\d{4,})")


@dataclass
class ExportResult:
    export_id: str
    round: int
    format: str
    selection: str
    seed: int
    groups: int
    groups_requested: int | None
    eligible: int  # groups that could be chosen
    annotated_skipped: int  # groups left out because someone ranked them already
    files: list[str] = field(default_factory=list)
    manifest: str = ""


@dataclass
class _Group:
    group_id: str
    prompt: str
    ids: list[str]  # shown order
    texts: list[str]


def export_annotation(workdir: Path, round_: int, out_dir: Path | None = None,
                      max_groups: int | None = None, fmt: str = "csv",
                      selection: str = "random", seed: int | None = None,
                      include_annotated: bool = False) -> ExportResult:
    workdir = Path(workdir)
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if max_groups is not None and max_groups < 1:
        raise ValueError(f"--groups {max_groups}: give at least 1")
    out_dir = Path(out_dir) if out_dir else workdir / "annotation"
    cands = _candidates(workdir, round_)
    all_groups = sorted(set(cands["group_id"]))
    annotated = set() if include_annotated else history.annotated_groups(workdir)
    eligible = [g for g in all_groups if g not in annotated]
    number = _next_number(workdir, out_dir)
    export_id = f"r{round_:03d}-e{number:04d}"
    seed = number if seed is None else seed  # each export draws anew unless told otherwise
    if not eligible:
        raise ValueError(f"round {round_}: all {len(all_groups)} groups are annotated "
                         "already; pass --include-annotated to export them again")
    picks = select(workdir, round_, selection, eligible, max_groups, seed)
    groups = _shown(cands, [p.group_id for p in picks], seed)

    stem = out_dir / f"annotation-{export_id}"
    files = _FORMAT_WRITERS[fmt](stem, export_id, groups)
    for path, _ in files:
        if path.exists():  # never happens with fresh ids; never overwrite annotations anyway
            raise ValueError(f"{path} exists (it may hold annotations) and is not "
                             "overwritten; move it away or pass another --out")
    for path, text in files:
        write_text_atomic(text, path)

    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = [{"round": round_, "group_id": p.group_id, "export_id": export_id,
             "position": i, "selection": selection, "selection_score": p.score, "seed": seed,
             "format": fmt, "exported_at": now} for i, p in enumerate(picks, 1)]
    write_parquet_atomic(pa.Table.from_pylist(rows, ANNOTATION_EXPORTS.arrow_schema),
                         round_dir(workdir, round_) / "annotation_exports"
                         / f"{export_id}.parquet", ANNOTATION_EXPORTS)
    result = ExportResult(export_id, round_, fmt, selection, seed, len(picks), max_groups,
                          len(eligible), len(set(all_groups) & annotated),
                          [str(p) for p, _ in files], str(stem) + ".manifest.json")
    manifest = asdict(result) | {"include_annotated": include_annotated, "exported_at": now,
                                 "groups_chosen": [{"group_id": p.group_id, "score": p.score}
                                                   for p in picks]}
    write_text_atomic(json.dumps(manifest, indent=2), Path(result.manifest))  # last: done
    return result


def _candidates(workdir: Path, round_: int) -> pl.DataFrame:
    rdir = round_dir(workdir, round_)
    shards = sorted((rdir / "candidates").glob("*.parquet"))
    if not shards:
        raise ValueError(f"round {round_} has no candidates in {rdir}; run "
                         f"`grpo generate --round {round_}` first")
    cands = pl.read_parquet(shards, columns=["group_id", "prompt_id", "candidate_idx",
                                             "candidate_id", "text"])
    prompts = pl.read_parquet(rdir / "prompts.parquet", columns=["prompt_id", "prompt"])
    return cands.join(prompts, on="prompt_id", how="left").sort("group_id", "candidate_idx")


def _shown(cands: pl.DataFrame, order: list[str], seed: int) -> list[_Group]:
    by_group = {g: part for (g,), part in cands.group_by("group_id")}
    out = []
    for gid in order:
        part = by_group[gid]
        ids, texts = part["candidate_id"].to_list(), part["text"].to_list()
        perm = views_for(gid, len(ids), 1, seed)[0]
        out.append(_Group(gid, part["prompt"][0] or "", [ids[c] for c in perm],
                          [texts[c] for c in perm]))
    return out


def _next_number(workdir: Path, out_dir: Path) -> int:
    names = [p.stem for p in Path(workdir).glob("rounds/*/annotation_exports/*.parquet")]
    if out_dir.exists():
        names += [p.name.removeprefix("annotation-") for p in out_dir.glob("annotation-*")]
    numbers = [int(m.group(1)) for n in names if (m := EXPORT_NAME.match(n))]
    return max(numbers, default=0) + 1


def _csv_files(stem: Path, export_id: str, groups: list[_Group]) -> list[tuple[Path, str]]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["group_id", "prompt", "position", "candidate_id", "text", "rank",
                     "annotator"])
    lines = []
    for g in groups:
        for pos, (cid, text) in enumerate(zip(g.ids, g.texts, strict=True), 1):
            writer.writerow([g.group_id, _cell(g.prompt), pos, cid, _cell(text), "", ""])
        lines.append(json.dumps({
            "group_id": g.group_id, "export_id": export_id, "prompt": g.prompt,
            "annotator": "", "candidates": [
                {"position": pos, "candidate_id": cid, "text": text, "rank": None}
                for pos, (cid, text) in enumerate(zip(g.ids, g.texts, strict=True), 1)]},
            ensure_ascii=False))
    return [(stem.with_name(stem.name + ".csv"), buf.getvalue()),
            (stem.with_name(stem.name + ".jsonl"), "".join(x + "\n" for x in lines))]


def _label_studio_files(stem: Path, export_id: str,
                        groups: list[_Group]) -> list[tuple[Path, str]]:
    ks = {len(g.ids) for g in groups}
    pairwise = ks == {2}  # a Pairwise choice only when every group has two candidates
    tasks = [label_studio.task(export_id, g.group_id, g.prompt, g.ids, g.texts, pairwise)
             for g in groups]
    config = label_studio.labeling_config(2 if pairwise else max(ks))
    return [(stem.with_name(stem.name + ".label-studio.json"),
             json.dumps(tasks, ensure_ascii=False, indent=1)),
            (stem.with_name(stem.name + ".label-studio.xml"), config)]


def _argilla_files(stem: Path, export_id: str, groups: list[_Group]) -> list[tuple[Path, str]]:
    root = stem.with_name(stem.name + ".argilla")
    ks = [len(g.ids) for g in groups]
    records = [argilla.record(export_id, g.group_id, g.prompt, g.ids, g.texts) for g in groups]
    return [(root / "records.json", json.dumps(records, ensure_ascii=False)),
            (root / ".argilla" / "settings.json",
             json.dumps(argilla.settings(min(ks), max(ks)), indent=1)),
            (root / ".argilla" / "dataset.json",
             json.dumps(argilla.dataset_model(f"grpo-{export_id}"), indent=1))]


_FORMAT_WRITERS = {"csv": _csv_files, "label-studio": _label_studio_files,
                   "argilla": _argilla_files}


def _cell(text: str) -> str:
    """A leading quote keeps a spreadsheet from running text as a formula (OWASP advice)."""
    return "'" + text if is_formula(text) else text
