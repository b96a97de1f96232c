"""The demo judge measured the way the pipeline uses it: served by vLLM's OpenAI-compatible
server (the embedded ``judge_endpoint``), asked through ``LLMJudge`` with the configured
constrained decoding, on the held-out groups its build saved.

The build's own figures come from transformers in float32; serving (``policy.dtype``,
vLLM's kernels and grammar backend) can pick other digits where two are nearly tied, so the served
figures are the ones that describe what the audit will see. They are added to the report
under ``served``.

    python -m pipeline.demo_judge_served WORKDIR [--config F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.config import Config, ConfigError, load_config
from pipeline.demo_judge import HELDOUT_FILE, REPORT_FILE, read_heldout
from pipeline.hardware import engine_dtype
from pipeline.judge_agreement import listwise_agreement
from pipeline.judging.groups import JudgeGroup


def heldout_groups(judge_dir: Path) -> tuple[list[JudgeGroup], list[list[float]]]:
    """The build's held-out groups as judges see them, with the verifier's gold scores."""
    examples = read_heldout(Path(judge_dir) / HELDOUT_FILE)
    groups = [JudgeGroup(0, g.group_id, g.group_id, g.messages, g.reference, {},
                         [f"{g.group_id}:{i}" for i in range(len(g.texts))], g.texts)
              for g in examples]
    return groups, [g.gold for g in examples]


def served_agreement(judge, groups: list[JudgeGroup], gold: list[list[float]]) -> dict:
    """Judge every group through ``judge`` (an ``LLMJudge``); agreement of views 0 and 1
    with the gold, and how many answers failed to parse."""
    gold_of = {g.group_id: s for g, s in zip(groups, gold, strict=True)}
    golds, view_scores, failed = [], [], 0
    for group, rows in judge.judge_groups(groups):
        views = {}
        for r in rows:
            if r["view"] in (0, 1):
                if r["status"] != "scored":
                    failed += 1
                views.setdefault(r["view"], {})[r["candidate_id"]] = r["value"]
        if any(v is None for view in views.values() for v in view.values()):
            continue
        view_scores.append([[views[v][c] for c in group.candidate_ids] for v in (0, 1)])
        golds.append(gold_of[group.group_id])
    return {"groups": len(golds), "failed_items": failed,
            **listwise_agreement(golds, view_scores)}


def measure_served(cfg: Config, judge_dir: Path, workdir: Path) -> dict:
    """Serve ``judge_dir`` through the embedded endpoint and measure it; the figures are
    written into the judge's report under ``served`` and returned."""
    from pipeline.judging.sources import connect_llm_judge, judge_endpoint

    report_path = Path(judge_dir) / REPORT_FILE
    if not report_path.is_file():
        raise ConfigError(f"no {REPORT_FILE} in {judge_dir}; run `grpo build-demo-model`")
    cfg = cfg.model_copy(update={"llm_judge": cfg.llm_judge.model_copy(
        update={"base_url": "embedded", "model": str(judge_dir)})})
    groups, gold = heldout_groups(judge_dir)
    started = time.perf_counter()
    with judge_endpoint(cfg, workdir) as (url, model):
        served = time.perf_counter()
        figures = served_agreement(connect_llm_judge(cfg, url, model), groups, gold)
    figures.update(structured=cfg.llm_judge.structured, dtype=engine_dtype(cfg.policy.dtype),
                   server_start_s=round(served - started, 1),
                   judging_s=round(time.perf_counter() - served, 1))
    report = json.loads(report_path.read_text())
    report["served"] = figures
    report_path.write_text(json.dumps(report, indent=2))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="the workdir `grpo build-demo-model` built into")
    parser.add_argument("--config", default=None, help="config file (default: the demo's)")
    args = parser.parse_args(argv)
    from pipeline.resolve import judge_model_dir

    try:
        cfg = load_config(args.config)
        judge_dir = judge_model_dir(cfg, Path(args.workdir))
        if judge_dir is None:
            raise ConfigError("llm_judge.base_url: not 'embedded'; nothing here to serve")
        figures = measure_served(cfg, judge_dir, Path(args.workdir))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
