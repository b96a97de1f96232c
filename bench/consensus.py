"""Benchmark: consensus + cycle detection at scale, and the audit queries on the result.

Synthetic round: G groups of k=8 with a hidden true utility per candidate; two reward models
score it with noise (``rm:a``, ``rm:b``), an LLM judge gives reconciled pairwise verdicts
with noise (``llm:j``), and in a fraction of groups the judge's verdicts hold a planted
3-cycle. Timed: the whole ranking stage from Parquet to Parquet (``rank_round``), then each
query in ``sql/`` on the catalog. Recall = planted cycles found / planted. The last line
printed is one JSON object.

    .venv/bin/python -m bench.consensus [--groups 1000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.audit import list_queries, run_query
from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.consensus.stage import rank_round
from pipeline.schema import CANDIDATES, JUDGMENTS, PROMPTS
from pipeline.store import round_dir

K = 8


def synthesize(workdir: Path, groups: int, cycle_rate: float, seed: int = 0,
               shard_groups: int = 100_000) -> np.ndarray:
    """Writes prompts, candidates and judgments; returns the groups with a planted cycle."""
    rng = np.random.default_rng(seed)
    rdir = round_dir(workdir, 0)
    gid = np.char.add("r000:p", np.char.zfill(np.arange(groups).astype(str), 7))
    prompt_ids = np.char.add("p", np.char.zfill(np.arange(groups).astype(str), 7))
    _write(PROMPTS, pl.DataFrame({
        "round": np.zeros(groups, np.int32), "prompt_id": prompt_ids, "split": "train",
        "task": "sort_digits", "prompt": "S 123=", "reference": "123"}),
        rdir / "prompts.parquet")
    planted = rng.random(groups) < cycle_rate
    iu, ju = np.triu_indices(K, 1)
    for lo in range(0, groups, shard_groups):
        hi = min(groups, lo + shard_groups)
        n = hi - lo
        g = np.repeat(gid[lo:hi], K)
        cid = np.char.add(np.char.add(g, ":"), np.tile(np.arange(K).astype(str), n))
        _write(CANDIDATES, pl.DataFrame({
            "round": np.zeros(n * K, np.int32), "group_id": g,
            "prompt_id": np.char.replace(g, "r000:", ""),
            "candidate_idx": np.tile(np.arange(K, dtype=np.int32), n), "candidate_id": cid,
            "text": "12", "token_ids": pl.Series([[1, 2]] * (n * K)), "policy": "m",
            "n_tokens": np.full(n * K, 2, np.int32), "finish_reason": "stop",
            "logprob": np.full(n * K, -1.0), "seed": np.zeros(n * K, np.int64),
            "config_hash": "bench", "injection": pl.Series([None] * (n * K), dtype=pl.Utf8)}),
            rdir / "candidates" / f"shard-{lo // shard_groups:05d}-bench.parquet")
        truth = rng.normal(size=(n, K))
        frames = []
        for source, noise in (("rm:a", 0.7), ("rm:b", 1.0)):
            frames.append(_rows(g, cid, source, "score", 0, None,
                                (truth + rng.normal(scale=noise, size=truth.shape)).ravel()))
        noisy = truth + rng.normal(scale=0.8, size=truth.shape)
        verdict = (noisy[:, iu] > noisy[:, ju]).astype(np.float64)  # [n, 28] i beats j
        for row in np.nonzero(planted[lo:hi])[0]:  # a > b, b > c, c > a on 3 random ones
            a, b, c = sorted(rng.choice(K, 3, replace=False))
            pair = {(i, j): p for p, (i, j) in enumerate(zip(iu, ju, strict=True))}
            verdict[row, pair[(a, b)]] = 1.0
            verdict[row, pair[(b, c)]] = 1.0
            verdict[row, pair[(a, c)]] = 0.0
        gp = np.repeat(gid[lo:hi], len(iu))
        first = np.char.add(np.char.add(gp, ":"), np.tile(iu.astype(str), n))
        second = np.char.add(np.char.add(gp, ":"), np.tile(ju.astype(str), n))
        frames.append(_rows(gp, first, "llm:j", "pairwise", -1, second, verdict.ravel()))
        _write(JUDGMENTS, pl.concat(frames),
               rdir / "judgments" / f"bench--{lo // shard_groups:05d}.parquet")
    return np.nonzero(planted)[0]


def _rows(g, cid, source, kind, view, opponent, values) -> pl.DataFrame:
    n = len(g)
    return pl.DataFrame({
        "round": np.zeros(n, np.int32), "group_id": g, "candidate_id": cid, "source": source,
        "kind": kind, "view": np.full(n, view, np.int32),
        "opponent_id": opponent if opponent is not None else pl.Series([None] * n, dtype=pl.Utf8),
        "value": values, "status": "scored", "error": pl.Series([None] * n, dtype=pl.Utf8),
        "raw": pl.Series([None] * n, dtype=pl.Utf8),
        "order_shown": pl.Series([None] * n, dtype=pl.Int32)})


def _write(spec, df: pl.DataFrame, path: Path) -> None:
    from pipeline.atomic import write_parquet_atomic

    write_parquet_atomic(df.to_arrow(), path, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-consensus")
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--cycle-rate", type=float, default=0.05)
    args = ap.parse_args()
    wd = Path(args.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    start = time.perf_counter()
    planted = synthesize(wd, args.groups, args.cycle_rate)
    synth_s = time.perf_counter() - start

    cfg = load_config(overrides={"rank.weights": ["rm:*=1", "llm:*=1"]}).rank
    start = time.perf_counter()
    summary = rank_round(wd, 0, cfg)
    rank_s = time.perf_counter() - start

    cycles = pl.read_parquet(round_dir(wd, 0) / "cycles" / "consensus.parquet")
    found = set(cycles.filter(pl.col("source") == "llm:j")["group_id"].to_list())
    planted_ids = {f"r000:p{g:07d}" for g in planted}
    recall = len(planted_ids & found) / max(1, len(planted_ids))
    unplanted_found = len(found - planted_ids)

    start = time.perf_counter()
    rebuild(wd)
    rebuild_s = time.perf_counter() - start
    queries = {}
    for q in list_queries():
        t = time.perf_counter()
        run_query(wd, q.name)
        queries[q.name] = round(time.perf_counter() - t, 2)
    print(json.dumps({
        "benchmark": "consensus", "groups": args.groups, "k": K, "sources": 3,
        "judgment_rows": args.groups * K * 2 + args.groups * 28,
        "synthesize_s": round(synth_s, 1), "rank_round_s": round(rank_s, 1),
        "groups_per_s": round(args.groups / rank_s),
        "statuses": summary.statuses, "planted_cycles": len(planted_ids),
        "planted_cycles_found": len(planted_ids & found), "cycle_recall": round(recall, 4),
        "judge_cycles_found_unplanted": unplanted_found,
        "catalog_rebuild_s": round(rebuild_s, 2), "audit_query_s": queries}))


if __name__ == "__main__":
    main()
