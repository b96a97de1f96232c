"""Label Studio: the exported config and tasks go into a real Label Studio (the project's
own .venv-label-studio, SQLite, 127.0.0.1), people annotate through its REST API, and its
JSON export comes back into the store with every rank on the right candidate. The quick
tests read export files shaped exactly like the ones that server writes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from pipeline.annotation import export_annotation, import_human_file
from pipeline.annotation.label_studio import labeling_config
from tests.annotation_helpers import human_judgments, quarantine, ranks_of
from tests.judge_helpers import write_round
from tests.label_studio_server import LabelStudio


def test_labeling_configs():
    ranker = ET.fromstring(labeling_config(4))
    assert [b.get("name") for b in ranker.iter("Bucket")] == [f"rank-{r}" for r in range(1, 5)]
    assert ranker.find("Ranker").get("toName") == ranker.find("List").get("name")
    pairwise = ET.fromstring(labeling_config(2))
    assert pairwise.find("Pairwise").get("toName") == "left,right"
    assert pairwise.find("Ranker") is None


def _ann(aid, user, result, cancelled=False):
    """An annotation as Label Studio 1.23.2 exports it (fields seen in its JSON export)."""
    return {"id": aid, "completed_by": user, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "lead_time": None, "prediction": {}, "result_count": 1,
            "task": 1, "project": 1, "updated_by": user, "parent_prediction": None}


def _ranker(buckets):
    return [{"from_name": "rank", "to_name": "candidates", "type": "ranker",
             "value": {"ranker": buckets}}]


def test_label_studio_export_file(tmp_path):
    write_round(tmp_path, ["ok"] * 3, k=3)
    export = export_annotation(tmp_path, 0, fmt="label-studio")
    tasks = json.loads(open(export.files[0]).read())
    by_group = {t["data"]["group_id"]: t for t in tasks}
    a, b, c = (f"r000:p000:{i}" for i in range(3))
    by_group["r000:p000"]["annotations"] = [
        _ann(1, 1, _ranker({"rank-1": [b], "rank-2": [a, c], "rank-3": []})),  # a tie
        _ann(2, 2, _ranker({"rank-1": [c], "_": [a, b]})),  # ranks one, leaves two
        _ann(3, 3, [], cancelled=True),
        _ann(4, 4, _ranker({"rank-1": ["r000:p001:0"], "rank-2": [a]})),  # another group's
        _ann(5, 5, _ranker({"best": [a, b, c]})),
        _ann(6, 6, _ranker({"rank-1": [a], "rank-2": [a, b]})),
        _ann(7, 7, _ranker("x")),
        _ann(8, 8, []),
        _ann(9, 1, _ranker({"rank-1": [a], "rank-2": [b, c]})),  # user 1 again, differently
    ]
    by_group["r000:p001"]["annotations"] = []
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    report = import_human_file(tmp_path, path)
    assert report.format == "label-studio"
    assert (report.rows_read, report.accepted, report.quarantined) == (9, 1, 7)
    assert report.skipped == {"cancelled": 1}
    assert report.reasons == {"unknown candidate_id for this group": 1,
                              "unknown bucket 'best'": 1, "an item in two buckets": 1,
                              "malformed ranker value": 1, "no ranking in the result": 1,
                              "conflicting rows from one annotator": 2}
    assert ranks_of(tmp_path, "human:label-studio-2") == {c: 1}
    assert set(quarantine(tmp_path)["row_number"]) == {1, 4, 5, 6, 7, 8, 9}


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    server = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def _project(ls, export) -> tuple[int, dict[str, dict]]:
    tasks_file, config_file = export.files
    project = ls.api("POST", "/api/projects", json={
        "title": f"grpo {export.export_id}", "label_config": open(config_file).read()})
    ls.api("POST", f"/api/projects/{project['id']}/import",
           json=json.loads(open(tasks_file).read()))
    tasks = ls.api("GET", "/api/tasks", params={"project": project["id"], "page_size": 100})
    return project["id"], {t["data"]["group_id"]: t for t in tasks["tasks"]}


def _export_file(ls, project_id, path):
    response = ls.client.get(f"/api/projects/{project_id}/export",
                             params={"exportType": "JSON"})
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def _submit(ls, task, result, cancelled=False):
    ls.api("POST", f"/api/tasks/{task['id']}/annotations",
           json={"result": result, "was_cancelled": cancelled})


@pytest.mark.slow
def test_label_studio_round_trip(tmp_path, label_studio):
    ls = label_studio
    write_round(tmp_path, ["ok"] * 5, k=3)
    export = export_annotation(tmp_path, 0, fmt="label-studio")
    project_id, tasks = _project(ls, export)
    assert sorted(tasks) == [f"r000:p{g:03d}" for g in range(5)]
    me = ls.api("GET", "/api/current-user/whoami")["id"]
    other = ls.as_user(ls.sign_up("second.annotator@example.com", "grpo-Annotator-2"))
    other_id = other.api("GET", "/api/current-user/whoami")["id"]

    def best_first(task):  # what both annotators see, and the one's taste: larger numbers
        items = task["data"]["candidates"]
        return [i["id"] for i in sorted(items, key=lambda i: -int(i["body"]))]

    g = [tasks[f"r000:p{n:03d}"] for n in range(5)]
    top, mid, low = best_first(g[0])
    _submit(ls, g[0], _ranker({"rank-1": [top], "rank-2": [mid, low], "rank-3": []}))  # a tie
    _submit(ls, g[1], _ranker({f"rank-{r}": [cid] for r, cid in
                               enumerate(best_first(g[1]), 1)}))
    _submit(other, g[1], _ranker({f"rank-{r}": [cid] for r, cid in
                                  enumerate(best_first(g[1])[::-1], 1)}))  # disagrees
    _submit(ls, g[2], [], cancelled=True)
    _submit(other, g[3], _ranker({"rank-1": [g[4]["data"]["candidates"][0]["id"]],
                                  "rank-2": [best_first(g[3])[0]]}))  # an id of another group
    _submit(other, g[4], _ranker("not a ranking"))

    path = _export_file(ls, project_id, tmp_path / "label-studio-export.json")
    report = import_human_file(tmp_path, path)
    assert report.format == "label-studio"
    assert (report.rows_read, report.accepted, report.quarantined) == (6, 3, 2)
    assert report.skipped == {"cancelled": 1}
    assert report.reasons == {"unknown candidate_id for this group": 1,
                              "malformed ranker value": 1}

    # Ranks land on the candidates whose texts were ranked, read back from the store.
    text = dict(zip(*_candidates(tmp_path), strict=True))
    mine, theirs = f"human:label-studio-{me}", f"human:label-studio-{other_id}"
    assert ranks_of(tmp_path, mine) == {
        top: 1, mid: 2, low: 2,
        **{cid: r for r, cid in enumerate(_by_text(text, "r000:p001"), 1)}}
    assert ranks_of(tmp_path, theirs) == {
        cid: r for r, cid in enumerate(_by_text(text, "r000:p001")[::-1], 1)}
    assert top == _by_text(text, "r000:p000")[0]
    n = human_judgments(tmp_path).height
    assert import_human_file(tmp_path, path).already_imported
    assert human_judgments(tmp_path).height == n == 9


def _candidates(workdir):
    import polars as pl

    from pipeline.store import table_files
    c = pl.read_parquet(table_files(workdir, "candidates"))
    return c["candidate_id"].to_list(), c["text"].to_list()


def _by_text(text: dict[str, str], group: str) -> list[str]:
    ids = [cid for cid in text if cid.startswith(group + ":")]
    return sorted(ids, key=lambda cid: -int(text[cid]))


@pytest.mark.slow
def test_label_studio_pairwise_when_k_is_two(tmp_path, label_studio):
    ls = label_studio
    write_round(tmp_path, ["ok"] * 2, k=2)
    export = export_annotation(tmp_path, 0, fmt="label-studio")
    assert "<Pairwise" in open(export.files[1]).read()
    project_id, tasks = _project(ls, export)
    for task in tasks.values():  # the right-hand answer wins
        _submit(ls, task, [{"from_name": "choice", "to_name": "left,right",
                            "type": "pairwise", "value": {"selected": "right"}}])
    report = import_human_file(tmp_path, _export_file(ls, project_id, tmp_path / "pw.json"))
    assert (report.accepted, report.quarantined) == (2, 0)
    j = human_judgments(tmp_path)
    for gid, task in tasks.items():
        left, right = task["data"]["left_id"], task["data"]["right_id"]
        row = j.filter(j["group_id"] == gid).row(0, named=True)
        winner = row["candidate_id"] if row["value"] == 1.0 else row["opponent_id"]
        assert row["kind"] == "pairwise" and winner == right and left != right


def test_a_ranker_without_buckets_and_the_tasks_file_by_mistake(tmp_path):
    write_round(tmp_path, ["ok"], k=3)
    export = export_annotation(tmp_path, 0, fmt="label-studio")
    with pytest.raises(ValueError, match="not the tasks file"):
        import_human_file(tmp_path, export.files[0])
    tasks = json.loads(open(export.files[0]).read())
    order = [c["id"] for c in tasks[0]["data"]["candidates"]][::-1]
    tasks[0]["annotations"] = [_ann(1, 1, _ranker({"candidates": order}))]
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(tasks))
    assert import_human_file(tmp_path, path).accepted == 1
    assert ranks_of(tmp_path, "human:label-studio-1") == {c: r for r, c in enumerate(order, 1)}
