"""Argilla 2, checked with Argilla's own SDK classes that run without a server.

What is checked, exactly: the exported ``.argilla/settings.json`` parses with the SDK's
``FieldModel`` / ``QuestionModel`` / ``MetadataFieldModel`` and ``dataset.json`` with its
``DatasetModel`` (the models ``Settings.from_json`` and ``Dataset.from_disk`` build from;
building the ``Settings`` objects themselves needs a server connection), and
``records.json`` loads with ``rg.Record.from_dict`` (what ``Dataset.from_disk`` uses). The
flattened exports are written by the SDK: ``rg.Record`` with ``rg.Response`` and
``rg.Suggestion`` through ``GenericIO.to_list(flatten=True)``, the function behind
``dataset.records.to_list(flatten=True)`` and ``to_datasets()``; ``to_datasets`` also casts
image fields and label questions, which this dataset has none of. No Argilla server runs.
"""

from __future__ import annotations

import json
import uuid

import argilla as rg
import pytest
from argilla._models import DatasetModel, FieldModel, MetadataFieldModel, QuestionModel
from argilla.records._io import GenericIO
from datasets import Dataset

from pipeline.annotation import export_annotation, import_human_file
from tests.annotation_helpers import quarantine, ranks_of
from tests.judge_helpers import write_round

USERS = [uuid.UUID(int=i) for i in range(1, 5)]


def _export(workdir):
    write_round(workdir, ["ok"] * 3, k=3)
    result = export_annotation(workdir, 0, fmt="argilla")
    root = workdir / "annotation" / f"annotation-{result.export_id}.argilla"
    return result, root


def test_the_export_is_what_argillas_sdk_reads(tmp_path):
    result, root = _export(tmp_path)
    settings = json.loads((root / ".argilla" / "settings.json").read_text())
    fields = [FieldModel(**f) for f in settings["fields"]]
    (question,) = [QuestionModel(**q) for q in settings["questions"]]
    metadata = [MetadataFieldModel(**m) for m in settings["metadata"]]
    assert [f.name for f in fields] == ["prompt", "candidate-1", "candidate-2", "candidate-3"]
    assert question.settings.type == "ranking"
    assert [o["value"] for o in question.settings.options] == [f.name for f in fields[1:]]
    assert [m.name for m in metadata] == ["group_id"] and settings["allow_extra_metadata"]
    assert DatasetModel(**json.loads((root / ".argilla" / "dataset.json").read_text())).name \
        == f"grpo-{result.export_id}"
    records = [rg.Record.from_dict(d) for d in json.loads((root / "records.json").read_text())]
    assert len(records) == 3
    r = records[0]
    assert r.id == r.metadata["group_id"] and len(r.metadata["candidate_ids"]) == 3
    assert set(r.fields.keys()) == {f.name for f in fields}


def _annotate(root) -> tuple[list[rg.Record], dict[str, dict[str, int]]]:
    """Users rank in the SDK's own form (options best first); returns the records and, per
    source, the rank each candidate should get."""
    records = [rg.Record.from_dict(d) for d in json.loads((root / "records.json").read_text())]
    expected: dict[str, dict[str, int]] = {}
    for n, rec in enumerate(records):
        ids = rec.metadata["candidate_ids"]
        options = [f"candidate-{p}" for p in range(1, len(ids) + 1)]
        # User 1 prefers the larger number, on every record: submitted.
        best_first = sorted(options, key=lambda o: -int(rec.fields[o]))
        rec.responses.add(rg.Response("ranking", best_first, user_id=USERS[0],
                                      status="submitted"))
        for pos, o in enumerate(best_first, 1):
            expected.setdefault(f"human:argilla-{USERS[0]}", {})[ids[int(o[10:]) - 1]] = pos
        # User 2 left a draft, user 3 discarded: neither counts.
        rec.responses.add(rg.Response("ranking", options, user_id=USERS[1], status="draft"))
        if n == 0:
            rec.responses.add(rg.Response("ranking", options[::-1], user_id=USERS[2],
                                          status="discarded"))
            rec.suggestions.add(rg.Suggestion("ranking", options[::-1], agent="rm:demo",
                                              score=0.7))
            expected["suggestion:rm:demo"] = {ids[len(ids) - p]: p for p in range(1, 4)}
        if n == 1:  # an option the question does not have
            rec.responses.add(rg.Response("ranking", ["candidate-9", *options[1:]],
                                          user_id=USERS[3], status="submitted"))
    return records, expected


@pytest.mark.parametrize("saved_as", ["to_list.json", "to_datasets.jsonl",
                                      "to_datasets.parquet"])
def test_argillas_flattened_export_imports(tmp_path, saved_as):
    _, root = _export(tmp_path)
    records, expected = _annotate(root)
    path = tmp_path / f"argilla-export-{saved_as}"
    if saved_as.startswith("to_list"):
        path.write_text(json.dumps(GenericIO.to_list(records, flatten=True), default=str))
    else:
        ds = Dataset.from_dict(GenericIO.to_dict(records, flatten=True))
        ds.to_json(path) if saved_as.endswith("jsonl") else ds.to_parquet(path)
    report = import_human_file(tmp_path, path)
    assert report.format == "argilla"
    # 3 submitted + 3 drafts + 1 discarded + 1 bad option + 1 suggestion
    assert report.rows_read == 9
    assert (report.accepted, report.quarantined) == (4, 1)
    assert report.skipped == {"draft": 3, "discarded": 1}
    assert report.reasons == {"unknown option 'candidate-9'": 1}
    for source, ranks in expected.items():
        assert ranks_of(tmp_path, source) == ranks
    assert json.loads(quarantine(tmp_path)["raw"][0])["source"] == f"human:argilla-{USERS[3]}"
    assert import_human_file(tmp_path, path).already_imported


def test_the_servers_ranking_form_keeps_ties(tmp_path):
    """Argilla's API stores a ranking as [{"value", "rank"}], where equal ranks are a tie."""
    _, root = _export(tmp_path)
    records = [rg.Record.from_dict(d) for d in json.loads((root / "records.json").read_text())]
    rec = records[0]
    ids = rec.metadata["candidate_ids"]
    tie = [{"value": "candidate-2", "rank": 1}, {"value": "candidate-3", "rank": 1},
           {"value": "candidate-1", "rank": 2}]
    rec.responses.add(rg.Response("ranking", tie, user_id=USERS[0], status="submitted"))
    path = tmp_path / "ties.json"
    path.write_text(json.dumps(GenericIO.to_list([rec], flatten=True), default=str))
    report = import_human_file(tmp_path, path)
    assert (report.accepted, report.quarantined) == (1, 0)
    assert ranks_of(tmp_path, f"human:argilla-{USERS[0]}") == {ids[1]: 1, ids[2]: 1, ids[0]: 2}
