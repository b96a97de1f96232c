"""Benchmark: the ranking stage at two sizes (speed and peak memory), then the audit queries.

Synthetic round laid out as the pipeline writes one: G groups of k=8 in candidates shards,
one judgments file per (source, shard). Each candidate has a hidden true utility; two reward
models score it with noise (``rm:a``, ``rm:b``), an LLM judge gives reconciled pairwise
verdicts with noise (``llm:j``), and in a fraction of groups the judge's verdicts hold a
planted 3-cycle (recall = planted cycles found / planted).

Measured in one run: the whole ranking stage from Parquet to Parquet (``rank_round``) at
each size, every repetition in a fresh process so that its peak RSS is its own, sizes
interleaved within each repetition; then each query in ``sql/`` on the catalog of the first
size, queries interleaved. Figures are medians with the range of the repetitions; the last
line printed is one JSON object. Synthesized data is kept under ``--workdir`` and reused
while its parameters and the schema are unchanged (``--fresh`` rebuilds it).

    python -m bench.consensus [--groups 1000000,4000000] [--reps 3]
    python bench/consensus.py --quick    # the whole benchmark on tiny settings, in seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/consensus.py`: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench._common import emit_json, fmt, machine, print_machine, run_isolated, spread  # noqa: E402
from pipeline.atomic import parquet_writer_atomic, write_parquet_atomic  # noqa: E402
from pipeline.audit import list_queries, run_query  # noqa: E402
from pipeline.catalog import rebuild  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.consensus.stage import rank_round  # noqa: E402
from pipeline.judging.stage import judgment_path  # noqa: E402
from pipeline.schema import CANDIDATES, JUDGMENTS, PROMPTS, Table, describe  # noqa: E402
from pipeline.store import prompts_path, round_dir, shard_path  # noqa: E402

K = 8
SOURCES = 3
PAIRS = K * (K - 1) // 2
RANK_WEIGHTS = ["rm:*=1", "llm:*=1"]
GOAL_GROUPS_PER_S = 30_000
GOAL_RSS_RATIO = 1.2
GOAL_QUERY_S = 5.0
# What the fork server imports once for every ranking job (not this module itself: a child
# re-imports the main module by name, and runpy warns if it is already there).
RANK_MODULES = ("pipeline.consensus.stage", "pipeline.config", "polars", "pyarrow.dataset")
DATA_VERSION = 1  # bump when ``synthesize`` changes what it writes: reused data is then rebuilt
QUICK = {"groups": [300, 1200], "shard_groups": 100, "chunk_groups": 250}


def synthesize(workdir: Path, groups: int, cycle_rate: float, seed: int = 0,
               shard_groups: int = 50_000) -> np.ndarray:
    """Writes prompts, candidates and judgments; returns the groups with a planted cycle."""
    rng = np.random.default_rng(seed)
    planted = rng.random(groups) < cycle_rate
    iu, ju = np.triu_indices(K, 1)
    pair_index = np.full((K, K), -1)
    pair_index[iu, ju] = np.arange(PAIRS)
    with parquet_writer_atomic(prompts_path(workdir, 0), PROMPTS) as write_prompts:
        for shard, lo in enumerate(range(0, groups, shard_groups)):
            hi = min(groups, lo + shard_groups)
            n = hi - lo
            prompt_ids = pl.Series(np.arange(lo, hi)).cast(pl.String).str.zfill(7)
            prompt_ids = ("p" + prompt_ids).alias("prompt_id")
            write_prompts(_table(PROMPTS, n, round=0, prompt_id=prompt_ids, split="train",
                                 prompt="S 123=", reference="123"))
            gid = "r000:" + prompt_ids
            per_cand = gid.gather(np.repeat(np.arange(n), K))
            idx = np.tile(np.arange(K, dtype=np.int32), n)
            cid = per_cand + ":" + pl.Series(idx).cast(pl.String)
            cand_path = shard_path(workdir, "candidates", 0, shard, "bench")
            write_parquet_atomic(_table(
                CANDIDATES, n * K, round=0, group_id=per_cand,
                prompt_id=prompt_ids.gather(np.repeat(np.arange(n), K)), candidate_idx=idx,
                candidate_id=cid, text="12", token_ids=[1, 2], policy="m", n_tokens=2,
                finish_reason="stop", logprob=-1.0, seed=0, config_hash="bench"),
                cand_path, CANDIDATES)

            truth = rng.normal(size=(n, K))
            for source, noise in (("rm:a", 0.7), ("rm:b", 1.0)):
                values = (truth + rng.normal(scale=noise, size=truth.shape)).ravel()
                _write_judgments(workdir, source, cand_path, _table(
                    JUDGMENTS, n * K, round=0, group_id=per_cand, candidate_id=cid,
                    source=source, kind="score", view=0, value=values, status="scored"))
            noisy = truth + rng.normal(scale=0.8, size=truth.shape)
            verdict = (noisy[:, iu] > noisy[:, ju]).astype(np.float64)  # [n, 28] i beats j
            rows = np.nonzero(planted[lo:hi])[0]  # a > b, b > c, c > a on 3 random ones
            a, b, c = np.sort(rng.random((len(rows), K)).argsort(1)[:, :3], axis=1).T
            verdict[rows, pair_index[a, b]] = 1.0
            verdict[rows, pair_index[b, c]] = 1.0
            verdict[rows, pair_index[a, c]] = 0.0
            per_pair = gid.gather(np.repeat(np.arange(n), PAIRS))
            first = per_pair + ":" + pl.Series(np.tile(iu, n)).cast(pl.String)
            second = per_pair + ":" + pl.Series(np.tile(ju, n)).cast(pl.String)
            _write_judgments(workdir, "llm:j", cand_path, _table(
                JUDGMENTS, n * PAIRS, round=0, group_id=per_pair, candidate_id=first,
                opponent_id=second, source="llm:j", kind="pairwise", view=-1,
                value=verdict.ravel(), status="scored"))
    return np.nonzero(planted)[0]


def _write_judgments(workdir: Path, source: str, shard: Path, table: pa.Table) -> None:
    write_parquet_atomic(table, judgment_path(workdir, 0, source, shard), JUDGMENTS)


def _table(spec: Table, n: int, **values) -> pa.Table:
    """``n`` rows of ``spec``: the given columns (a scalar is repeated), every other column
    null where it may be and a zero value of its type where not. Built from the schema, so a
    column added to it does not break the benchmark."""
    cols = {}
    for field in spec.arrow_schema:
        value = values.get(field.name)
        if value is None:
            cols[field.name] = pa.nulls(n, field.type) if field.nullable else _zeros(field, n)
        elif isinstance(value, pl.Series):
            cols[field.name] = value.to_arrow().cast(field.type)
        elif isinstance(value, np.ndarray):
            cols[field.name] = pa.array(value).cast(field.type)
        else:
            cols[field.name] = pa.repeat(pa.scalar(value, field.type), n)
    return pa.table(cols, schema=spec.arrow_schema)


def _zeros(field: pa.Field, n: int) -> pa.Array:
    if pa.types.is_string(field.type):
        return pa.repeat(pa.scalar("", field.type), n)
    if pa.types.is_list(field.type):
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                        pa.array([], field.type.value_type))
    return pa.repeat(pa.scalar(0, field.type), n)


def prepare(workdir: Path, groups: int, cycle_rate: float, shard_groups: int,
            fresh: bool) -> tuple[np.ndarray, float | None]:
    """Synthesize the round unless the same data is already there; returns the planted
    groups and the synthesis time (None when reused)."""
    params = {"groups": groups, "cycle_rate": cycle_rate, "shard_groups": shard_groups,
              "k": K, "schema": hashlib.sha256(describe().encode()).hexdigest()[:16],
              "data_version": DATA_VERSION}
    marker = workdir / "bench-data.json"
    planted_path = workdir / "planted.npy"
    if not fresh and marker.exists() and planted_path.exists() and \
            json.loads(marker.read_text()) == params:
        return np.load(planted_path), None
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    planted = synthesize(workdir, groups, cycle_rate, shard_groups=shard_groups)
    seconds = time.perf_counter() - start
    np.save(planted_path, planted)
    marker.write_text(json.dumps(params))
    return planted, seconds


def _rank_job(workdir: str, overrides: dict) -> dict:
    """One repetition of the ranking stage (run in a fresh process by ``run_isolated``)."""
    cfg = load_config(overrides=overrides).rank
    start = time.perf_counter()
    summary = rank_round(Path(workdir), 0, cfg)
    return {"seconds": time.perf_counter() - start, "statuses": summary.statuses}


def cycle_recall(workdir: Path, planted: np.ndarray) -> dict:
    cycles = pl.read_parquet(round_dir(workdir, 0) / "cycles" / "consensus.parquet")
    found = set(cycles.filter(pl.col("source") == "llm:j")["group_id"].to_list())
    planted_ids = {f"r000:p{g:07d}" for g in planted.tolist()}
    hits = len(planted_ids & found)
    return {"planted_cycles": len(planted_ids), "planted_cycles_found": hits,
            "cycle_recall": round(hits / max(1, len(planted_ids)), 4),
            "judge_cycles_found_unplanted": len(found - planted_ids)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--workdir", default="runs/bench-consensus",
                    help="where the synthesized rounds live (one folder per size)")
    ap.add_argument("--groups", default="1000000,4000000",
                    help="comma-separated sizes; the audit runs on the first")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (at least 3)")
    ap.add_argument("--cycle-rate", type=float, default=0.05)
    ap.add_argument("--shard-groups", type=int, default=50_000, help="groups per shard")
    ap.add_argument("--fresh", action="store_true", help="synthesize again even if present")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes in a temporary folder: checks the benchmark end to end")
    args = ap.parse_args(argv)
    if args.reps < 3:
        ap.error("--reps: at least 3 repetitions, so that a median and a spread mean something")
    sizes = QUICK["groups"] if args.quick else [int(g) for g in args.groups.split(",")]
    shard_groups = QUICK["shard_groups"] if args.quick else args.shard_groups
    overrides = {"rank.weights": RANK_WEIGHTS}
    if args.quick:  # several batches and chunks even at this size
        overrides["rank.chunk_groups"] = QUICK["chunk_groups"]
    root = Path(tempfile.mkdtemp(prefix="bench-consensus-")) if args.quick else Path(
        args.workdir)

    info = machine(("torch", "polars", "pyarrow", "duckdb"))
    print("bench/consensus.py: ranking stage and audit queries" + (" (quick)" if args.quick
                                                                   else ""))
    print_machine(info)
    try:
        result = _run(root, sizes, shard_groups, overrides, args)
    finally:
        if args.quick:
            shutil.rmtree(root, ignore_errors=True)
    load_end = round(os.getloadavg()[0], 2)  # other work on the machine shows here
    print(f"load average at the end: {load_end}")
    emit_json({"benchmark": "consensus", "quick": args.quick, "machine": info,
               "load_average_1min_end": load_end, **result})
    return 0


def _run(root: Path, sizes: list[int], shard_groups: int, overrides: dict,
         args: argparse.Namespace) -> dict:
    workdirs = {g: root / f"g{g}" for g in sizes}
    planted = {}
    per_size: dict[int, dict] = {}
    for g in sizes:
        planted[g], synth_s = prepare(workdirs[g], g, args.cycle_rate, shard_groups, args.fresh)
        per_size[g] = {"groups": g, "judgment_rows": g * K * 2 + g * PAIRS,
                       "synthesize_s": None if synth_s is None else round(synth_s, 1)}
        print(f"data, {g:,} groups: " + ("reused" if synth_s is None else
                                          f"synthesized in {synth_s:.1f} s"))

    runs: dict[int, list[dict]] = {g: [] for g in sizes}
    for _ in range(args.reps):  # interleaved: each repetition ranks every size once
        for g in sizes:
            runs[g].append(run_isolated(_rank_job, str(workdirs[g]), overrides,
                                        preload=RANK_MODULES))
    print(f"\nranking stage (rank_round, Parquet to Parquet), k={K}, {SOURCES} sources, "
          f"{args.reps} repetitions, each in a fresh process:")
    for g in sizes:
        seconds = [r["seconds"] for r in runs[g]]
        rate = spread([g / s for s in seconds])
        rss = spread([r["peak_rss_mib"] for r in runs[g]])
        per_size[g].update({"rank_s": spread(seconds), "groups_per_s": rate,
                            "peak_rss_mib": rss, "statuses": runs[g][0]["statuses"],
                            **cycle_recall(workdirs[g], planted[g])})
        s = per_size[g]
        print(f"  {g:>10,} groups ({s['judgment_rows']:,} judgment rows): "
              f"{fmt(spread(seconds), 1, 's')}, {fmt(rate, 0, 'groups/s')}, "
              f"peak RSS {fmt(rss, 0, 'MiB')}")
        print(f"  {'':>10} planted cycles found {s['planted_cycles_found']:,} of "
              f"{s['planted_cycles']:,} (recall {s['cycle_recall']}), judge cycles where none "
              f"was planted: {s['judge_cycles_found_unplanted']:,}; statuses {s['statuses']}")
    out = {"k": K, "sources": SOURCES, "reps": args.reps, "sizes": list(per_size.values())}
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        ratio = spread([b["peak_rss_mib"] / a["peak_rss_mib"]
                        for a, b in zip(runs[small], runs[large], strict=True)])
        slowest = min(per_size[g]["groups_per_s"]["median"] for g in sizes)
        out["peak_rss_ratio"] = ratio
        met = ratio["median"] <= GOAL_RSS_RATIO
        print(f"  peak RSS at {large:,} / at {small:,} groups: {fmt(ratio, 2)} "
              f"(goal <= {GOAL_RSS_RATIO}: {'met' if met else 'NOT met'})")
        print(f"  slowest size: {slowest:,.0f} groups/s (goal >= {GOAL_GROUPS_PER_S:,}: "
              f"{'met' if slowest >= GOAL_GROUPS_PER_S else 'NOT met'})")
    out["audit"] = _audit(workdirs[sizes[0]], sizes[0], args.reps)
    return out


def _audit(workdir: Path, groups: int, reps: int) -> dict:
    start = time.perf_counter()
    rebuild(workdir)
    rebuild_s = time.perf_counter() - start
    queries = list_queries()
    times: dict[str, list[float]] = {q.name: [] for q in queries}
    for _ in range(reps):  # interleaved: each repetition runs every query once
        for q in queries:
            t = time.perf_counter()
            run_query(workdir, q.name)
            times[q.name].append(time.perf_counter() - t)
    stats = {name: spread(t) for name, t in times.items()}
    slowest = max(stats, key=lambda n: stats[n]["median"])
    print(f"\naudit queries on the {groups:,}-group catalog (rebuilt in {rebuild_s:.2f} s), "
          f"{reps} repetitions:")
    for name, st in sorted(stats.items(), key=lambda kv: -kv[1]["median"]):
        print(f"  {name:<28} {fmt(st, 2, 's')}")
    worst = stats[slowest]["median"]
    print(f"  slowest: {slowest}, {worst:.2f} s (goal < {GOAL_QUERY_S:.0f} s each: "
          f"{'met' if worst < GOAL_QUERY_S else 'NOT met'})")
    return {"groups": groups, "catalog_rebuild_s": round(rebuild_s, 2),
            "query_s": {n: {k: round(v, 3) for k, v in st.items()} for n, st in stats.items()},
            "slowest": slowest, "slowest_s": round(worst, 3)}


if __name__ == "__main__":
    raise SystemExit(main())
