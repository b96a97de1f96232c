"""The evidence benchmark's quick mode runs the whole harness end to end (vLLM generation,
judging, training, gold evaluation, report, plots, one JSON line), every interval it prints is
well-formed, a second run resumes from its folder, and a folder of other settings is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.evidence_plan import QUICK, arms, questions, selection
from tests.conftest import seed_demo_workdir

ROOT = Path(__file__).resolve().parent.parent


def _evidence(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.evidence", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, demo_model_dir, demo_rm_dir, demo_judge_dir):
    out = tmp_path_factory.mktemp("evidence")
    # The session's demo policy, reward model and judge, where `grpo build-demo-model` would
    # put them: the harness builds only the ensemble's two extra reward models.
    seed_demo_workdir(out, demo_model_dir, demo_rm_dir, demo_judge_dir)
    started = time.perf_counter()
    done = _evidence("--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done.stdout.strip().splitlines(), time.perf_counter() - started


def _estimates(node):
    """Every {value, ci95, ...} estimate in the JSON record."""
    if isinstance(node, dict):
        if "ci95" in node:
            yield node
        else:
            for v in node.values():
                yield from _estimates(v)


@pytest.mark.slow
def test_quick_mode_runs_end_to_end_with_well_formed_intervals(quick_run):
    out, lines, _ = quick_run
    assert lines[0].startswith("date: ") and lines[1].startswith("machine: ")
    record = json.loads(lines[-1])
    assert record["benchmark"] == "evidence" and record["quick"] is True
    assert record["settings"]["seeds"] == 2 and record["settings"]["heldout"] >= 8
    # Every arm was trained and evaluated, the LLM-judge arm too (a trained demo judge is
    # in the folder, served through the normal judging path).
    assert record["llm_judge_arm"] is True
    expected = {a.name for a in arms(True)}
    assert set(record["arms"]) == expected and "rm-llm" in expected
    for q in questions(record["llm_judge_arm"]):
        assert set(record["comparisons"][q.key]) == {c.label for c in q.comparisons}
    found = list(_estimates(record))
    assert len(found) > 100
    values = [e for e in found if e["value"] is not None]
    # hack_own is undefined for annotator-only arms (no machine signal): those are null.
    assert len(found) - len(values) <= 8
    for e in values:
        lo, hi = e["ci95"]
        assert lo <= e["value"] <= hi and e["se"] >= 0 and e["mde80"] >= 0
        assert e["se"] == 0 or 0.0 <= e["seed_share"] <= 1.0  # no spread: no shares
    for name, arm in record["arms"].items():
        assert 0.0 <= arm["win"]["value"] <= 1.0 and 0.0 <= arm["hack_proxy"]["value"] <= 1.0, name
    assert 0.0 < record["base_gold"]["value"] <= 1.0
    # The harness's metrics agree with trainers.evaluate on the same samples.
    assert record["self_check_agrees"] is True
    # The report: the answers, the design, one section and one plot per question.
    report = Path(record["report"]).read_text()
    assert Path(record["report"]).parent == out
    for heading in ("## Answers", "## Design", "## Self-check", "## Time"):
        assert heading in report
    for q in questions(record["llm_judge_arm"]):
        assert f"## {q.key.upper()}. {q.title}" in report
        png = out / f"{q.key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "Quick mode" in report and "includes 0" in report


@pytest.mark.slow
def test_a_second_run_resumes_from_its_folder(quick_run):
    out, lines, first_seconds = quick_run
    started = time.perf_counter()
    again = _evidence("--quick", "--out", str(out))
    seconds = time.perf_counter() - started
    assert again.returncode == 0, again.stderr[-4000:]
    first, second = json.loads(lines[-1]), json.loads(again.stdout.strip().splitlines()[-1])
    assert second["arms"] == first["arms"] and second["comparisons"] == first["comparisons"]
    assert seconds < first_seconds / 2  # nothing is generated, trained or sampled again


@pytest.mark.slow
def test_a_folder_of_other_settings_is_refused_in_one_line(quick_run):
    out, _, _ = quick_run
    done = _evidence("--quick", "--seeds", "3", "--out", str(out), timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"evidence: {out} holds a run with other settings ({out / 'settings.json'}); pass "
        "another --out or delete it"]


def test_bad_sizes_are_refused_in_one_line():
    done = _evidence("--quick", "--n", "10", timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "evidence: --n must be a multiple of 4, at least 8 (N/4 prompts are one of the arms)"]


def test_the_script_form_runs_this_checkout():
    done = subprocess.run([sys.executable, "bench/evidence.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--quick" in done.stdout


def test_a_question_selection_trains_only_what_it_compares():
    q5, q5_arms, q5_views = selection(["q5"], QUICK, True)
    assert [q.key for q in q5] == ["q5"]
    assert {a.name for a in q5_arms} == {"pl-k4", "ensemble", "rm-llm"}
    assert [v.name for v in q5_views] == ["k4"]
    _, q4_arms, q4_views = selection(["q4"], QUICK, False)
    assert {a.name for a in q4_arms} == {"pl-k4", "offline-3n", "iter-r1", "iter-r2", "iter-r3"}
    assert {v.name for v in q4_views} == {"k4", "k4-3n", "iter"}
    every, all_arms, _ = selection(None, QUICK, True)
    assert [q.key for q in every] == [q.key for q in questions(True)]
    assert {a.name for a in all_arms} == {a.name for a in arms(True)}


def test_an_unknown_question_is_refused_in_one_line_before_any_work(tmp_path):
    done = _evidence("--quick", "--questions", "q5,q9", "--out", str(tmp_path / "e"),
                     timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "evidence: unknown question(s) q9; choose from q1, q2, q3, q4, q5"]
    assert not (tmp_path / "e").exists()
