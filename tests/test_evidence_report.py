"""The evidence report from known estimates: one section and one plot per question, every
answer with its interval, 'includes 0' exactly where the interval includes zero, and a plain
sentence when the LLM-judge arm was skipped."""

from __future__ import annotations

import re

import numpy as np

from bench._common import machine
from bench.evidence import Timer
from bench.evidence_plan import QUICK, arms, questions
from bench.evidence_report import write_report
from bench.evidence_stats import Intervals


def _ctx(tmp_path, llm: bool):
    rng = np.random.default_rng(0)
    seeds, prompts = 3, 64
    boot = Intervals(prompts, 200)
    all_arms = {a.name: a for a in arms(llm)}
    # Known truths: pl-k8 is clearly better than pl-k4 (+0.1), everything else is noise.
    shift = {name: 0.1 if name == "pl-k8" else 0.0 for name in all_arms}
    per = {name: {m: (0.5 if m == "win" else 0.3) + shift[name]
                  + 0.02 * rng.standard_normal((seeds, prompts))
                  for m in ("gold", "win", "hack_proxy", "hack_own")} for name in all_arms}
    est = {n: {m: boot.estimate(v) for m, v in d.items()} for n, d in per.items()}
    qs = questions(llm)
    cmp_est = {q.key: {c.label: {m: boot.estimate(per[c.a][m] - per[c.b][m])
                                 for m in ("gold", "win", "hack_proxy", "hack_own")}
                       for c in q.comparisons} for q in qs}
    timer = Timer()
    timer.phases["everything"] = 1.0
    annotation = {s: {k: {"groups": 4, "gold_pair_agreement": 0.8} for k in
                      ("r10", "r50", "d10", "all")} for s in range(seeds)}
    notes = [] if llm else ["Q5's arm 'reward model + LLM judge' was not run: no judge."]
    return {"settings": QUICK, "machine": machine(("torch",)), "timer": timer, "notes": notes,
            "arms": all_arms, "questions": qs, "est": est,
            "base_est": {"gold": boot.estimate(per["pl-k4"]["gold"]),
                         "hack_proxy": boot.estimate(per["pl-k4"]["hack_proxy"])},
            "cmp_est": cmp_est, "per": per, "sd_diff": 0.13, "n_heldout": prompts,
            "annotation": annotation, "models": {}, "llm_judge": "judge" if llm else None,
            "check": {"evaluate_round": {"gold_score": 0.5}, "harness": {"gold": 0.5},
                      "max_abs_diff": 0.0, "agree": True}, "out": tmp_path}


def test_report_sections_plots_and_verdicts(tmp_path):
    ctx = _ctx(tmp_path, llm=False)
    text = write_report(ctx).read_text()
    for q in ctx["questions"]:
        assert f"## {q.key.upper()}. {q.title}" in text
        assert (tmp_path / f"{q.key}.png").read_bytes()[:4] == b"\x89PNG"
    answers = text.split("## Answers")[1].split("## Design")[0]
    lines = [ln for ln in answers.splitlines() if ln.startswith("- **Q")]
    assert len(lines) == sum(len(q.comparisons) for q in ctx["questions"])
    for line in lines:
        lo, hi = map(float, re.search(r"gold [+-][\d.]+ \[([+-][\d.]+), ([+-][\d.]+)\]",
                                      line).groups())
        gold_verdict = line.split("; ")[1]
        assert gold_verdict.startswith("includes 0") == (lo <= 0 <= hi), line
    k8 = next(ln for ln in lines if "PL k=8 - PL k=4" in ln)
    assert "excludes 0: PL k=8 better than PL k=4" in k8
    assert "Δ hack (demo RM)" in k8  # Q1 states the hack-rate answer too
    assert "'reward model + LLM judge' was not run" in text.split("## Q5.")[1]


def test_report_with_the_llm_judge_arm(tmp_path):
    text = write_report(_ctx(tmp_path, llm=True)).read_text()
    assert "reward model + LLM judge" in text.split("## Q5.")[1]
    assert "was not run" not in text
