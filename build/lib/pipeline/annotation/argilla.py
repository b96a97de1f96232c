"""Argilla 2: a dataset with a ``RankingQuestion`` out, its flattened export back in.

Out: a directory in the layout of Argilla's ``Dataset.to_disk`` (``records.json``,
``.argilla/settings.json``, ``.argilla/dataset.json``), which ``rg.Dataset.from_disk(DIR,
name=..., workspace=...)`` creates on a server. One record per group (id = group id): text
fields ``prompt`` and ``candidate-1`` .. ``candidate-k`` in a shuffled order, a ranking
question ``ranking`` whose options are those positions, and the position -> candidate id map
in the record's metadata (``group_id``, ``candidate_ids``) so the answers map back.

In: the flattened export (``dataset.records.to_list(flatten=True)`` saved as JSON, or
``dataset.records.to_datasets()`` saved with ``to_json`` / ``to_parquet``): columns
``ranking.responses``, ``ranking.responses.users``, ``ranking.responses.status``, and
``ranking.suggestion`` / ``.suggestion.agent`` when the record carries a suggestion. Each
response is one record: only ``submitted`` ones count (drafts and discarded are skipped);
each user id is one annotator ``human:argilla-USER``; a suggestion becomes the machine source
``suggestion:AGENT``. A ranking is a list of options best first (the SDK's form), or a list
of ``{"value", "rank"}`` (the server's form, where equal ranks are ties).
"""

from __future__ import annotations

import re

from pipeline.annotation.entries import Entry, Vote, blank, human

QUESTION = "ranking"
OPTION = re.compile(r"candidate-(\d+)")
SUBMITTED = "submitted"


def _option(pos: int) -> str:
    return f"candidate-{pos}"


def settings(k_min: int, k_max: int) -> dict:
    """``Settings.serialize()`` of the dataset (what ``Settings.from_json`` reads)."""
    text = {"type": "text", "use_markdown": False}
    fields = [{"name": "prompt", "title": "Prompt", "required": True, "settings": text}]
    fields += [{"name": _option(p), "title": f"Answer {p}", "required": p <= k_min,
                "settings": text} for p in range(1, k_max + 1)]
    options = [{"value": _option(p), "text": f"Answer {p}", "description": None}
               for p in range(1, k_max + 1)]
    return {
        "guidelines": "Rank the answers to the prompt, best first.",
        "questions": [{"name": QUESTION, "title": "Rank the answers, best first",
                       "description": None, "required": True,
                       "settings": {"type": "ranking", "options": options}}],
        "fields": fields,
        "vectors": [],
        "metadata": [{"name": "group_id", "title": "group_id", "visible_for_annotators": False,
                      "settings": {"type": "terms", "values": None,
                                   "visible_for_annotators": False}}],
        "allow_extra_metadata": True,  # candidate_ids and export_id ride along undeclared
        "distribution": {"strategy": "overlap", "min_submitted": 1},
        "mapping": None,
    }


def dataset_model(name: str) -> dict:
    return {"name": name, "status": "draft", "guidelines": None, "allow_extra_metadata": True,
            "distribution": {"strategy": "overlap", "min_submitted": 1}}


def record(export_id: str, group_id: str, prompt: str, ids: list[str],
           texts: list[str]) -> dict:
    """One record in ``Record.from_dict`` form (the SDK's ``records.json``)."""
    fields = {"prompt": prompt} | {_option(p): t for p, t in enumerate(texts, 1)}
    return {"id": group_id, "fields": fields,
            "metadata": {"group_id": group_id, "export_id": export_id, "candidate_ids": ids},
            "suggestions": {}, "responses": {}, "vectors": {}, "status": "pending",
            "_server_id": None}


def is_flattened(columns: set[str]) -> bool:
    return any(c.endswith((".responses", ".suggestion")) for c in columns)


def entries(records: list[tuple[int, dict]]) -> list[Entry]:
    out: list[Entry] = []
    for line, rec in records:
        gid = rec.get("group_id") if not blank(rec.get("group_id")) else rec.get("id")
        ids = rec.get("candidate_ids")
        values = rec.get(f"{QUESTION}.responses") or []
        users = rec.get(f"{QUESTION}.responses.users") or []
        statuses = rec.get(f"{QUESTION}.responses.status") or []
        suggestion = rec.get(f"{QUESTION}.suggestion")
        answers = [(human(f"argilla-{u}") if not blank(u) else None, v, s)
                   for v, u, s in _zip_longest(values, users, statuses)]
        if suggestion is not None:
            agent = rec.get(f"{QUESTION}.suggestion.agent")
            answers.append((f"suggestion:{agent if not blank(agent) else 'argilla'}",
                            suggestion, SUBMITTED))
        for source, value, status in answers:
            raw = {"record": rec.get("id"), "line": line, "source": source, "status": status,
                   "value": value}
            e = Entry(len(out) + 1, raw, whole_group=True)
            out.append(e)
            if status != SUBMITTED:
                e.skip = str(status or "no status")
                continue
            if source is None:
                e.reason = "response without a user"
            elif blank(gid):
                e.reason = "record without group_id or id"
            elif not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                e.reason = "record without candidate_ids metadata"
            else:
                e.source, e.group_id = source, str(gid)
                e.votes, e.reason = _votes(value, ids)
    return out


def _zip_longest(*lists):
    n = max(len(x) for x in lists)
    return [tuple(x[i] if i < len(x) else None for x in lists) for i in range(n)]


def _votes(value, ids: list[str]) -> tuple[list[Vote], str | None]:
    if not isinstance(value, list) or not value:
        return [], "ranking is not a non-empty list"
    ranks: dict[str, int] = {}
    for pos, item in enumerate(value, 1):
        if isinstance(item, dict):  # the server's form: {"value": option, "rank": r}
            option, rank = item.get("value"), item.get("rank", pos)
            if rank is None:
                rank = pos
        else:
            option, rank = item, pos
        match = OPTION.fullmatch(str(option))
        if not match or not 1 <= int(match.group(1)) <= len(ids):
            return [], f"unknown option {option!r}"
        if not isinstance(rank, int) or isinstance(rank, bool):
            return [], f"rank {rank!r} is not an integer"
        cid = ids[int(match.group(1)) - 1]
        if cid in ranks:
            return [], "an option ranked twice"
        ranks[cid] = rank
    return [Vote(cid, "rank", float(r)) for cid, r in ranks.items()], None
