"""Ranked groups out to other trainers: trl's preference pairs, or one row per ranked group.

``trl``: trl's preference layout (``prompt`` / ``chosen`` / ``rejected``), conversational:
the prompt is the whole conversation (``prompts.messages``), chosen and rejected are one
assistant message each, so trl applies the policy's chat template itself. ``text=True`` gives
the standard string layout instead, the prompt being the policy's own rendering (the stored
``prompt_token_ids`` decoded, so trl's tokenizer gives back exactly those ids).
Pairs are never made of ties:

- ``best_worst``: the best tier against the worst tier. One pair for a group whose best and
  worst are single candidates; when several tie for best or worst, every (best, worst)
  combination, as ``train.loss = dpo`` does, so a tie is never broken by picking one.
- ``all``: every pair of ranked candidates with different ranks, better one chosen.

``listwise``: one row per group, completions best first with their ranks (ties keep equal
ranks), the group's weight and status, and the ids that lead back to the store.

Left out, and counted by reason: groups the status policy gave weight 0, groups with fewer
than two ranked candidates, groups whose ranked candidates all tie (no order to learn).
Excluded candidates (rank -1) never appear. The output is one file (``.parquet``,
``.jsonl``) or a ``datasets`` ``save_to_disk`` directory (a path with no suffix), replaced
atomically.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.atomic import atomic_dir, write_table_atomic, write_text_atomic
from pipeline.rounds import round_policy
from pipeline.schema import MESSAGES
from pipeline.store import TABLE_GLOBS, table_files

FORMATS = ("trl", "listwise")
PAIRS = ("best_worst", "all")
SUFFIXES = (".parquet", ".jsonl")

LEFT_OUT_WEIGHT = "weight 0 under the status policy ({status})"
LEFT_OUT_FEW = "fewer than two ranked candidates"
LEFT_OUT_TIED = "no order: every ranked candidate tied"


@dataclass
class ExportResult:
    out: str
    format: str
    layout: str  # conversational or text
    pairs: str | None  # trl only
    rounds: list[int]
    groups_read: int
    groups_written: int
    rows_written: int  # pairs (trl) or groups (listwise)
    groups_left_out: dict[str, int] = field(default_factory=dict)  # reason -> groups
    excluded_candidates: int = 0  # rank -1 candidates of written groups, left out
    # text layout: prompts whose rendering does not tokenise back to the stored ids
    text_prompts_not_exact: int | None = None


@dataclass
class _Group:
    round: int
    group_id: str
    prompt_id: str
    status: str
    weight: float
    messages: list[dict]
    prompt_token_ids: list[int]
    candidates: list[dict]  # candidate_id, candidate_idx, text, rank; best first


def ranked_rounds(workdir: Path) -> list[int]:
    """Rounds whose ranking stage wrote its files (rankings and groups)."""
    def rounds_of(table: str) -> set[int]:
        return {int(p.parent.parent.name[1:]) for p in table_files(workdir, table)}
    return sorted(rounds_of("rankings") & rounds_of("groups"))


def export_ranked(workdir: Path, out: Path, fmt: str = "trl", pairs: str | None = None,
                  rounds: list[int] | None = None, text: bool = False) -> ExportResult:
    """Write the ranked groups of ``rounds`` (default: every ranked round) to ``out``."""
    workdir, out = Path(workdir), Path(out)
    _check_args(workdir, out, fmt, pairs)
    pairs = (pairs or "best_worst") if fmt == "trl" else None
    rounds = _check_rounds(workdir, rounds)
    groups = _read_groups(workdir, rounds)

    left_out: Counter[str] = Counter()
    kept: list[_Group] = []
    excluded = 0
    for g in groups:
        ranked = [c for c in g.candidates if c["rank"] >= 0]
        if g.weight <= 0:
            left_out[LEFT_OUT_WEIGHT.format(status=g.status)] += 1
        elif len(ranked) < 2:
            left_out[LEFT_OUT_FEW] += 1
        elif ranked[0]["rank"] == ranked[-1]["rank"]:
            left_out[LEFT_OUT_TIED] += 1
        else:
            excluded += len(g.candidates) - len(ranked)
            g.candidates = ranked
            kept.append(g)
    if not kept:
        raise ValueError(f"nothing to export from round(s) {rounds} of {workdir}: "
                         f"{len(groups)} groups read, left out: {dict(left_out) or 'none'}; "
                         "see the status policy (rank.intransitive, rank.contested) and "
                         "`grpo audit`")

    prompts, not_exact = (_text_prompts(workdir, kept) if text else
                          ({g.group_id: g.messages for g in kept}, None))
    rows = (trl_rows(kept, prompts, pairs, text) if fmt == "trl" else
            listwise_rows(kept, prompts))
    table = pa.Table.from_pylist(rows, _schema(fmt, text))
    _write(table, out)
    return ExportResult(str(out), fmt, "text" if text else "conversational", pairs, rounds,
                        len(groups), len(kept), table.num_rows, dict(sorted(left_out.items())),
                        excluded, not_exact)


def trl_rows(groups: list[_Group], prompts: dict, pairs: str, text: bool) -> list[dict]:
    """Preference pairs of each group, better candidate chosen; never a tie."""
    rows = []
    for g in groups:
        cands = g.candidates  # ranked only, best first
        if pairs == "best_worst":
            best, worst = cands[0]["rank"], cands[-1]["rank"]
            chosen = [c for c in cands if c["rank"] == best]
            rejected = [c for c in cands if c["rank"] == worst]
            pair_list = [(a, b) for a in chosen for b in rejected]
        else:
            pair_list = [(a, b) for i, a in enumerate(cands) for b in cands[i + 1:]
                         if a["rank"] < b["rank"]]
        for a, b in pair_list:
            rows.append({"prompt": prompts[g.group_id],
                         "chosen": _completion(a["text"], text),
                         "rejected": _completion(b["text"], text),
                         "round": g.round, "group_id": g.group_id, "prompt_id": g.prompt_id,
                         "chosen_id": a["candidate_id"], "rejected_id": b["candidate_id"],
                         "chosen_rank": a["rank"], "rejected_rank": b["rank"],
                         "weight": g.weight})
    return rows


def listwise_rows(groups: list[_Group], prompts: dict) -> list[dict]:
    """One row per group: completions best first, ranks beside them (ties equal)."""
    return [{"prompt": prompts[g.group_id],
             "completions": [c["text"] for c in g.candidates],
             "ranks": [c["rank"] for c in g.candidates],
             "candidate_ids": [c["candidate_id"] for c in g.candidates],
             "weight": g.weight, "status": g.status,
             "round": g.round, "group_id": g.group_id, "prompt_id": g.prompt_id}
            for g in groups]


def _completion(text: str, as_text: bool):
    return text if as_text else [{"role": "assistant", "content": text}]


def _schema(fmt: str, text: bool) -> pa.Schema:
    prompt = pa.string() if text else MESSAGES
    ids = [("round", pa.int32()), ("group_id", pa.string()), ("prompt_id", pa.string())]
    if fmt == "trl":
        completion = pa.string() if text else MESSAGES
        return pa.schema([("prompt", prompt), ("chosen", completion), ("rejected", completion),
                          *ids, ("chosen_id", pa.string()), ("rejected_id", pa.string()),
                          ("chosen_rank", pa.int32()), ("rejected_rank", pa.int32()),
                          ("weight", pa.float64())])
    return pa.schema([("prompt", prompt), ("completions", pa.list_(pa.string())),
                      ("ranks", pa.list_(pa.int32())), ("candidate_ids", pa.list_(pa.string())),
                      ("weight", pa.float64()), ("status", pa.string()), *ids])


def _check_args(workdir: Path, out: Path, fmt: str, pairs: str | None) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if pairs is not None and fmt != "trl":
        raise ValueError("--pairs applies to --format trl only (listwise keeps whole groups)")
    if pairs is not None and pairs not in PAIRS:
        raise ValueError(f"--pairs {pairs!r}: expected one of {', '.join(PAIRS)}")
    if out.suffix and out.suffix not in SUFFIXES:
        raise ValueError(f"--out {out}: expected a .parquet or .jsonl file, or a directory "
                         "(no suffix) for a datasets save_to_disk dataset")
    if not out.suffix and out.exists() and (not out.is_dir() or (
            any(out.iterdir()) and not (out / "dataset_info.json").is_file())):
        raise ValueError(f"--out {out}: exists and is not a saved dataset; choose a new "
                         "directory (an earlier export there would be replaced)")
    if not workdir.is_dir():
        raise FileNotFoundError(f"no workdir {workdir}; run `grpo generate` and `grpo rank` "
                                "first (or pass --workdir)")


def _check_rounds(workdir: Path, rounds: list[int] | None) -> list[int]:
    ranked = ranked_rounds(workdir)
    if not ranked:
        raise FileNotFoundError(f"no ranked round in {workdir}; run `grpo rank` first")
    if rounds is None:
        return ranked
    missing = sorted(set(rounds) - set(ranked))
    if missing:
        raise FileNotFoundError(f"round(s) {missing} of {workdir} are not ranked (ranked: "
                                f"{ranked}); run `grpo rank --round {missing[0]}` first")
    return sorted(set(rounds))


def _read_groups(workdir: Path, rounds: list[int]) -> list[_Group]:
    glob = {name: str(workdir.resolve() / pattern) for name, pattern in TABLE_GLOBS.items()}
    con = duckdb.connect()
    try:
        head = con.execute(f"""
            SELECT g.round, g.group_id, p.prompt_id, g.status, g.weight, p.messages,
                   p.prompt_token_ids
            FROM read_parquet('{glob["groups"]}') g
            JOIN (SELECT DISTINCT round, group_id, prompt_id
                  FROM read_parquet('{glob["candidates"]}')) c USING (round, group_id)
            JOIN read_parquet('{glob["prompts"]}') p USING (round, prompt_id)
            WHERE g.round IN (SELECT unnest(?))
            ORDER BY g.group_id
        """, [rounds]).fetchall()
        cands = con.execute(f"""
            SELECT c.group_id, c.candidate_id, c.candidate_idx, c.text, r.rank
            FROM read_parquet('{glob["candidates"]}') c
            JOIN read_parquet('{glob["rankings"]}') r USING (candidate_id)
            WHERE c.round IN (SELECT unnest(?))
            ORDER BY c.group_id, r.rank < 0, r.rank, c.candidate_idx
        """, [rounds]).fetchall()
    finally:
        con.close()
    by_group: dict[str, list[dict]] = {}
    for gid, cid, idx, text, rank in cands:
        by_group.setdefault(gid, []).append(
            {"candidate_id": cid, "candidate_idx": idx, "text": text, "rank": rank})
    return [_Group(r, gid, pid, status, float(w), msgs, ids, by_group.get(gid, []))
            for r, gid, pid, status, w, msgs, ids in head]


def _text_prompts(workdir: Path, groups: list[_Group]) -> tuple[dict[str, str], int]:
    """The prompt as the policy saw it, as text: each round's stored prompt ids decoded by
    the tokenizer of the policy that sampled the round. The tokenizer's own leading special
    tokens (BOS) are left off, since trl's tokenizer call adds them again. Counts the prompts
    whose text does not tokenise back to the stored ids."""
    from transformers import AutoTokenizer

    out, not_exact, tokenizers = {}, 0, {}
    for g in groups:
        if g.round not in tokenizers:
            policy = round_policy(workdir, g.round)
            if policy is None or not Path(policy).is_dir():
                raise FileNotFoundError(
                    f"--text renders prompts with the tokenizer of the policy that sampled "
                    f"round {g.round}, but {policy or 'its generation.json'} is missing; "
                    "export without --text (conversational) instead")
            tokenizers[g.round] = AutoTokenizer.from_pretrained(policy)
        tok = tokenizers[g.round]
        ids = list(g.prompt_token_ids)
        added = list(tok("")["input_ids"])  # what the tokenizer adds around any text
        if added and ids[:len(added)] == added:
            ids = ids[len(added):]
        rendered = tok.decode(ids, skip_special_tokens=False)
        not_exact += list(tok(rendered)["input_ids"]) != list(g.prompt_token_ids)
        out[g.group_id] = rendered
    return out, not_exact


def _write(table: pa.Table, out: Path) -> None:
    """Replace ``out`` atomically: a reader never sees half an export."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        write_text_atomic("".join(json.dumps(row, ensure_ascii=False) + "\n"
                                  for row in table.to_pylist()), out)
    elif out.suffix == ".parquet":
        write_table_atomic(table, out)
    else:
        import datasets

        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # stderr stays for the command's own lines
        try:
            with atomic_dir(out) as tmp:
                datasets.Dataset(table).save_to_disk(str(tmp))
        finally:
            if bars:
                datasets.enable_progress_bars()
