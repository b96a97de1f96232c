"""Label Studio: tasks and a labeling config out, its JSON export back in.

Out: one task per group, ``data = {group_id, export_id, prompt, candidates: [{id, title,
body}]}`` with the candidates in a shuffled order and the candidate ids as item ids, and a
config with a ``Ranker`` over that ``List`` holding one bucket per rank (``rank-1`` best ..
``rank-k``), so several candidates in one bucket are a tie and a candidate left in the list
is unranked. With k = 2 a ``Pairwise`` choice between ``left`` and ``right`` instead (no ties
there: Label Studio's Pairwise has none).

In: Label Studio's JSON export (a list of tasks, each with its ``annotations``). Each
annotation is one record: cancelled ones are skipped; ``completed_by`` is the annotator
(``human:label-studio-ID``, or the e-mail when the export nests the user); bucket order is
rank; item ids map back to candidate ids (checked against the store like any file).
Results without exactly one ranking, unknown buckets, an item in two buckets or an empty
ranking are quarantined with the reason.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import quoteattr

from pipeline.annotation.entries import Entry, Vote, blank, human

RANKER = "rank"
LIST = "candidates"
PAIRWISE = "choice"
BUCKET = re.compile(r"rank-(\d+)")
CANCELLED = "cancelled"


def labeling_config(k: int) -> str:
    if k == 2:
        return "\n".join([
            "<View>",
            '  <Header value="Which answer is better?"/>',
            '  <Text name="prompt" value="$prompt"/>',
            '  <Text name="left" value="$left"/>',
            '  <Text name="right" value="$right"/>',
            f'  <Pairwise name="{PAIRWISE}" toName="left,right"/>',
            "</View>", ""])
    buckets = [f"    <Bucket name={quoteattr(f'rank-{r}')} "
               f"title={quoteattr(_bucket_title(r, k))}/>" for r in range(1, k + 1)]
    return "\n".join([
        "<View>",
        '  <Header value="Drag each answer into a rank, 1 is best. Answers equally good go '
        'into the same rank; leave an answer in the list to not rank it."/>',
        '  <Text name="prompt" value="$prompt"/>',
        f'  <List name="{LIST}" value="$candidates" title="Answers"/>',
        f'  <Ranker name="{RANKER}" toName="{LIST}">',
        *buckets,
        "  </Ranker>",
        "</View>", ""])


def _bucket_title(r: int, k: int) -> str:
    return f"{r} (best)" if r == 1 else f"{r} (worst)" if r == k else str(r)


def task(export_id: str, group_id: str, prompt: str, ids: list[str], texts: list[str],
         pairwise: bool) -> dict:
    data = {"group_id": group_id, "export_id": export_id, "prompt": prompt}
    if pairwise:
        data |= {"left": texts[0], "right": texts[1], "left_id": ids[0], "right_id": ids[1]}
    else:
        data["candidates"] = [{"id": cid, "title": f"Answer {pos}", "body": text}
                              for pos, (cid, text) in enumerate(zip(ids, texts, strict=True), 1)]
    return {"data": data}


def is_tasks(obj) -> bool:
    """Label Studio tasks: its JSON export, or (without annotations) the tasks file."""
    return (isinstance(obj, list) and bool(obj)
            and all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in obj))


def has_annotations(tasks: list[dict]) -> bool:
    return any("annotations" in t for t in tasks)


def _annotator(completed_by) -> str | None:
    if isinstance(completed_by, dict):
        value = completed_by.get("email") or completed_by.get("id")
        return None if blank(value) else str(value)
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio-{completed_by}"
    return None


def entries(tasks: list[dict]) -> list[Entry]:
    out = []
    for t in tasks:
        data = t.get("data") if isinstance(t.get("data"), dict) else {}
        for ann in t.get("annotations") or []:
            ann = ann if isinstance(ann, dict) else {"result": ann}
            raw = {"task": t.get("id"), "annotation": ann.get("id"),
                   "completed_by": ann.get("completed_by"),
                   "was_cancelled": ann.get("was_cancelled"), "result": ann.get("result")}
            e = Entry(len(out) + 1, raw, whole_group=True)
            out.append(e)
            if ann.get("was_cancelled"):
                e.skip = CANCELLED
                continue
            annotator = _annotator(ann.get("completed_by"))
            if annotator is None:
                e.reason = "missing completed_by"
                continue
            if blank(data.get("group_id")):
                e.reason = "task without group_id in its data"
                continue
            e.source, e.group_id = human(annotator), str(data["group_id"])
            e.votes, e.reason = _votes(ann.get("result"), data)
    return out


def _votes(result, data: dict) -> tuple[list[Vote], str | None]:
    results = result if isinstance(result, list) else []
    ranked = [r for r in results if isinstance(r, dict) and r.get("type") in ("ranker",
                                                                              "pairwise")]
    if len(ranked) != 1:
        return [], ("no ranking in the result" if not ranked
                    else "more than one ranking in the result")
    value = ranked[0].get("value")
    if ranked[0]["type"] == "pairwise":
        return _pairwise(value, data)
    ranker = value.get("ranker") if isinstance(value, dict) else None
    if not isinstance(ranker, dict) or not all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            for ids in ranker.values()):
        return [], "malformed ranker value"
    ranks: dict[str, int] = {}
    if any(BUCKET.fullmatch(key) for key in ranker):
        for key, ids in ranker.items():
            if key == "_":  # the list the buckets were filled from: left unranked
                continue
            match = BUCKET.fullmatch(key)
            if not match:
                return [], f"unknown bucket {key!r}"
            for cid in ids:
                if cid in ranks:
                    return [], "an item in two buckets"
                ranks[cid] = int(match.group(1))
    else:  # a Ranker without buckets: the one list, in the annotator's order
        keys = [key for key in ranker if key != "_"]
        if len(keys) != 1 or keys[0] not in (LIST, RANKER):
            return [], f"unknown bucket {keys[0]!r}" if keys else "nothing ranked"
        order = ranker[keys[0]]
        if len(set(order)) < len(order):
            return [], "an item ranked twice"
        ranks = {cid: pos for pos, cid in enumerate(order, 1)}
    if not ranks:
        return [], "nothing ranked"
    return [Vote(cid, "rank", float(r)) for cid, r in ranks.items()], None


def _pairwise(value, data: dict) -> tuple[list[Vote], str | None]:
    selected = value.get("selected") if isinstance(value, dict) else None
    if selected not in ("left", "right"):
        return [], f"pairwise selection {selected!r} is not left or right"
    if blank(data.get("left_id")) or blank(data.get("right_id")):
        return [], "task without left_id/right_id in its data"
    winner = str(data[f"{selected}_id"])
    loser = str(data["right_id" if selected == "left" else "left_id"])
    if winner == loser:
        return [], "winner and loser are the same candidate"
    first, second = sorted((winner, loser))
    return [Vote(first, "pairwise", 1.0 if first == winner else 0.0, second)], None
