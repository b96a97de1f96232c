"""Benchmark: LLM judging against one local endpoint (the embedded vLLM server), k=8.

(1) listwise vs pairwise: requests, tokens and wall time per group, same groups, same
    server, concurrency N; (2) listwise at concurrency 1 vs N: groups per second.
Groups are the demo policy's own samples (k=8). The last line printed is one JSON object.

    .venv/bin/python -m bench.judging [--groups 16] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import load_config
from pipeline.judging.groups import read_shard_groups
from pipeline.judging.llm import JudgeClient, LLMJudge, RequestBudget
from pipeline.judging.server import vllm_server
from pipeline.judging.stage import candidate_shards


def run(url: str, groups, mode: str, concurrency: int) -> dict:
    cfg = load_config(overrides={"llm_judge.mode": mode,
                                 "llm_judge.concurrency": concurrency}).llm_judge
    client = JudgeClient(cfg, url, "embedded-judge", RequestBudget(10**9))
    judge = LLMJudge(cfg, client)
    start = time.perf_counter()
    rows = [r for _, rs in judge.judge_groups(groups) for r in rs]
    seconds = time.perf_counter() - start
    n = len(groups)
    return {"mode": mode, "concurrency": concurrency, "groups": n,
            "requests_per_group": client.budget.used / n,
            "prompt_tokens_per_group": round(client.prompt_tokens / n, 1),
            "completion_tokens_per_group": round(client.completion_tokens / n, 1),
            "seconds_per_group": round(seconds / n, 4), "groups_per_s": round(n / seconds, 2),
            "failed_items": sum(r["status"] == "failed" for r in rows if r["view"] >= 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-judging")
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    wd = Path(args.workdir)
    if not candidate_shards(wd, 0):
        for cmd in (["build-demo-model"], ["generate", "--set", "prompts.n_train_per_round=64"]):
            subprocess.run([sys.executable, "-m", "flows.cli", *cmd, "--workdir", str(wd)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    groups = [g for s in candidate_shards(wd, 0) for g in read_shard_groups(wd, 0, s)]
    groups = groups[: args.groups]
    with vllm_server(wd / "models" / "demo-policy", "embedded-judge",
                     log_path=wd / "bench-server.log") as url:
        run(url, groups[:2], "listwise", 2)  # warm-up
        listwise = run(url, groups, "listwise", args.concurrency)
        pairwise = run(url, groups, "pairwise", args.concurrency)
        serial = run(url, groups, "listwise", 1)
    print(json.dumps({
        "benchmark": "judging", "k": groups[0].k, "groups": len(groups),
        "listwise": listwise, "pairwise": pairwise, "listwise_serial": serial,
        "pairwise_over_listwise_requests": round(pairwise["requests_per_group"]
                                                 / listwise["requests_per_group"], 1),
        "pairwise_over_listwise_time": round(pairwise["seconds_per_group"]
                                             / listwise["seconds_per_group"], 1),
        "concurrency_speedup": round(listwise["groups_per_s"] / serial["groups_per_s"], 2),
    }))


if __name__ == "__main__":
    main()
